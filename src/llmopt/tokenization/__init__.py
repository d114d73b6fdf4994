"""Subword tokenizers: train (BPE, Unigram, WordPiece), judge against a base tokenizer, extend a base vocabulary."""
