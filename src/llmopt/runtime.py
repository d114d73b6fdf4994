"""The one place that sets seeds and CPU threads."""

from __future__ import annotations

import os
import random


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def configure(seed: int, threads: int) -> None:
    """Seed Python/NumPy/torch and fix torch's intra-op thread count."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # pragma: no cover
        pass
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(threads)


def offline_env() -> None:
    """Never reach a model hub: everything comes from local folders and installed packages."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_libraries()


def quiet_libraries() -> None:
    """torchao warns at import about its CUDA-only kernels on a CPU machine, and torch about torchao's enum
    registration: neither is actionable for a user, so only their errors are shown."""
    import logging

    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
