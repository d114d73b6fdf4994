"""The training loss: cross-entropy is the distillation loss with no teacher (Hinton et al. 2015).

loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y); rows labelled -100
(unlabelled transfer text) get only the KD term; with no teacher logits the loss is plain CE.
Layer-wise terms (`LayerwiseKD`: hidden-state MSE, attention KL) are added for students whose layers line up
with the teacher's.
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


def hidden_mse(student_hidden: Any, teacher_hidden: Any, mapping: list[int], mask: Any,
               projection: Any = None, include_embeddings: bool = False) -> Any:
    """Mean squared error between student layer i and teacher layer mapping[i] over real (unpadded) tokens
    (TinyBERT's hidden-state loss). hidden_states[0] is the embedding output; include_embeddings adds the
    embedding pair (0 ↔ 0). `projection` (a Linear, student width → teacher width) maps a narrower student's
    states into the teacher's space first; it is learnt with the student and dropped after training."""
    pairs = [(0, 0)] * include_embeddings + [(s_i + 1, t_i + 1) for s_i, t_i in enumerate(mapping)]
    total = 0.0
    for s_i, t_i in pairs:
        s = student_hidden[s_i] if projection is None else projection(student_hidden[s_i])
        diff = (s - teacher_hidden[t_i]) ** 2 * mask
        total = total + diff.sum() / (mask.sum() * diff.shape[-1])
    return total


def attention_kl(student_attn: Any, teacher_attn: Any, mask: Any) -> Any:
    """KL(teacher ‖ student) between self-attention distributions (MiniLM's loss on the last layer), averaged
    over heads and real query tokens. Both are [batch, heads, query, key] softmax outputs; with different
    head counts the head-averaged distributions are compared (still one distribution per query token).

    `mask` is the attention mask [batch, seq]: padded query rows are left out; padded keys carry ~0 weight in both."""
    import torch

    s, t = student_attn.float(), teacher_attn.float()
    if s.shape[1] != t.shape[1]:
        s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    kl = torch.where(t > 0, t * (torch.log(t.clamp_min(1e-30)) - torch.log(s.clamp_min(1e-30))), 0.0).sum(-1)
    q = mask.to(kl.dtype)[:, None, :]  # [batch, 1, query]
    return (kl * q).sum() / (q.sum() * kl.shape[1])


class LayerwiseKD:
    """The layer-wise terms of distillation, added to the logit loss by the trainer (training.trainer.KDTrainer):

        hidden_weight · Σ MSE(W·h_student[i], h_teacher[mapping[i]])   (TinyBERT; W only when widths differ)
      + attention_weight · KL(A_teacher[last] ‖ A_student[last])        (MiniLM)

    The teacher runs once per batch without gradients on the student's inputs (same tokenizer). The projection W
    is attached to the student as `kd_projection` so the optimizer trains it, and `detach()` removes it before the
    student is saved. Attention distributions need eager attention: both models are switched to it.
    """

    def __init__(self, teacher: Any, student: Any, mapping: list[int], *, hidden_weight: float = 0.0,
                 attention_weight: float = 0.0, include_embeddings: bool = False) -> None:
        import torch

        self.teacher, self.mapping = teacher.eval(), list(mapping)
        self.hidden_weight, self.attention_weight = float(hidden_weight), float(attention_weight)
        self.include_embeddings = include_embeddings
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        if attention_weight > 0:
            for m in (teacher, student):
                m.set_attn_implementation("eager")
        s_w, t_w = student.config.hidden_size, teacher.config.hidden_size
        self.projection = None
        if hidden_weight > 0 and s_w != t_w:
            self.projection = torch.nn.Linear(s_w, t_w)
            student.add_module("kd_projection", self.projection)
        self.student = student

    @property
    def student_outputs(self) -> dict[str, bool]:
        """What the student's forward must return besides logits."""
        return {"output_hidden_states": self.hidden_weight > 0, "output_attentions": self.attention_weight > 0}

    def __call__(self, out: Any, inputs: dict) -> Any:
        """The weighted layer-wise loss of one batch, given the student's outputs and the batch inputs."""
        import torch

        dev = out.logits.device
        if next(self.teacher.parameters()).device != dev:
            self.teacher.to(dev)
        with torch.no_grad():
            t = self.teacher(**inputs, **self.student_outputs)
        mask = inputs["attention_mask"]
        loss = out.logits.new_zeros(())
        if self.hidden_weight > 0:
            loss = loss + self.hidden_weight * hidden_mse(
                out.hidden_states, t.hidden_states, self.mapping, mask.unsqueeze(-1).to(out.logits.dtype),
                self.projection, self.include_embeddings)
        if self.attention_weight > 0:
            loss = loss + self.attention_weight * attention_kl(out.attentions[-1], t.attentions[-1], mask)
        return loss

    def detach(self) -> None:
        """Drop the projection from the student (it is a training device, not part of the model)."""
        if getattr(self.student, "kd_projection", None) is not None:
            del self.student.kd_projection


def uniform_mapping(student_layers: int, teacher_layers: int) -> list[int]:
    """TinyBERT's uniform layer map: student layer i learns from teacher layer ⌈(i+1)·N/M⌉ − 1 (last to last)."""
    import math

    return [min(teacher_layers, math.ceil((i + 1) * teacher_layers / student_layers)) - 1
            for i in range(student_layers)]
