"""A predictor turns raw texts into class probabilities: the unit the speed harness times."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class Predictor(Protocol):
    runtime: str
    params: int

    def predict_proba(self, texts: list[str]) -> np.ndarray: ...


class HFClassifier:
    """A Hugging Face sequence classifier in PyTorch eager mode, tokenization included."""

    runtime = "pytorch-eager-fp32"

    def __init__(self, folder: Path, max_length: int = 128) -> None:
        import torch

        from llmopt.models import load_classifier, load_tokenizer

        self.torch = torch
        self.tokenizer = load_tokenizer(folder)
        self.model = load_classifier(folder).eval()
        self.max_length = max_length
        self.params = int(sum(p.numel() for p in self.model.parameters()))
        self.id2label = {int(k): v for k, v in self.model.config.id2label.items()}

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        with self.torch.inference_mode():
            logits = self.model(**enc).logits
        return self.torch.softmax(logits.float(), dim=-1).numpy()


def predict_all(pred: Predictor, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Probabilities for every text, in input order; batches sorted by length to save padding."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[np.ndarray] = [None] * len(texts)  # type: ignore[list-item]
    for s in range(0, len(order), batch_size):
        ids = order[s : s + batch_size]
        probs = pred.predict_proba([texts[i] for i in ids])
        for i, p in zip(ids, probs):
            out[i] = p
    return np.stack(out)
