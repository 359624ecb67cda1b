"""Data intake: scan, validate (Great Expectations) and split a dataset; watch a data folder for changes."""
