"""Named fault points for the crash-and-resume harness.

`LLMOPT_FAULT=name:n` makes the n-th pass through `point(name)` kill this process with SIGKILL,
exactly as a power cut or the OOM killer would. With the variable unset a point costs one dict
lookup. Points: data.read, stage.start, stage.end, ckpt.saved (a checkpoint written, its checksums not
yet), train.step (after the n-th optimizer step of this process, before that step's checkpoint),
atomic.before_rename, report.write, quantize.write, augment.chunk (a chunk of augmented rows written).
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get("LLMOPT_FAULT")
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
