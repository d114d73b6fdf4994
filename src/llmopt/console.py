"""What the user sees while a recipe runs: one live line per stage, one result line after it.

Library warnings and the Trainer's logs go to run.log in the run directory (`--verbose` shows them too).
"""

from __future__ import annotations

import sys
from typing import Any

_state: dict[str, Any] = {"progress": None, "task": None}


def info(msg: str) -> None:
    print(f"[llmopt] {msg}", file=sys.stderr, flush=True)


def training_callback() -> Any | None:
    """A TrainerCallback that moves the current stage's live line, or None when no line is shown."""
    progress, task = _state["progress"], _state["task"]
    if progress is None or task is None:
        return None
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            progress.update(task, total=state.max_steps, completed=state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            progress.update(task, completed=state.global_step)

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kw: Any) -> None:
            if metrics and "eval_accuracy" in metrics:
                progress.update(task, metric=f"dev acc {100 * metrics['eval_accuracy']:.1f}%")

    return _Progress()
