"""Featurizers: the Keras backbones (ResNet, DenseNet, VGG) and featurizing the splits with a feature cache."""
