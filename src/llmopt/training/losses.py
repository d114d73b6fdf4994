"""The training loss: cross-entropy is the distillation loss with no teacher (Hinton et al. 2015).

loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y); rows labelled -100
(unlabelled transfer text) get only the KD term; with no teacher logits the loss is plain CE.
"""

from __future__ import annotations

from typing import Any


def kd_loss(student: Any, teacher: Any | None, labels: Any | None, temperature: float, alpha: float) -> Any:
    import torch
    import torch.nn.functional as F

    loss = student.new_zeros(())
    if teacher is not None and alpha > 0:
        t = temperature
        kl = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher.to(student.dtype) / t, dim=-1),
                      reduction="batchmean", log_target=True)
        loss = loss + alpha * t * t * kl
    w_ce = 1.0 - alpha if teacher is not None else 1.0
    if labels is not None and w_ce > 0 and bool((labels != -100).any()):
        loss = loss + w_ce * F.cross_entropy(student, labels, ignore_index=-100)
    return loss if isinstance(loss, torch.Tensor) else torch.tensor(loss)


def hidden_mse(student_hidden: Any, teacher_hidden: Any, mapping: list[int], mask: Any) -> Any:
    """Mean squared error between student layer i and teacher layer mapping[i] over real (unpadded) tokens."""
    total = 0.0
    for s_i, t_i in enumerate(mapping):  # hidden_states[0] is the embedding output
        diff = (student_hidden[s_i + 1] - teacher_hidden[t_i + 1]) ** 2 * mask
        total = total + diff.sum() / (mask.sum() * diff.shape[-1])
    return total
