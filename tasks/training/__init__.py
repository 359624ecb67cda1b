"""Training: the classifier head, full fine-tuning, evaluation on the test split and export of the two stages."""
