"""Unstructured global magnitude pruning with the gradual cubic schedule of Zhu & Gupta (2017).

s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_end - t_0))^3, applied every `every` steps during a recovery
fine-tune; masks are re-applied after each optimizer step and made permanent (zeros) at the end. Zeros in
a dense tensor neither shrink a safetensors/ONNX file nor speed up dense kernels; the stage measures both.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback


def cubic_sparsity(step: int, start: int, end: int, final: float, initial: float = 0.0) -> float:
    """Target sparsity at `step` (0 before `start`, `final` from `end` on)."""
    if step < start:
        return 0.0
    if step >= end or end <= start:
        return final
    return final + (initial - final) * (1 - (step - start) / (end - start)) ** 3


def prunable(model: Any) -> list[tuple[str, Any]]:
    """Weights of the encoder's Linear layers (embeddings, pooler and head stay dense)."""
    import torch

    return [(n, m.weight) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and ".encoder." in f".{n}."]


def global_masks(weights: list[Any], sparsity: float) -> list[Any]:
    """Keep the largest |w| across all tensors; the smallest `sparsity` share become zero."""
    import torch

    if sparsity <= 0:
        return [torch.ones_like(w, dtype=torch.bool) for w in weights]
    flat = torch.cat([w.detach().abs().flatten() for w in weights])
    k = int(sparsity * flat.numel())
    threshold = torch.kthvalue(flat, k).values if k > 0 else flat.min() - 1
    return [w.detach().abs() > threshold for w in weights]


def apply_masks(weights: list[Any], masks: list[Any]) -> None:
    import torch

    with torch.no_grad():
        for w, m in zip(weights, masks):
            w.mul_(m)


def measured_sparsity(model: Any) -> float:
    """Share of exact zeros in the prunable weights."""
    ws = [w for _, w in prunable(model)]
    zeros = sum(int((w == 0).sum()) for w in ws)
    return zeros / max(1, sum(w.numel() for w in ws))


class GradualPruning(TrainerCallback):
    """Raise global magnitude sparsity on the cubic schedule; keep pruned weights at zero between updates."""

    def __init__(self, model: Any, final: float, start_frac: float = 0.0, end_frac: float = 0.7, every: int = 10) -> None:
        self.weights = [w for _, w in prunable(model)]
        self.final, self.start_frac, self.end_frac, self.every = final, start_frac, end_frac, every
        self.masks: list[Any] | None = None
        self.history: list[tuple[int, float]] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        t, total = state.global_step, max(1, state.max_steps)
        start, end = int(self.start_frac * total), max(1, int(self.end_frac * total))
        if self.masks is None or (t - start) % self.every == 0 or t == end:
            target = cubic_sparsity(t, start, end, self.final)
            self.masks = global_masks(self.weights, target)
            self.history.append((t, target))
        apply_masks(self.weights, self.masks)

    def finalize(self, model: Any) -> None:
        """Prune the (possibly reloaded best) model to exactly the final sparsity; zeros are permanent."""
        self.weights = [w for _, w in prunable(model)]
        apply_masks(self.weights, global_masks(self.weights, self.final))
