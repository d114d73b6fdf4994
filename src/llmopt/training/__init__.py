"""Trainer building blocks: callbacks, checkpoint discovery, tokenized datasets."""
