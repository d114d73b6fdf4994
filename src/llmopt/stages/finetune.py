"""finetune stage: Hugging Face Trainer on the data stage's splits, best dev checkpoint kept."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmopt.stages.base import StageConfig, StageContext, StageResult, Strict


class BuiltinModel(Strict):
    builtin: Literal["minilm"]


class FinetuneConfig(StageConfig):
    """Fine-tune a local encoder (folder, earlier stage id, or `builtin: minilm`) for classification."""

    type: Literal["finetune"] = "finetune"
    data: str = Field("data", description="id of the data stage")
    model: BuiltinModel | str = BuiltinModel(builtin="minilm")
    task: Literal["classification"] = "classification"
    learning_rate: float = Field(2e-5, gt=0)
    epochs: float = Field(3, gt=0)
    max_steps: int = Field(-1, description="stop after this many steps (-1: use epochs)")
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    scheduler: Literal["linear", "cosine"] = "linear"
    weight_decay: float = Field(0.01, ge=0)
    early_stopping_patience: int | None = Field(2, ge=1, description="epochs without dev improvement; null: off")
    metric_for_best: Literal["macro_f1", "accuracy", "loss"] = "macro_f1"
    max_length: int = Field(128, ge=8)
    save_total_limit: int = Field(2, ge=1)
    group_by_length: bool = True
    logging_steps: int = Field(10, ge=1)

    def model_refs(self) -> list[str]:
        return [self.model] if isinstance(self.model, str) else []

    def model_ref(self) -> str:
        return f"builtin:{self.model.builtin}" if isinstance(self.model, BuiltinModel) else self.model


def run(cfg: FinetuneConfig, ctx: StageContext) -> StageResult:
    from llmopt.data.artifact import load_data_artifact
    from llmopt.fsutil import atomic_write_jsonl
    from llmopt.models import load_classifier, load_tokenizer, save_model
    from llmopt.training.checkpoints import last_good_checkpoint
    from llmopt.training.classification import TrainSettings, train_classifier

    data = load_data_artifact(ctx.artifacts_of(cfg.data))
    base = ctx.model_dir(cfg.model_ref())
    tokenizer = load_tokenizer(base)
    model = load_classifier(base, labels=data.labels, allow_pickle=ctx.allow_pickle, ignore_mismatched_sizes=True)
    settings = TrainSettings(
        **{f: getattr(cfg, f) for f in TrainSettings.__dataclass_fields__ if f != "seed"}, seed=ctx.seed
    )
    resume = last_good_checkpoint(ctx.stage_dir / "checkpoints")
    trainer, train_metrics = train_classifier(
        model,
        tokenizer,
        ([r["text"] for r in data.train], data.ids(data.train)),
        ([r["text"] for r in data.dev], data.ids(data.dev)),
        len(data.labels),
        settings,
        ctx.stage_dir,
        resume,
    )
    # the best checkpoint is loaded at the end of training; its dev scores are in the history already
    history = trainer.state.log_history
    evals = [h for h in history if "eval_loss" in h]
    best_step = trainer.state.best_global_step
    dev = next((h for h in evals if h.get("step") == best_step), evals[-1] if evals else {})
    save_model(trainer.model, tokenizer, ctx.out_dir / "model")
    atomic_write_jsonl(ctx.out_dir / "log_history.jsonl", history)
    epochs_run = max((h.get("epoch") or 0 for h in history), default=0)
    return StageResult(
        {
            "base_model": str(base),
            "labels": data.labels,
            "n_train": len(data.train),
            "n_dev": len(data.dev),
            "dev_accuracy": dev.get("eval_accuracy"),
            "dev_macro_f1": dev.get("eval_macro_f1"),
            "dev_loss": dev.get("eval_loss"),
            "best_checkpoint": trainer.state.best_model_checkpoint,
            "best_metric": trainer.state.best_metric,
            "global_steps": trainer.state.global_step,
            "epochs_run": epochs_run,
            "resumed_from": str(resume) if resume else None,
            "train_runtime_s": train_metrics.get("train_runtime"),
            "train_samples_per_second": train_metrics.get("train_samples_per_second"),
            "history": history,
        }
    )
