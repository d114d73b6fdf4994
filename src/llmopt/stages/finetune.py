"""finetune stage: the one trainer (cross-entropy) on the data stage's splits, best dev checkpoint kept."""

from __future__ import annotations

from typing import Any, Literal

from llmopt.stages.base import BuiltinModel, ModelRef, StageConfig, StageContext, StageRef, StageResult
from llmopt.training.config import TrainConfig


class FinetuneConfig(StageConfig):
    """Fine-tune a local encoder (folder, earlier stage id, or `builtin: minilm`) for classification."""

    type: Literal["finetune"] = "finetune"
    data: StageRef = "data"
    model: ModelRef = BuiltinModel(builtin="minilm")
    train: TrainConfig = TrainConfig()


def run(cfg: FinetuneConfig, ctx: StageContext) -> StageResult:
    """Train `cfg.model` with a new classification head on the data stage's train split, select on dev,
    and save the best model (safetensors + tokenizer, id2label) to artifacts/model."""
    from llmopt.data.artifact import load_data_artifact
    from llmopt.fsutil import atomic_write_jsonl
    from llmopt.models import display_path, load_classifier, load_tokenizer, save_model
    from llmopt.training.checkpoints import last_good_checkpoint
    from llmopt.training.trainer import train_classifier

    data = load_data_artifact(ctx.artifacts_of(cfg.data))
    base = ctx.model_dir(cfg.model)
    tokenizer = load_tokenizer(base)
    model = load_classifier(base, labels=data.labels, allow_pickle=ctx.allow_pickle, ignore_mismatched_sizes=True)
    resume = last_good_checkpoint(ctx.stage_dir / "checkpoints")
    out = train_classifier(
        model, tokenizer,
        train=(data.texts("train"), data.ids(data.train)),
        dev=(data.texts("dev"), data.ids(data.dev)),
        num_labels=len(data.labels), cfg=cfg.train, seed=ctx.seed, work_dir=ctx.stage_dir, resume_from=resume,
    )
    # the best checkpoint is loaded at the end of training; its dev scores are in the history already
    history = out.trainer.state.log_history
    evals = [h for h in history if "eval_loss" in h]
    best_step = out.trainer.state.best_global_step
    dev = next((h for h in evals if h.get("step") == best_step), evals[-1] if evals else {})
    save_model(out.model, tokenizer, ctx.out_dir / "model", inference=out.inference)
    atomic_write_jsonl(ctx.out_dir / "log_history.jsonl", history)
    return StageResult({
        **out.metrics,
        "base_model": display_path(base),
        "labels": data.labels,
        "n_train": len(data.train),
        "n_dev": len(data.dev),
        "dev_accuracy": dev.get("eval_accuracy"),
        "dev_macro_f1": dev.get("eval_macro_f1"),
        "dev_loss": dev.get("eval_loss"),
        "resumed_from": str(resume) if resume else None,
    })


def section(sid: str, m: dict, doc: Any) -> None:
    """What was trained, for how long, the best dev scores and the training curve."""
    from llmopt.report.render import _pct, short_path, training_section

    doc.h(2, f"Fine-tuning ({sid})")
    doc.p(f"Base model: {short_path(m['base_model'])}. {m['n_train']:,} train / {m['n_dev']:,} dev rows. "
          f"Best dev checkpoint: macro-F1 {_pct(m['dev_macro_f1'])}%, accuracy {_pct(m['dev_accuracy'])}%.")
    training_section(sid, m, doc)
