"""The one trainer. `_run_trainer` is the shared core (TrainingArguments from the training block, log /
checksum / progress callbacks, early stopping, resume, the reported metrics); three entry points use it:

- `train_classifier`: sequence classification whose loss is `kd_loss` — plain cross-entropy with no teacher
  logits (finetune), knowledge distillation with them (distill, prune's recovery, search);
- `train_causal_lm`: next-token loss on labelled tokens (finetune task causal_lm / sft, full or LoRA),
  early stopping on held-out loss;
- `train_masked_lm`: masked-LM loss (finetune task mlm, continued pretraining of an encoder), early stopping on
  held-out loss.

Under `torchrun` each training is a job rank 0 sends to the other ranks (`llmopt.distributed`): every rank builds
the same Trainer (`_build_trainer`) and trains with DDP; rank 0 alone writes the log, checksums and the run files.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmopt.training.config import KDConfig, TrainConfig


@dataclass
class TrainOutcome:
    trainer: Any
    metrics: dict[str, Any] = field(default_factory=dict)  # what the stage reports about its training

    @property
    def model(self) -> Any:
        return self.trainer.model

    @property
    def inference(self) -> dict[str, Any]:
        """How the model saw its texts — saved beside it (llmopt_inference.json) so predictors see them alike."""
        return {"max_length": self.metrics["max_length"], "truncation": self.metrics["truncation"]}


class _ClassMetrics:
    """Accuracy and macro-F1 of an evaluation (a class, not a closure: it travels to the other ranks)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score

        logits, y = eval_pred
        logits = logits[0] if isinstance(logits, tuple) else logits
        pred = np.argmax(logits, axis=-1)
        return {"accuracy": float(accuracy_score(y, pred)),
                "macro_f1": float(f1_score(y, pred, labels=list(range(self.k)), average="macro", zero_division=0))}


def _training_args(cfg: TrainConfig, *, output_dir: Path, seed: int, keep_best: bool, report_tb: bool,
                   metric: str | None = None) -> Any:
    """TrainingArguments from the training block; `metric` overrides metric_for_best (LM tasks: loss)."""
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio of the total steps in transformers 5
        lr_scheduler_type=cfg.scheduler,
        weight_decay=cfg.weight_decay,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        load_best_model_at_end=keep_best,
        metric_for_best_model=metric or cfg.metric_for_best,
        greater_is_better=(metric or cfg.metric_for_best) != "loss",
        save_total_limit=cfg.save_total_limit,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        seed=seed,
        data_seed=seed,
        report_to=["tensorboard"] if report_tb else "none",
        disable_tqdm=True,  # progress goes to the console's own live line (llmopt.console)
        log_level="warning",
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,  # keep teacher_logits for compute_loss
        average_tokens_across_devices=False,  # else DDP logs the classification loss ×world size
        **_fsdp_args(cfg),
        **_ddp_args(),
    )


def _fsdp_args(cfg: TrainConfig) -> dict[str, Any]:
    """`train: {fsdp: true, fsdp_config: {...}}` passed through to TrainingArguments (nothing when fsdp is off).
    accelerate turns FSDP on for GPU ranks only: on CPU (gloo) the ranks train with plain DDP, and we say so."""
    if not cfg.fsdp:
        return {}
    import torch

    from llmopt import console, distributed

    if not torch.cuda.is_available() and distributed.is_main():
        console.note("train.fsdp: accelerate shards a model only across GPUs; on CPU the ranks train with plain DDP, "
                     "each holding the whole model")
    return {"fsdp": True, "fsdp_config": dict(cfg.fsdp_config or {})}


def _ddp_args() -> dict[str, Any]:
    """Under several ranks without a GPU: use_cpu, else accelerate sees no distributed setup on a CPU-only machine
    (its MULTI_CPU mode needs cpu=True) and every rank would train alone on all the data."""
    import torch

    from llmopt import distributed

    return {"use_cpu": True} if distributed.active() and not torch.cuda.is_available() else {}


def _trainer_class() -> type:
    from transformers import Trainer

    from llmopt.training.losses import kd_loss

    class KDTrainer(Trainer):
        """Trainer whose loss is `kd_loss` against teacher logits carried in the batch (CE when there are none)."""

        def __init__(self, *a: Any, kd: KDConfig, hidden: Any = None, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.kd, self.hidden = kd, hidden

        def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None):
            teacher = inputs.pop("teacher_logits", None)
            labels = inputs.pop("labels", None)
            layerwise = self.hidden is not None and model.training  # losses.LayerwiseKD: hidden MSE, attention KL
            out = model(**inputs, **(self.hidden.student_outputs if layerwise else {}))
            loss = kd_loss(out.logits, teacher, labels, self.kd.temperature, self.kd.alpha)
            if layerwise:
                loss = loss + self.hidden(out, inputs)
            return (loss, out) if return_outputs else loss

    return KDTrainer


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


def _dataset(tokenizer: Any, texts: list[str], labels: list[int], max_length: int, truncation: str,
             logits: np.ndarray | None = None) -> Any:
    from datasets import Dataset

    from llmopt.training.tokenize import encode

    cols = {**encode(tokenizer, texts, max_length, truncation), "labels": labels}
    if logits is not None:
        cols["teacher_logits"] = [row.tolist() for row in logits]
    return Dataset.from_dict(cols)


def resumed_step(checkpoint: Path | None) -> int:
    """The global step a Trainer checkpoint was saved at (0 when there is none)."""
    if checkpoint is None:
        return 0
    state = Path(checkpoint) / "trainer_state.json"
    if state.is_file():
        return int(json.loads(state.read_text(encoding="utf-8")).get("global_step", 0))
    return int(Path(checkpoint).name.rsplit("-", 1)[-1])


def _trainer_cls(kind: str) -> type:
    """The Trainer class of a job by name ('kd', 'hf', 'mlm'): a name, so that a job can travel to other ranks."""
    from transformers import Trainer

    if kind == "kd":
        return _trainer_class()
    if kind == "mlm":
        from llmopt.training.mlm import masked_lm_trainer

        return masked_lm_trainer()
    return Trainer


def _forwarding(cls: type) -> type:
    """Under several ranks: `cls` whose evaluate / predict, called by rank 0 after training, run on every rank
    (they are collectives under DDP); within train() the Trainer already calls them on every rank."""
    from llmopt import distributed

    if not distributed.active():
        return cls

    class Forwarding(cls):  # type: ignore[misc, valid-type]
        llmopt_forward = False  # set once train() has returned

        def evaluate(self, *a: Any, **kw: Any) -> Any:
            if self.llmopt_forward:
                distributed.send(("call", "evaluate", a, kw))
            return super().evaluate(*a, **kw)

        def predict(self, *a: Any, **kw: Any) -> Any:
            if self.llmopt_forward:
                distributed.send(("call", "predict", a, kw))
            return super().predict(*a, **kw)

    Forwarding.__name__ = Forwarding.__qualname__ = cls.__name__
    return Forwarding


def _build_trainer(job: dict[str, Any]) -> Any:
    """The Trainer of a training job — built the same way on every rank: TrainingArguments from the training
    block, the JSONL log / checksum / progress callbacks, early stopping."""
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import PrinterCallback

    from llmopt.training.callbacks import ChecksumOnSave, JsonlLogger, progress_callback

    cfg, work_dir, keep_best = job["cfg"], Path(job["work_dir"]), job["keep_best"]
    report_tb = importlib.util.find_spec("tensorboard") is not None
    if report_tb:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(work_dir / "tensorboard")
    cbs: list[Any] = [JsonlLogger(work_dir / "train_log.jsonl"), ChecksumOnSave(), *progress_callback(),
                      *(job["callbacks"] or [])]
    if cfg.early_stopping_patience and keep_best:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer = _forwarding(_trainer_cls(job["kind"]))(
        model=job["model"],
        args=_training_args(cfg, output_dir=work_dir / "checkpoints", seed=job["seed"], keep_best=keep_best,
                            report_tb=report_tb, metric=job["metric"]),
        train_dataset=job["train_dataset"],
        eval_dataset=job["eval_dataset"],
        processing_class=job["tokenizer"],
        data_collator=job["collator"],
        compute_metrics=job["compute_metrics"],
        callbacks=cbs,
        **job["trainer_kw"],
    )
    trainer.remove_callback(PrinterCallback)  # it prints raw metric dicts; the console shows a live line instead
    return trainer


def serve_job(job: dict[str, Any]) -> Any:
    """A rank other than 0: run rank 0's training job (its model, data, settings and resume checkpoint)."""
    from llmopt import runtime

    runtime.configure(job["seed"], job["threads"])
    trainer = _build_trainer(job)
    trainer.train(resume_from_checkpoint=job["resume_from"])
    return trainer


def _run_trainer(
    kind: str,
    model: Any,
    tokenizer: Any,
    *,
    train_dataset: Any,
    eval_dataset: Any,
    collator: Any,
    cfg: TrainConfig,
    seed: int,
    work_dir: Path,
    resume_from: Path | None,
    callbacks: list | None,
    keep_best: bool,
    metric: str | None = None,
    compute_metrics: Any = None,
    before_train: Any = None,
    **trainer_kw: Any,
) -> tuple[Any, dict[str, Any]]:
    """The shared core of every training (`kind`: the Trainer class, see `_trainer_cls`): resume from a
    checkpoint; returns the trainer and the metrics every stage reports. Under several ranks (torchrun) the job
    is sent to the other ranks first (`llmopt.distributed`), which train alongside with DDP."""
    import torch

    from llmopt import distributed
    from llmopt.training.sweep import refuse

    refuse(cfg)  # learning_rate: auto / sweep are resolved before training (finetune); elsewhere, one clear error

    job = {"kind": kind, "model": model, "tokenizer": tokenizer, "train_dataset": train_dataset,
           "eval_dataset": eval_dataset, "collator": collator, "cfg": cfg, "seed": seed, "work_dir": str(work_dir),
           "resume_from": str(resume_from) if resume_from else None, "callbacks": callbacks, "keep_best": keep_best,
           "metric": metric, "compute_metrics": compute_metrics, "trainer_kw": trainer_kw,
           "threads": torch.get_num_threads()}
    distributed.send(("train", job))  # before the Trainer wraps the model; a no-op in one process
    trainer = _build_trainer(job)
    if before_train is not None:
        before_train(trainer)
    try:
        out = trainer.train(resume_from_checkpoint=job["resume_from"])
    except RuntimeError as e:
        if not distributed.active():
            raise
        raise distributed.DistributedError(
            f"training stopped on rank 0: a collective with the other ranks failed, most likely another rank was "
            f"stopped or killed ({str(e)[:300]}). Checkpoints are kept: rerun the same launch with --resume to "
            "continue from the last one.") from e
    trainer.llmopt_forward = True  # rank 0's later evaluate()/predict() run on every rank
    start = resumed_step(resume_from)
    history = trainer.state.log_history
    return trainer, {
        "global_steps": trainer.state.global_step,
        "resumed_at_step": start,
        "steps_trained_now": trainer.state.global_step - start,
        "epochs_run": max((h.get("epoch") or 0 for h in history), default=0),
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_metric": trainer.state.best_metric,
        "train_runtime_s": out.metrics.get("train_runtime"),
        "train_samples_per_second": out.metrics.get("train_samples_per_second"),
        "history": history,
    }


def train_classifier(
    model: Any,
    tokenizer: Any,
    *,
    train: tuple[list[str], list[int]],
    dev: tuple[list[str], list[int]],
    num_labels: int,
    cfg: TrainConfig,
    seed: int,
    work_dir: Path,
    resume_from: Path | None = None,
    teacher_logits: np.ndarray | None = None,
    kd: KDConfig | None = None,
    hidden: Any = None,
    callbacks: list | None = None,
    keep_best: bool = True,
) -> TrainOutcome:
    """Train on `train`, evaluate on `dev` each epoch; the best dev model is loaded at the end (keep_best).

    `teacher_logits` (one row per train text) turn cross-entropy into the KD loss of `kd`; train labels of
    -100 mark unlabelled transfer text. keep_best=False keeps the last model (gradual pruning: earlier
    checkpoints are less sparse). Checkpoints go to work_dir/checkpoints with checksums; the log history
    streams to work_dir/train_log.jsonl.
    """
    from llmopt import console
    from llmopt.training.tokenize import coverage, cut_warning, model_limit, resolve_max_length, token_lengths

    texts, labels = train
    train_len = token_lengths(tokenizer, texts)
    max_length = resolve_max_length(cfg.max_length, train_len, model_limit(tokenizer, getattr(model, "config", None)))
    train_coverage = coverage(train_len, max_length)
    if warning := cut_warning(train_coverage, cfg.max_length, cfg.truncation):
        console.note(warning)
    kd = kd if teacher_logits is not None and kd is not None else KDConfig(alpha=0.0)
    trainer, metrics = _run_trainer(
        "kd", model, tokenizer,
        train_dataset=_dataset(tokenizer, texts, labels, max_length, cfg.truncation, teacher_logits),
        eval_dataset=_dataset(tokenizer, *dev, max_length, cfg.truncation),
        collator=_Collator(tokenizer), cfg=cfg, seed=seed, work_dir=work_dir, resume_from=resume_from,
        callbacks=callbacks, keep_best=keep_best, compute_metrics=_ClassMetrics(num_labels), kd=kd, hidden=hidden,
    )
    history = metrics.pop("history")
    return TrainOutcome(trainer, {
        "max_length": max_length,
        "truncation": cfg.truncation,
        "train_coverage": train_coverage,
        **metrics,
        "kd": kd.model_dump() if teacher_logits is not None else None,
        "history": history,
    })


def train_causal_lm(
    model: Any,
    tokenizer: Any,
    *,
    train_dataset: list[dict],
    dev_dataset: list[dict],
    cfg: TrainConfig,
    seed: int,
    work_dir: Path,
    resume_from: Path | None = None,
    callbacks: list | None = None,
) -> TrainOutcome:
    """Train a causal LM (full or peft-wrapped) on tokenized examples (input_ids/attention_mask/labels, -100 =
    no loss), evaluate on dev each epoch, early-stop and keep the checkpoint with the lowest dev loss.

    The metrics add `dev_loss_before` (the starting model's, measured once and kept in work_dir/initial_eval.json
    so a resumed run reports the same) and `dev_loss` of the best checkpoint: token-weighted mean NLL of the dev
    labels (`causal.mean_nll`), with `dev_perplexity` = exp(dev_loss). Early stopping compares the Trainer's
    eval_loss (a mean of per-batch means).
    """
    from datasets import Dataset

    from llmopt.fsutil import atomic_write_json, read_json
    from llmopt.training.causal import CausalCollator, mean_nll

    work_dir = Path(work_dir)
    initial = work_dir / "initial_eval.json"
    pad = tokenizer.pad_token_id

    def before(trainer: Any) -> None:
        if not initial.is_file():
            atomic_write_json(initial, mean_nll(trainer.model, dev_dataset, pad, cfg.eval_batch_size))

    cols = ("input_ids", "attention_mask", "labels")
    trainer, metrics = _run_trainer(
        "hf", model, tokenizer,
        train_dataset=Dataset.from_dict({c: [e[c] for e in train_dataset] for c in cols}),
        eval_dataset=Dataset.from_dict({c: [e[c] for e in dev_dataset] for c in cols}),
        collator=CausalCollator(pad), cfg=cfg, seed=seed, work_dir=work_dir,
        resume_from=resume_from, callbacks=callbacks, keep_best=True, metric="loss", before_train=before,
    )
    start = read_json(initial)
    end = mean_nll(trainer.model, dev_dataset, pad, cfg.eval_batch_size)  # the best checkpoint, loaded at the end
    return TrainOutcome(trainer, {
        **metrics,
        "dev_loss_before": start["loss"],
        "dev_perplexity_before": start["perplexity"],
        "dev_loss": end["loss"],
        "dev_perplexity": end["perplexity"],
        "dev_loss_tokens": end["tokens"],
        "best_step": trainer.state.best_global_step,
    })


def train_masked_lm(
    model: Any,
    tokenizer: Any,
    *,
    train_dataset: list[dict],
    dev_dataset: list[dict],
    cfg: TrainConfig,
    seed: int,
    work_dir: Path,
    max_length: int,
    resume_from: Path | None = None,
    callbacks: list | None = None,
) -> TrainOutcome:
    """Masked-LM continued pretraining of an encoder (finetune task mlm): train chunks are masked afresh in every
    batch (`training.mlm.MlmCollator`: 15%, 80/10/10), dev chunks were masked once with a fixed seed
    (`mask_fixed`), so every evaluation scores the same positions; early stopping keeps the lowest dev loss.

    The metrics add `dev_loss_before` (the starting model's token-weighted dev MLM loss, kept in
    work_dir/initial_eval.json so a resumed run reports the same) and `dev_loss` of the best checkpoint.
    """
    from datasets import Dataset

    from llmopt.fsutil import atomic_write_json, read_json
    from llmopt.training.mlm import MlmCollator, mean_masked_nll

    work_dir = Path(work_dir)
    initial = work_dir / "initial_eval.json"
    pad = tokenizer.pad_token_id

    def loss(m: Any) -> dict[str, float]:
        return mean_masked_nll(m, dev_dataset, pad, cfg.eval_batch_size)

    def before(trainer: Any) -> None:
        if not initial.is_file():
            atomic_write_json(initial, loss(trainer.model))

    train_cols = ("input_ids", "attention_mask", "special_tokens_mask")
    dev_cols = ("input_ids", "attention_mask", "labels")
    trainer, metrics = _run_trainer(
        "mlm", model, tokenizer,
        train_dataset=Dataset.from_dict({c: [e[c] for e in train_dataset] for c in train_cols}),
        eval_dataset=Dataset.from_dict({c: [e[c] for e in dev_dataset] for c in dev_cols}),
        collator=MlmCollator(tokenizer), cfg=cfg, seed=seed, work_dir=work_dir,
        resume_from=resume_from, callbacks=callbacks, keep_best=True, metric="loss", before_train=before,
    )
    start, end = read_json(initial), loss(trainer.model)  # the best checkpoint, loaded at the end
    return TrainOutcome(trainer, {
        **metrics,
        "max_length": max_length,  # the chunk size
        "truncation": "right",
        "dev_loss_before": start["loss"],
        "dev_loss": end["loss"],
        "dev_loss_tokens": end["tokens"],
        "best_step": trainer.state.best_global_step,
    })

