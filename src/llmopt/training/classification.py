"""Fine-tune a sequence classifier with the Hugging Face Trainer and sane defaults."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TrainSettings:
    learning_rate: float
    epochs: float
    batch_size: int
    eval_batch_size: int
    warmup_ratio: float
    scheduler: str
    weight_decay: float
    early_stopping_patience: int | None
    metric_for_best: str
    max_length: int
    save_total_limit: int
    group_by_length: bool
    logging_steps: int
    max_steps: int
    gradient_accumulation_steps: int
    seed: int


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def tokenize(tokenizer: Any, texts: list[str], labels: list[int], max_length: int) -> Any:
    from datasets import Dataset

    enc = tokenizer(texts, truncation=True, max_length=max_length)
    return Dataset.from_dict({**enc, "labels": labels})


def compute_metrics(k: int):
    from llmopt.eval.metrics import accuracy, macro_f1

    def fn(eval_pred: Any) -> dict[str, float]:
        logits, y = eval_pred
        logits = logits[0] if isinstance(logits, tuple) else logits
        pred = np.argmax(logits, axis=-1)
        return {"accuracy": accuracy(y, pred), "macro_f1": macro_f1(y, pred, k)}

    return fn


def training_args(s: TrainSettings, output_dir: Path, report_tb: bool) -> Any:
    from transformers import TrainingArguments

    greater = s.metric_for_best != "loss"
    return TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=s.learning_rate,
        num_train_epochs=s.epochs,
        max_steps=s.max_steps,
        per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=s.eval_batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        warmup_steps=s.warmup_ratio,  # a float < 1 is a ratio of the total steps in transformers 5
        lr_scheduler_type=s.scheduler,
        weight_decay=s.weight_decay,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="steps",
        logging_steps=s.logging_steps,
        load_best_model_at_end=True,
        metric_for_best_model=s.metric_for_best,
        greater_is_better=greater,
        save_total_limit=s.save_total_limit,
        train_sampling_strategy="group_by_length" if s.group_by_length else "random",
        seed=s.seed,
        data_seed=s.seed,
        report_to=["tensorboard"] if report_tb else "none",
        disable_tqdm=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=_has_cuda(),
        average_tokens_across_devices=False,  # else DDP logs the classification loss ×world size
    )


def train_classifier(
    model: Any,
    tokenizer: Any,
    train: tuple[list[str], list[int]],
    dev: tuple[list[str], list[int]],
    k: int,
    s: TrainSettings,
    work_dir: Path,
    resume_from: Path | None,
) -> tuple[Any, dict[str, Any]]:
    """Train with early stopping on dev; return the Trainer (best model loaded) and its history."""
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer

    from llmopt.training.callbacks import ChecksumOnSave, JsonlLogger

    report_tb = importlib.util.find_spec("tensorboard") is not None
    if report_tb:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(work_dir / "tensorboard")
    callbacks: list[Any] = [JsonlLogger(work_dir / "train_log.jsonl"), ChecksumOnSave()]
    if s.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=s.early_stopping_patience))
    trainer = Trainer(
        model=model,
        args=training_args(s, work_dir / "checkpoints", report_tb),
        train_dataset=tokenize(tokenizer, *train, s.max_length),
        eval_dataset=tokenize(tokenizer, *dev, s.max_length),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics(k),
        callbacks=callbacks,
    )
    out = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    return trainer, dict(out.metrics)
