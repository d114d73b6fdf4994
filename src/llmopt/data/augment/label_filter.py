"""Label-preservation filter: an augmented row is kept only if a classifier still gives the original label
probability ≥ τ and, optionally, its sentence embedding stays close to the original's (cosine ≥ τ₂)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def model_labels(folder: Path) -> list[str] | None:
    """The label names of a classifier folder (config.json id2label, in id order), or None when absent."""
    from llmopt.fsutil import read_json

    cfg = Path(folder) / "config.json"
    if not cfg.is_file():
        return None
    id2label = read_json(cfg).get("id2label") or {}
    return [id2label[k] for k in sorted(id2label, key=int)] or None


def label_probs(folder: Path, texts: list[str], label_ids: list[int], allow_pickle: bool = False) -> np.ndarray:
    """The probability the classifier in `folder` (PyTorch or ONNX) gives each text's `label_ids` entry."""
    from llmopt.eval.predictors import load_predictor, predict_all

    if not texts:
        return np.zeros(0)
    probs = predict_all(load_predictor(Path(folder), allow_pickle=allow_pickle), texts)
    return probs[np.arange(len(texts)), np.asarray(label_ids)]


def sentence_embeddings(folder: Path, texts: list[str], batch_size: int = 64, max_length: int = 128) -> np.ndarray:
    """Mean-pooled, L2-normalised last hidden states — the sentence embedding of all-MiniLM-L6-v2."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder), use_safetensors=True).eval()
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            enc = tok(texts[s : s + batch_size], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            h = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            v = (h * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[s : s + batch_size] = torch.nn.functional.normalize(v, dim=-1).numpy()
    return out


def cosine_to_source(folder: Path, sources: list[str], variants: list[str]) -> np.ndarray:
    """Cosine of each variant's sentence embedding to its source text's (pairs in order)."""
    if not variants:
        return np.zeros(0)
    uniq = list(dict.fromkeys(sources + variants))
    emb = sentence_embeddings(folder, uniq)
    at = {t: i for i, t in enumerate(uniq)}
    a = emb[[at[t] for t in sources]]
    b = emb[[at[t] for t in variants]]
    return (a * b).sum(1)
