"""A predictor turns raw texts into class probabilities: the unit the speed harness times."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Predictor(Protocol):
    runtime: str
    params: int

    def predict_proba(self, texts: list[str]) -> np.ndarray: ...


_ENCODING_FIELD = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


class Encoder:
    """Tokenize to int64 arrays: the ids `tokenizer(texts, truncation, max_length, padding=True)` gives, or with
    truncation="head_tail" the ids training saw (`llmopt.training.tokenize.encode`), padded on the right.

    With a fast (Rust) tokenizer that pads and truncates on the right, the `tokenizers` backend is called
    directly: the same ids without transformers' per-call Python overhead, which at batch 1 on a small
    int8 model is a tenth of the latency. Any other tokenizer goes through the usual call.
    """

    def __init__(self, tokenizer: Any, max_length: int, truncation: str = "right") -> None:
        self.tokenizer, self.max_length, self.truncation, self.backend = tokenizer, max_length, truncation, None
        self.names = [n for n in tokenizer.model_input_names if n in _ENCODING_FIELD]
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if (backend is not None and tokenizer.pad_token_id is not None and tokenizer.padding_side == "right"
                and tokenizer.truncation_side == "right"):
            from tokenizers import Tokenizer

            self.backend = Tokenizer.from_str(backend.to_str())  # a copy: the shared one keeps its settings
            if truncation == "right":
                self.backend.enable_truncation(max_length)
                self.backend.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token,
                                            pad_type_id=tokenizer.pad_token_type_id)
            else:  # whole texts: head_tail cuts them below
                self.backend.no_truncation()
                self.backend.no_padding()

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        if self.truncation != "right":
            return self._head_tail(texts)
        if self.backend is None:
            enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="np")
            return {n: np.asarray(enc[n], dtype=np.int64) for n in enc}
        encs = [self.backend.encode(texts[0])] if len(texts) == 1 else self.backend.encode_batch(texts)
        return {n: np.array([getattr(e, _ENCODING_FIELD[n]) for e in encs], dtype=np.int64) for n in self.names}

    def _head_tail(self, texts: list[str]) -> dict[str, np.ndarray]:
        from llmopt.training.tokenize import encode, head_tail

        if self.backend is None:
            enc = self.tokenizer.pad(encode(self.tokenizer, texts, self.max_length, "head_tail"), return_tensors="np")
            return {n: np.asarray(enc[n], dtype=np.int64) for n in enc}
        encs = self.backend.encode_batch(texts)
        pad = {"input_ids": self.tokenizer.pad_token_id, "token_type_ids": self.tokenizer.pad_token_type_id,
               "attention_mask": 0}
        out = {}
        for n in self.names:
            seqs = [head_tail(getattr(e, _ENCODING_FIELD[n]), self.max_length) for e in encs]
            arr = np.full((len(seqs), max(map(len, seqs), default=0)), pad[n], dtype=np.int64)
            for i, seq in enumerate(seqs):
                arr[i, : len(seq)] = seq
            out[n] = arr
        return out


class HFClassifier:
    """A Hugging Face sequence classifier in PyTorch eager mode, tokenization included."""

    runtime = "pytorch-eager-fp32"

    def __init__(self, folder: Path, max_length: int | None = None, allow_pickle: bool = False,
                 truncation: str | None = None) -> None:
        import torch

        from llmopt.models import inference_settings, load_classifier, load_tokenizer

        self.torch = torch
        self.tokenizer = load_tokenizer(folder)
        self.model = load_classifier(folder, allow_pickle=allow_pickle).eval()
        # None: as the model was trained (its llmopt_inference.json), else 128 tokens cut on the right
        self.max_length, self.truncation = inference_settings(folder, max_length, truncation)
        self.encode = Encoder(self.tokenizer, self.max_length, self.truncation)
        self.params = int(sum(p.numel() for p in self.model.parameters()))

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        enc = {k: self.torch.from_numpy(v) for k, v in self.encode(texts).items()}
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


class OrtClassifier:
    """An exported classifier (model.onnx) in ONNX Runtime on CPU, tokenization included."""

    def __init__(self, folder: Path, max_length: int | None = None, threads: int = 1,
                 truncation: str | None = None) -> None:
        import onnxruntime as ort

        from llmopt.compression.onnx_export import check_onnx_dir, onnx_params, read_meta
        from llmopt.models import inference_settings, load_tokenizer

        folder = check_onnx_dir(Path(folder))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # the harness's thread count, like torch.set_num_threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer = load_tokenizer(folder)
        self.max_length, self.truncation = inference_settings(folder, max_length, truncation)
        self.encode = Encoder(self.tokenizer, self.max_length, self.truncation)
        meta = read_meta(folder)
        self.runtime = f"onnxruntime-{meta.get('scheme', 'onnx')}"
        self.params = int(meta.get("params") or onnx_params(folder / "model.onnx"))

    def logits(self, texts: list[str]) -> np.ndarray:
        enc = self.encode(texts)
        return self.session.run(["logits"], {n: enc[n] for n in self.inputs})[0]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        z = self.logits(texts).astype(np.float64)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


def load_predictor(
    folder: Path, max_length: int | None = None, threads: int = 1, allow_pickle: bool = False,
    truncation: str | None = None,
) -> "HFClassifier | OrtClassifier":
    """OrtClassifier for a folder with model.onnx, else HFClassifier (PyTorch eager). max_length / truncation
    None: the model's own training settings (llmopt_inference.json), else 128 tokens cut on the right."""
    from llmopt.compression.onnx_export import is_onnx_dir

    if is_onnx_dir(folder):
        return OrtClassifier(folder, max_length, threads, truncation)
    return HFClassifier(folder, max_length, allow_pickle, truncation)
