"""Knowledge distillation building blocks: students built from a teacher, and cached teacher logits.

The loss and the Trainer are llmopt.training's (`train_classifier` with `teacher_logits`).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

_LAYER = re.compile(r"\.layer\.(\d+)\.")
# teacher logits are cached for the whole run (run_dir / RUN_CACHE), keyed by the teacher's files and the texts: a
# second distill, prune or search stage of the same teacher on the same transfer set labels nothing again
RUN_CACHE = Path("cache") / "teacher_logits"


def evenly_spaced(n_layers: int, k: int) -> list[int]:
    """k of n layer indices, first and last included (6 → 3: [0, 2, 5])."""
    if k >= n_layers:
        return list(range(n_layers))
    return sorted({int(round(v)) for v in np.linspace(0, n_layers - 1, k)})


def student_from_teacher(teacher: Any, layers: list[int]) -> Any:
    """A shallower copy of `teacher`: embeddings, pooler and head copied, encoder layer i = teacher layer layers[i]."""
    cfg = copy.deepcopy(teacher.config)
    n = cfg.num_hidden_layers
    bad = [i for i in layers if not 0 <= i < n]
    if bad or len(set(layers)) != len(layers) or not layers:
        from llmopt.errors import RecipeError

        raise RecipeError(f"distill layers {layers}: give distinct teacher layer indices in 0..{n - 1}.")
    cfg.num_hidden_layers = len(layers)
    student = type(teacher)(cfg)
    new_of = {old: new for new, old in enumerate(layers)}
    state = {}
    for key, value in teacher.state_dict().items():
        m = _LAYER.search(key)
        if m is None:
            state[key] = value.clone()
        elif int(m.group(1)) in new_of:
            state[key[: m.start()] + f".layer.{new_of[int(m.group(1))]}." + key[m.end():]] = value.clone()
    student.load_state_dict(state, strict=True)
    return student


def small_student(teacher_config: Any, shape: dict[str, int], labels: list[str]) -> Any:
    """A randomly initialised model of the teacher's family with fewer/narrower layers."""
    from transformers import AutoModelForSequenceClassification

    cfg = copy.deepcopy(teacher_config)
    for key, value in shape.items():
        setattr(cfg, key, value)
    cfg.num_labels = len(labels)
    cfg.id2label, cfg.label2id = dict(enumerate(labels)), {lab: i for i, lab in enumerate(labels)}
    return AutoModelForSequenceClassification.from_config(cfg)


def narrow_student(teacher: Any, layers: list[int], hidden_size: int | None = None,
                   intermediate_size: int | None = None) -> Any:
    """A shallower and narrower copy of a BERT-family `teacher` initialised by weight selection (Xu et al. 2023):
    layer i starts from teacher layer layers[i] with every matrix, bias and LayerNorm cut to the student's widths
    (the first hidden_size residual dimensions everywhere — the same ones in every layer, so the residual stream
    stays aligned — the first heads, the first FFN neurons). Heads keep the teacher's size: hidden 256 of a
    384-wide, 12-head teacher is 8 heads of 32. Embeddings and the classifier are cut the same way."""
    from llmopt.errors import RecipeError

    t_cfg = teacher.config
    head = t_cfg.hidden_size // t_cfg.num_attention_heads
    hidden = hidden_size or t_cfg.hidden_size
    if hidden > t_cfg.hidden_size or hidden % head:
        raise RecipeError(f"a student cut from the teacher needs hidden_size ≤ {t_cfg.hidden_size} and a multiple of "
                          f"the teacher's head size {head} (got {hidden}).")
    student = student_from_teacher(teacher, layers)
    if hidden == t_cfg.hidden_size and intermediate_size in (None, t_cfg.intermediate_size):
        return student
    cfg = copy.deepcopy(student.config)
    cfg.hidden_size, cfg.num_attention_heads = hidden, hidden // head
    cfg.intermediate_size = intermediate_size or int(round(t_cfg.intermediate_size * hidden / t_cfg.hidden_size))
    narrow = type(teacher)(cfg)
    big = student.state_dict()
    state = {}
    for key, value in narrow.state_dict().items():
        src = big[key]
        if src.dim() != value.dim():
            raise RecipeError(f"cannot cut teacher tensor {key} {tuple(src.shape)} to {tuple(value.shape)}.")
        state[key] = src[tuple(slice(0, n) for n in value.shape)].clone()
    narrow.load_state_dict(state, strict=True)
    return narrow


def folder_digest(folder: Path) -> str:
    """sha256 over a model folder's files (names and bytes): the same teacher anywhere, and a retrained teacher in
    the same place, are told apart by content, not by path."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def teacher_logits(folder: Path, texts: list[str], *, max_length: int | str, truncation: str = "right",
                   cache: Path | None = None, batch_size: int = 64, allow_pickle: bool = False,
                   runtime: str = "auto") -> np.ndarray:
    """Class logits of the teacher for every text, cached per text in `cache` (stages pass their run's RUN_CACHE):
    one store per teacher (its files, by content) and length settings, so a stage whose transfer set overlaps an
    earlier one's (a larger augment stage, a search candidate's subset) labels only the texts not labelled yet.

    max_length: auto resolves on these texts' lengths, as the trainer does for the student. runtime: `auto` runs
    the teacher's fp32 ONNX export in ONNX Runtime (its fused BERT graph labels ~1.7x faster than PyTorch on 2
    CPU threads, logits equal to ~1e-5) and falls back to PyTorch when the export fails; `torch` or `onnx` force
    one."""
    from transformers import AutoConfig

    from llmopt.models import load_tokenizer
    from llmopt.training.tokenize import max_length_for

    digest = folder_digest(folder)
    legacy = (Path(cache) / "teacher_logits-{}.npy".format(hashlib.sha256(json.dumps(
        [digest, max_length, truncation, texts]).encode()).hexdigest()[:16])) if cache else None
    tok = load_tokenizer(folder)
    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    max_length = max_length_for(max_length, tok, texts, config)
    store = LogitStore(Path(cache), [digest, max_length, truncation]) if cache else None
    if legacy is not None and legacy.is_file():  # a whole-list cache file from before the per-text store
        store.add(texts, np.load(legacy, allow_pickle=False))
        legacy.unlink()
    out = np.zeros((len(texts), config.num_labels), dtype=np.float32)
    todo = store.lookup(texts, out) if store is not None else list(range(len(texts)))
    if not todo:
        return out
    order = sorted(todo, key=lambda i: len(texts[i]))  # similar lengths batch together: less padding
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if runtime == "torch" or not _onnx_logits(folder, texts, batches, out, max_length, truncation, allow_pickle,
                                              required=runtime == "onnx"):
        _torch_logits(folder, texts, batches, out, tok, max_length, truncation, allow_pickle)
    if store is not None:
        store.add([texts[i] for i in todo], out[todo])
    return out


class LogitStore:
    """Teacher logits by text for one teacher and length setting: `teacher_logits-<key>.npz` in `folder` holding
    sha256 digests of the texts (16 bytes each) and their logits, rewritten atomically as texts are added."""

    def __init__(self, folder: Path, key: list) -> None:
        self.path = Path(folder) / f"teacher_logits-{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]}.npz"

    @staticmethod
    def _digests(texts: list[str]) -> list[bytes]:
        return [hashlib.sha256(t.encode("utf-8")).digest()[:16] for t in texts]

    def _read(self) -> tuple[np.ndarray, np.ndarray] | None:
        if not self.path.is_file():
            return None
        with np.load(self.path, allow_pickle=False) as z:
            return z["digests"], z["logits"]

    def lookup(self, texts: list[str], out: np.ndarray) -> list[int]:
        """Fill out[i] with the stored logits of texts[i]; the indices of the texts not in the store."""
        stored = self._read()
        if stored is None:
            return list(range(len(texts)))
        digests, logits = stored
        index = {d.tobytes(): i for i, d in enumerate(digests)}
        rows = [index.get(d) for d in self._digests(texts)]
        hit = [i for i, r in enumerate(rows) if r is not None]
        if hit:
            out[hit] = logits[[rows[i] for i in hit]]
        return [i for i, r in enumerate(rows) if r is None]

    def add(self, texts: list[str], logits: np.ndarray) -> None:
        new = np.frombuffer(b"".join(self._digests(texts)), dtype=np.uint8).reshape(len(texts), 16)
        stored = self._read()
        if stored is not None:
            keep = ~np.isin(new.view("V16").ravel(), stored[0].view("V16").ravel())
            new, logits = np.concatenate([stored[0], new[keep]]), np.concatenate([stored[1], logits[keep]])
        from llmopt.fsutil import atomic_write_bytes

        buf = io.BytesIO()
        np.savez(buf, digests=new, logits=logits.astype(np.float32))
        atomic_write_bytes(self.path, buf.getvalue())


def _torch_logits(folder: Path, texts: list[str], batches: list[list[int]], out: np.ndarray, tok: Any,
                  max_length: int, truncation: str, allow_pickle: bool) -> None:
    import torch

    from llmopt.models import load_classifier
    from llmopt.training.tokenize import encode

    model = load_classifier(folder, allow_pickle=allow_pickle).eval()
    with torch.inference_mode():
        for ids in batches:
            enc = tok.pad(encode(tok, [texts[i] for i in ids], max_length, truncation), return_tensors="pt")
            out[ids] = model(**enc).logits.float().numpy()


def _onnx_logits(folder: Path, texts: list[str], batches: list[list[int]], out: np.ndarray, max_length: int,
                 truncation: str, allow_pickle: bool, required: bool) -> bool:
    """Fill `out` from the teacher's fp32 ONNX export (a temporary folder); False if it cannot be exported."""
    import tempfile

    import torch

    from llmopt.compression.onnx_export import export_variants
    from llmopt.eval.predictors import OrtClassifier

    with tempfile.TemporaryDirectory(prefix="llmopt-teacher-onnx-") as tmp:
        try:
            built = export_variants(folder, Path(tmp), ["fp32"], max_length=max_length, truncation=truncation,
                                    allow_pickle=allow_pickle)["fp32"]
        except Exception as e:  # noqa: BLE001 - an architecture torch.onnx cannot export: PyTorch labels instead
            built = f"{type(e).__name__}: {e}"
        if isinstance(built, str):
            if required:
                from llmopt.errors import ModelError

                raise ModelError(f"{folder}: the teacher's ONNX export failed ({built}); use runtime torch.")
            return False
        ort = OrtClassifier(built, max_length, torch.get_num_threads(), truncation)
        for ids in batches:
            out[ids] = ort.logits([texts[i] for i in ids])
    return True


def read_transfer_set(folder: Path, stage: str, source: str) -> list[str]:
    """The texts of an augment stage's transfer set (artifacts/transfer.jsonl): the teacher labels them."""
    from llmopt.fsutil import read_jsonl

    path = Path(folder) / "transfer.jsonl"
    if not path.is_file():
        from llmopt.errors import RecipeError

        raise RecipeError(f"distill '{stage}': transfer: '{source}' has no transfer.jsonl ({path}); name an augment "
                          "stage there.")
    return [r["text"] for r in read_jsonl(path)]


def read_transfer_texts(path: Path) -> list[str]:
    """Unlabelled transfer text: a JSONL file with a `text` field, or one text per line."""
    from llmopt.fsutil import read_jsonl

    path = Path(path)
    if path.suffix == ".jsonl":
        return [r["text"] for r in read_jsonl(path)]
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def gather_transfer_texts(cfg: Any, ctx: Any, unlabelled: list[str]) -> list[str]:
    """The unlabelled part of a distill/search stage's transfer set: the data stage's unlabelled texts (when
    `cfg.unlabelled`), `cfg.extra_texts` files and `cfg.transfer`'s augment variants, sampled (seeded) down to
    `cfg.max_transfer_rows`. The teacher labels them."""
    import random

    extra = (list(unlabelled) if cfg.unlabelled else []) + [t for p in cfg.extra_texts
                                                            for t in read_transfer_texts(Path(p))]
    if cfg.transfer is not None:
        extra += read_transfer_set(ctx.artifacts_of(cfg.transfer), cfg.id, cfg.transfer)
    if cfg.max_transfer_rows is not None and len(extra) > cfg.max_transfer_rows:
        extra = random.Random(ctx.seed).sample(extra, cfg.max_transfer_rows)
    return extra
