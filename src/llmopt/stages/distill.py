"""distill stage: a smaller student trained on the teacher's cached logits (plus labels) with the HF Trainer."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from llmopt.stages.base import StageConfig, StageContext, StageResult, Strict


class StudentShape(Strict):
    """A randomly initialised student of the teacher's family (same tokenizer unless `student_model`)."""

    num_hidden_layers: int = Field(ge=1)
    hidden_size: int | None = Field(None, ge=8)
    num_attention_heads: int | None = Field(None, ge=1)
    intermediate_size: int | None = Field(None, ge=8)


class KDTraining(StageConfig):
    """Trainer settings shared by the stages that train a compressed model (as in finetune) plus the KD loss."""

    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the KD term; 1 - alpha on cross-entropy")
    learning_rate: float = Field(1e-4, gt=0)
    epochs: float = Field(3, gt=0)
    max_steps: int = -1
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    scheduler: Literal["linear", "cosine"] = "linear"
    weight_decay: float = Field(0.01, ge=0)
    early_stopping_patience: int | None = Field(2, ge=1)
    metric_for_best: Literal["macro_f1", "accuracy", "loss"] = "macro_f1"
    max_length: int = Field(128, ge=8)
    save_total_limit: int = Field(2, ge=1)
    group_by_length: bool = True
    logging_steps: int = Field(10, ge=1)

    def train_settings(self, seed: int):  # -> TrainSettings (imported lazily: it pulls numpy)
        from llmopt.training.classification import TrainSettings

        return TrainSettings(**{f: getattr(self, f) for f in TrainSettings.__dataclass_fields__ if f != "seed"},
                             seed=seed)


class DistillConfig(KDTraining):
    """Distil the teacher (earlier stage id or folder) into a student: teacher layers, k layers, a shape, or a model."""

    type: Literal["distill"] = "distill"
    data: str = Field("data", description="id of the data stage (train split = transfer set)")
    teacher: str = Field(description="earlier stage id or model folder")
    layers: list[int] | None = Field(None, description="copy these teacher layers (DistilBERT-style init)")
    num_layers: int | None = Field(None, ge=1, description="copy k evenly spaced teacher layers")
    student_config: StudentShape | None = Field(None, description="random init with this shape")
    student_model: str | None = Field(None, description="another model folder/stage as student (own tokenizer)")
    hidden_loss_weight: float = Field(0.0, ge=0, description="MSE on mapped hidden states (teacher-layer students)")
    extra_texts: list[str] = Field([], description="JSONL (text) or .txt files of unlabelled transfer text")
    augment_copies: int = Field(0, ge=0, description="word-dropout/swap copies of each train text, teacher-labelled")

    @model_validator(mode="after")
    def _one_student(self) -> "DistillConfig":
        given = [k for k in ("layers", "num_layers", "student_config", "student_model") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of layers, num_layers, student_config, student_model"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self

    def model_refs(self) -> list[str]:
        return [self.teacher] + ([self.student_model] if self.student_model else [])

    def check_paths(self) -> str | None:
        missing = [p for p in self.extra_texts if not Path(p).is_file()]
        return f"extra_texts file '{missing[0]}' not found." if missing else None


def augment(text: str, rng: random.Random) -> str:
    """Drop ~10% of words and swap one neighbouring pair: a cheap, label-agnostic variant for the teacher to label."""
    words = [w for w in text.split() if rng.random() > 0.1] or text.split()
    if len(words) > 2:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def read_texts(path: Path) -> list[str]:
    from llmopt.fsutil import read_jsonl

    if path.suffix == ".jsonl":
        return [r["text"] for r in read_jsonl(path)]
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run(cfg: DistillConfig, ctx: StageContext) -> StageResult:
    from llmopt.compression.distillation import (
        evenly_spaced, small_student, student_from_teacher, teacher_logits, train_distill,
    )
    from llmopt.data.artifact import load_data_artifact
    from llmopt.fsutil import atomic_write_jsonl
    from llmopt.models import load_classifier, load_tokenizer, save_model
    from llmopt.training.checkpoints import last_good_checkpoint

    data = load_data_artifact(ctx.artifacts_of(cfg.data))
    t_dir = ctx.model_dir(cfg.teacher)
    teacher = load_classifier(t_dir, allow_pickle=ctx.allow_pickle)
    teacher_params = int(sum(p.numel() for p in teacher.parameters()))
    if list(teacher.config.id2label.values()) != data.labels:
        from llmopt.errors import ModelError

        raise ModelError(f"distill '{cfg.id}': teacher {t_dir} predicts {list(teacher.config.id2label.values())}, "
                         f"the data has labels {data.labels}. Distil a teacher fine-tuned on this data.")
    tokenizer, layers = load_tokenizer(t_dir), None
    if cfg.student_model:
        s_dir = ctx.model_dir(cfg.student_model)
        student = load_classifier(s_dir, labels=data.labels, allow_pickle=ctx.allow_pickle, ignore_mismatched_sizes=True)
        tokenizer = load_tokenizer(s_dir)
    elif cfg.student_config:
        student = small_student(teacher.config, cfg.student_config.model_dump(exclude_none=True), data.labels)
    else:
        layers = cfg.layers or evenly_spaced(teacher.config.num_hidden_layers, cfg.num_layers)
        student = student_from_teacher(teacher, layers)

    rng = random.Random(ctx.seed)
    texts = [r["text"] for r in data.train]
    labels = data.ids(data.train)
    extra = [t for p in cfg.extra_texts for t in read_texts(Path(p))]
    extra += [augment(t, rng) for _ in range(cfg.augment_copies) for t in texts]
    all_texts, all_labels = texts + extra, labels + [-100] * len(extra)  # -100: no label, KD term only
    logits = teacher_logits(t_dir, all_texts, cfg.max_length, ctx.stage_dir / "cache", allow_pickle=ctx.allow_pickle)
    teacher_train_acc = float((logits[: len(texts)].argmax(1) == labels).mean())
    hidden = None
    if cfg.hidden_loss_weight > 0:
        if layers is None or cfg.student_model:
            from llmopt.errors import RecipeError

            raise RecipeError(f"distill '{cfg.id}': hidden_loss_weight needs a student made of teacher layers "
                              "(layers: or num_layers:), so hidden states line up. Set it to 0.")
        hidden = (teacher.eval(), layers, cfg.hidden_loss_weight)
    else:
        del teacher
    settings = cfg.train_settings(ctx.seed)
    trainer, train_metrics = train_distill(
        student, tokenizer, (all_texts, all_labels), logits,
        ([r["text"] for r in data.dev], data.ids(data.dev)), len(data.labels), settings, ctx.stage_dir,
        last_good_checkpoint(ctx.stage_dir / "checkpoints"), cfg.temperature, cfg.alpha, hidden,
    )
    dev = trainer.evaluate()
    model = trainer.model
    save_model(model, tokenizer, ctx.out_dir / "model")
    history = trainer.state.log_history
    atomic_write_jsonl(ctx.out_dir / "log_history.jsonl", history)
    return StageResult({
        "parent": cfg.teacher,
        "teacher": str(t_dir),
        "student_layers": layers,
        "student_params": int(sum(p.numel() for p in model.parameters())),
        "teacher_params": teacher_params,
        "transfer_rows": len(all_texts),
        "unlabelled_rows": len(extra),
        "teacher_train_accuracy": teacher_train_acc,
        "temperature": cfg.temperature,
        "alpha": cfg.alpha,
        "dev_accuracy": dev.get("eval_accuracy"),
        "dev_macro_f1": dev.get("eval_macro_f1"),
        "dev_loss": dev.get("eval_loss"),
        "global_steps": trainer.state.global_step,
        "epochs_run": max((h.get("epoch") or 0 for h in history), default=0),
        "train_runtime_s": train_metrics.get("train_runtime"),
        "train_samples_per_second": train_metrics.get("train_samples_per_second"),
        "history": history,
    })
