"""Typed choices for training a tokenizer (pydantic only, so the stage config can import it)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from llmopt.stages.base import Strict

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BYTE_ALPHABET = 256  # byte_level's alphabet and byte_fallback's <0x00>..<0xFF> pieces


class TokenizerTrainConfig(Strict):
    """Algorithm, size and the explicit text handling: normalization, pre-tokenization, bytes."""

    algorithm: Literal["bpe", "unigram", "wordpiece"] = "bpe"
    vocab_size: int = Field(8000, ge=1, description="vocabulary size, special tokens included")
    min_frequency: int = Field(2, ge=1, description="a merge / piece must occur this often (bpe, wordpiece)")
    special_tokens: list[str] = Field(SPECIAL_TOKENS, min_length=1, description="the first one is padding; "
                                      "[UNK]/<unk> is the unknown token; [CLS]+[SEP] wrap each encoded text")
    nfkc: bool = Field(True, description="Unicode NFKC normalization (ﬁ → fi, full-width → ASCII)")
    lowercase: bool = False
    split_punctuation: bool = Field(True, description="every punctuation character is its own pre-token")
    split_digits: bool = Field(True, description="every digit is its own pre-token (numbers never merge)")
    bytes: Literal["none", "byte_fallback", "byte_level"] = Field(
        "byte_fallback", description="unseen characters: [UNK] (none), <0xNN> byte pieces (byte_fallback: bpe, "
        "unigram) or a byte-level alphabet (byte_level, GPT-2 style: bpe, unigram)")

    @model_validator(mode="after")
    def _fits(self) -> "TokenizerTrainConfig":
        if self.algorithm == "wordpiece" and self.bytes != "none":
            raise ValueError(f"bytes: '{self.bytes}' is not available for wordpiece (its model has no byte pieces); "
                             "use bytes: none, or algorithm: bpe / unigram")
        if self.bytes == "none" and not self.unk_token:
            raise ValueError("special_tokens: give an unknown token ([UNK] or <unk>) when bytes is 'none'")
        floor = BYTE_ALPHABET + len(self.special_tokens)
        if self.bytes != "none" and self.vocab_size < floor:
            raise ValueError(f"vocab_size: {self.vocab_size} is smaller than the {BYTE_ALPHABET}-byte alphabet plus "
                             f"{len(self.special_tokens)} special tokens; give at least {floor}")
        return self

    @property
    def unk_token(self) -> str | None:
        return next((t for t in self.special_tokens if t in ("[UNK]", "<unk>")), None)
