"""Trainer callbacks: the log history streamed to JSONL in the stage folder, checkpoint checksums (rank 0 writes
both under DDP), the console's progress line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


class JsonlLogger(TrainerCallback):
    """Append every Trainer log record (loss, lr, eval metrics) to a JSONL file as it happens."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rec = {"step": state.global_step, "epoch": state.epoch, **logs}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, default=float) + "\n")


class ChecksumOnSave(TrainerCallback):
    """After each checkpoint is written, record every file's size and sha256 inside it."""

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from llmopt import distributed, faults
        from llmopt.training.checkpoints import record

        distributed.barrier()  # under DDP every rank writes its RNG state into the checkpoint: all of them first
        if not state.is_world_process_zero:
            return
        faults.point("ckpt.saved")
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if ckpt.is_dir():
            record(ckpt)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from llmopt import faults

        faults.point("train.step")  # after optimizer step n, before that step's checkpoint (crash harness)


def progress_callback() -> list[TrainerCallback]:
    """The console's live progress line for this training, if a console is showing one."""
    from llmopt import console

    cb = console.training_callback()
    return [cb] if cb is not None else []
