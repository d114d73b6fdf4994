"""Knowledge distillation: students built from a teacher, cached teacher logits, a KD Trainer.

Loss (Hinton et al. 2015): alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y),
plus an optional MSE between mapped hidden states (needs the same tokenizer and hidden size).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

_LAYER = re.compile(r"\.layer\.(\d+)\.")


def kd_loss(student: Any, teacher: Any | None, labels: Any | None, temperature: float, alpha: float) -> Any:
    """The distillation loss for one batch; rows labelled -100 (unlabelled transfer text) get only the KD term."""
    import torch
    import torch.nn.functional as F

    loss = student.new_zeros(())
    if teacher is not None and alpha > 0:
        t = temperature
        kl = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher.to(student.dtype) / t, dim=-1),
                      reduction="batchmean", log_target=True)
        loss = loss + alpha * t * t * kl
    w_ce = 1.0 - alpha if teacher is not None else 1.0
    if labels is not None and w_ce > 0 and bool((labels != -100).any()):
        loss = loss + w_ce * F.cross_entropy(student, labels, ignore_index=-100)
    return loss if isinstance(loss, torch.Tensor) else torch.tensor(loss)


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


def teacher_logits(folder: Path, texts: list[str], max_length: int, cache: Path | None, batch_size: int = 64,
                   allow_pickle: bool = False) -> np.ndarray:
    """Class logits of the teacher for every text, computed once and cached as .npy (keyed by content)."""
    key = hashlib.sha256(json.dumps([str(folder), max_length, texts]).encode()).hexdigest()[:16]
    path = Path(cache) / f"teacher_logits-{key}.npy" if cache else None
    if path is not None and path.is_file():
        return np.load(path)
    import torch

    from llmopt.models import load_classifier, load_tokenizer

    tok, model = load_tokenizer(folder), load_classifier(folder, allow_pickle=allow_pickle).eval()
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            ids = order[s : s + batch_size]
            enc = tok([texts[i] for i in ids], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            out[ids] = model(**enc).logits.float().numpy()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, out)
        os.replace(tmp, path)
    return out


def _trainer_class() -> type:
    import torch
    from transformers import Trainer

    class DistillTrainer(Trainer):
        """Trainer whose loss is `kd_loss` against teacher logits carried in the batch."""

        def __init__(self, *a: Any, temperature: float, alpha: float, hidden: tuple | None = None, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.temperature, self.alpha, self.hidden = temperature, alpha, hidden

        def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None):
            teacher = inputs.pop("teacher_logits", None)
            labels = inputs.pop("labels", None)
            out = model(**inputs, output_hidden_states=self.hidden is not None)
            loss = kd_loss(out.logits, teacher, labels, self.temperature, self.alpha)
            if self.hidden is not None and model.training:
                t_model, mapping, weight = self.hidden
                with torch.no_grad():
                    t_hid = t_model(**inputs, output_hidden_states=True).hidden_states
                mask = inputs["attention_mask"].unsqueeze(-1).to(out.logits.dtype)
                for s_i, t_i in enumerate(mapping):  # hidden_states[0] is the embedding output
                    diff = (out.hidden_states[s_i + 1] - t_hid[t_i + 1]) ** 2 * mask
                    loss = loss + weight * diff.sum() / (mask.sum() * diff.shape[-1])
            return (loss, out) if return_outputs else loss

    return DistillTrainer


class _Collator:
    """Pads token features like DataCollatorWithPadding and stacks the cached teacher logits."""

    def __init__(self, tokenizer: Any) -> None:
        from transformers import DataCollatorWithPadding

        self.base = DataCollatorWithPadding(tokenizer)

    def __call__(self, features: list[dict]) -> dict:
        import torch

        logits = [f.pop("teacher_logits") for f in features if "teacher_logits" in f]
        batch = self.base(features)
        if logits:
            batch["teacher_logits"] = torch.tensor(np.asarray(logits, dtype=np.float32))
        return batch


def train_distill(student: Any, tokenizer: Any, train: tuple[list[str], list[int]], logits: np.ndarray | None,
                  dev: tuple[list[str], list[int]], k: int, s: Any, work_dir: Path, resume_from: Path | None,
                  temperature: float = 2.0, alpha: float = 0.5, hidden: tuple | None = None,
                  callbacks: list | None = None, keep_best: bool = True) -> tuple[Any, dict[str, Any]]:
    """Train `student` with the finetune stage's Trainer settings and the KD loss; best dev model loaded.

    keep_best=False keeps the last model instead (gradual pruning: earlier checkpoints are less sparse).
    """
    from transformers import EarlyStoppingCallback

    from llmopt.training.callbacks import ChecksumOnSave, JsonlLogger
    from llmopt.training.classification import compute_metrics, tokenize, training_args

    report_tb = importlib.util.find_spec("tensorboard") is not None
    if report_tb:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(work_dir / "tensorboard")
    cbs: list[Any] = [JsonlLogger(work_dir / "train_log.jsonl"), ChecksumOnSave(), *(callbacks or [])]
    if s.early_stopping_patience and keep_best:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=s.early_stopping_patience))
    args = training_args(s, work_dir / "checkpoints", report_tb)
    args.remove_unused_columns = False  # keep teacher_logits for compute_loss
    args.load_best_model_at_end = keep_best
    train_ds = tokenize(tokenizer, *train, s.max_length)
    if logits is not None:
        train_ds = train_ds.add_column("teacher_logits", [row.tolist() for row in logits])
    trainer = _trainer_class()(
        model=student, args=args, train_dataset=train_ds, eval_dataset=tokenize(tokenizer, *dev, s.max_length),
        processing_class=tokenizer, data_collator=_Collator(tokenizer), compute_metrics=compute_metrics(k),
        callbacks=cbs, temperature=temperature, alpha=alpha if logits is not None else 0.0, hidden=hidden,
    )
    out = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    return trainer, dict(out.metrics)
