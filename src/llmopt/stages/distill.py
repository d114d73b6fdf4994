"""distill stage: a smaller student trained on the teacher's cached logits (plus labels) by the one trainer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from llmopt.stages.base import (
    InputFile, ModelRef, StageConfig, StageContext, StageRef, StageResult, Strict, model_ref_str,
)
from llmopt.training.config import KDConfig, TrainConfig


class StudentShape(Strict):
    """A randomly initialised student of the teacher's family (same tokenizer unless `student_model`)."""

    num_hidden_layers: int = Field(ge=1)
    hidden_size: int | None = Field(None, ge=8)
    num_attention_heads: int | None = Field(None, ge=1)
    intermediate_size: int | None = Field(None, ge=8)


class DistillConfig(StageConfig):
    """Distil the teacher (earlier stage id or folder) into a student: teacher layers, k layers, a shape, or a model."""

    type: Literal["distill"] = "distill"
    data: StageRef = Field("data", description="data stage (train split = transfer set)")
    teacher: ModelRef
    layers: list[int] | None = Field(None, description="copy these teacher layers (DistilBERT-style init)")
    num_layers: int | None = Field(None, ge=1, description="copy k evenly spaced teacher layers")
    student_config: StudentShape | None = Field(None, description="random init with this shape")
    student_model: ModelRef | None = Field(None, description="another model as student (its own tokenizer)")
    hidden_loss_weight: float = Field(0.0, ge=0, description="MSE on mapped hidden states (teacher-layer students)")
    extra_texts: list[InputFile] = Field([], description="JSONL (text) or .txt files of unlabelled transfer text")
    transfer: StageRef | None = Field(None, description="an augment stage: its variants join the transfer set, "
                                      "teacher-labelled")
    kd: KDConfig = KDConfig()
    train: TrainConfig = TrainConfig(learning_rate=1e-4)

    @model_validator(mode="after")
    def _one_student(self) -> "DistillConfig":
        given = [k for k in ("layers", "num_layers", "student_config", "student_model") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of layers, num_layers, student_config, student_model"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self


def run(cfg: DistillConfig, ctx: StageContext) -> StageResult:
    """Build the student, label the transfer set with the teacher once (cached), train the student with the KD
    loss, and save it to artifacts/model."""
    from pathlib import Path

    from llmopt.compression.distillation import (
        evenly_spaced, read_transfer_set, read_transfer_texts, small_student, student_from_teacher, teacher_logits,
    )
    from llmopt.data.artifact import load_data_artifact
    from llmopt.errors import ModelError, RecipeError
    from llmopt.fsutil import atomic_write_jsonl
    from llmopt.models import display_path, load_classifier, load_tokenizer, read_inference_settings, save_model
    from llmopt.training.checkpoints import last_good_checkpoint
    from llmopt.training.config import with_model_settings
    from llmopt.training.trainer import train_classifier

    data = load_data_artifact(ctx.artifacts_of(cfg.data))
    t_dir = ctx.model_dir(cfg.teacher)
    train_cfg = with_model_settings(cfg.train, read_inference_settings(t_dir))  # unset: as the teacher was trained
    teacher = load_classifier(t_dir, allow_pickle=ctx.allow_pickle)
    teacher_params = int(sum(p.numel() for p in teacher.parameters()))
    t_labels = list(teacher.config.id2label.values())
    if t_labels != data.labels:
        raise ModelError(f"distill '{cfg.id}': teacher {t_dir} predicts {t_labels}, the data has labels "
                         f"{data.labels}. Distil a teacher fine-tuned on this data.")
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

    texts, labels = data.texts("train"), data.ids(data.train)
    extra = [t for p in cfg.extra_texts for t in read_transfer_texts(Path(p))]
    if cfg.transfer is not None:
        extra += read_transfer_set(ctx.artifacts_of(cfg.transfer), cfg.id, cfg.transfer)
    all_texts, all_labels = texts + extra, labels + [-100] * len(extra)  # -100: no label, KD term only
    logits = teacher_logits(t_dir, all_texts, max_length=train_cfg.max_length, truncation=train_cfg.truncation,
                            cache=ctx.stage_dir / "cache", allow_pickle=ctx.allow_pickle)
    teacher_train_acc = float((logits[: len(texts)].argmax(1) == labels).mean())
    hidden = None
    if cfg.hidden_loss_weight > 0:
        if layers is None:
            raise RecipeError(f"distill '{cfg.id}': hidden_loss_weight needs a student made of teacher layers "
                              "(layers: or num_layers:), so hidden states line up. Set it to 0.")
        hidden = (teacher.eval(), layers, cfg.hidden_loss_weight)
    else:
        del teacher
    out = train_classifier(
        student, tokenizer, train=(all_texts, all_labels), dev=(data.texts("dev"), data.ids(data.dev)),
        num_labels=len(data.labels), cfg=train_cfg, seed=ctx.seed, work_dir=ctx.stage_dir,
        resume_from=last_good_checkpoint(ctx.stage_dir / "checkpoints"), teacher_logits=logits, kd=cfg.kd,
        hidden=hidden,
    )
    dev = out.trainer.evaluate()
    save_model(out.model, tokenizer, ctx.out_dir / "model", inference=out.inference)
    atomic_write_jsonl(ctx.out_dir / "log_history.jsonl", out.trainer.state.log_history)
    return StageResult({
        **out.metrics,
        "parent": model_ref_str(cfg.teacher),
        "teacher": display_path(t_dir),
        "student": ("model " + display_path(ctx.model_dir(cfg.student_model)) if cfg.student_model
                    else "random init " + str(cfg.student_config.model_dump(exclude_none=True)) if cfg.student_config
                    else f"teacher layers {layers}"),
        "student_layers": layers,
        "student_params": int(sum(p.numel() for p in out.model.parameters())),
        "teacher_params": teacher_params,
        "transfer_rows": len(all_texts),
        "unlabelled_rows": len(extra),
        "transfer_stage": cfg.transfer,
        "teacher_train_accuracy": teacher_train_acc,
        "dev_accuracy": dev.get("eval_accuracy"),
        "dev_macro_f1": dev.get("eval_macro_f1"),
        "dev_loss": dev.get("eval_loss"),
    })


def section(sid: str, m: dict, doc: Any) -> None:
    """Teacher, student, transfer set, dev scores and the training curve."""
    from llmopt.report.render import _num, _pct, short_path, training_section

    doc.h(2, f"Distillation ({sid})")
    kd = m.get("kd") or {}
    layers = m.get("student_layers")
    student = (f"a {len(layers)}-layer student made of the teacher's layers {', '.join(map(str, layers))}" if layers
               else short_path(m["student"]))
    labelled = m["transfer_rows"] - m["unlabelled_rows"]
    doc.p(f"Teacher → student: {short_path(m.get('parent') or m['teacher'])} ({m['teacher_params']:,} parameters) → "
          f"{student} ({m['student_params']:,} parameters, {m['teacher_params'] / max(m['student_params'], 1):.1f}× "
          "fewer). Transfer set: " + (f"{m['transfer_rows']:,} texts — the {labelled:,} labelled train rows plus "
                                      f"{m['unlabelled_rows']:,} unlabelled or augmented texts"
                                      + (f" (augment stage '{m['transfer_stage']}')" if m.get("transfer_stage") else "")
                                      if m["unlabelled_rows"] else f"the {labelled:,} labelled train rows")
          + "; the teacher's logits on them are the soft targets (it gets "
          f"{_pct(m['teacher_train_accuracy'])}% of the labelled train rows right). Loss: "
          f"{_num(kd.get('alpha'), '{:g}')}·T²·KL at T = {_num(kd.get('temperature'), '{:g}')} plus "
          f"{_num(1 - kd['alpha'] if kd else None, '{:g}')}·cross-entropy. "
          f"Dev: accuracy {_pct(m['dev_accuracy'])}%, macro-F1 {_pct(m['dev_macro_f1'])}%.")
    training_section(sid, m, doc)
