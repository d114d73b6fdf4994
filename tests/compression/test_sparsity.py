"""Gradual magnitude pruning: the cubic schedule at every step, and the sparsity the callback really produces.

The callback is driven two ways that do not depend on llmopt's training code: a hand-written loop of optimizer
steps calling its Trainer hook, and a bare `transformers.Trainer`.
"""

from __future__ import annotations

import pytest

from llmopt.compression.sparsity import GradualPruning, cubic_sparsity, measured_sparsity

TOL = 2e-3  # measured vs target: k = int(target * n) zeros out of n ~ 50k prunable weights, plus a few ties


def _closed_form(t: int, start: int, end: int, final: float, initial: float = 0.0) -> float:
    if t < start:
        return 0.0
    if t >= end:
        return final
    return final + (initial - final) * (1 - (t - start) / (end - start)) ** 3


@pytest.mark.parametrize("start,end,final,initial", [(10, 110, 0.8, 0.0), (0, 40, 0.5, 0.0), (5, 25, 0.9, 0.2)])
def test_cubic_schedule_at_every_step(start, end, final, initial):
    steps = range(0, end + 20)
    s = [cubic_sparsity(t, start, end, final, initial) for t in steps]
    for t, v in zip(steps, s):
        assert v == pytest.approx(_closed_form(t, start, end, final, initial), abs=1e-12), t
    assert all(v == 0.0 for v in s[:start])  # nothing pruned before start
    assert s[start] == pytest.approx(initial)
    assert all(v == final for v in s[end:])  # final from `end` on, never beyond it
    ramp = s[start:end + 1]
    assert all(b >= a for a, b in zip(ramp, ramp[1:]))  # monotone
    gains = [b - a for a, b in zip(ramp, ramp[1:])]
    assert all(g2 <= g1 + 1e-12 for g1, g2 in zip(gains, gains[1:]))  # prunes fastest early (Zhu & Gupta)
    # the midpoint of the ramp: s_f + (s_i - s_f) / 8
    mid = start + (end - start) // 2
    if (end - start) % 2 == 0:
        assert s[mid] == pytest.approx(final + (initial - final) / 8)
    assert initial <= s[mid] <= final


def test_cubic_schedule_known_values():
    assert cubic_sparsity(60, 10, 110, 0.8) == pytest.approx(0.7)  # 0.8 * (1 - 0.5**3)
    assert cubic_sparsity(35, 10, 110, 0.8) == pytest.approx(0.8 * (1 - 0.75 ** 3))
    assert cubic_sparsity(9, 10, 110, 0.8) == 0.0
    assert cubic_sparsity(110, 10, 110, 0.8) == 0.8
    assert cubic_sparsity(3, 5, 5, 0.6) == 0.0 and cubic_sparsity(5, 5, 5, 0.6) == 0.6  # empty ramp


def _tiny_bert(seed: int = 0):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=32, num_labels=2)
    return BertForSequenceClassification(cfg)


def _batches(n: int, seed: int = 0, batch: int = 8, length: int = 12):
    import torch

    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        yield torch.randint(1, 64, (batch, length), generator=g), torch.randint(0, 2, (batch,), generator=g)


def _expected_updates(total: int, start_frac: float, end_frac: float, every: int, final: float) -> dict[int, float]:
    """step -> target of every mask update the callback should make in a run of `total` optimizer steps."""
    start, end = int(start_frac * total), max(1, int(end_frac * total))
    steps = [t for t in range(1, total + 1) if t == 1 or (t - start) % every == 0 or t == end]
    return {t: cubic_sparsity(t, start, end, final) for t in steps}


def test_callback_follows_the_schedule_in_a_plain_training_loop():
    import torch
    from transformers import TrainerControl, TrainerState, TrainingArguments

    total, start_frac, end_frac, every, final = 60, 0.1, 0.7, 5, 0.8
    model = _tiny_bert()
    pruner = GradualPruning(model, final, start_frac, end_frac, every)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)  # large steps: zeros would regrow
    args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True)
    state, control = TrainerState(max_steps=total), TrainerControl()
    measured, regrown = {}, 0
    for step, (ids, y) in enumerate(_batches(total), start=1):
        model.train()
        loss = model(input_ids=ids, labels=y).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if pruner.masks is not None:  # the optimizer moved weights that the masks hold at zero
            regrown += sum(int(((w != 0) & ~m).sum()) for w, m in zip(pruner.weights, pruner.masks))
        state.global_step = step
        pruner.on_step_end(args, state, control)
        measured[step] = measured_sparsity(model)
    expected = _expected_updates(total, start_frac, end_frac, every, final)
    assert [t for t, _ in pruner.history] == list(expected)
    for (t, target), want in zip(pruner.history, expected.values()):
        assert target == pytest.approx(want)
    assert regrown > 0  # without re-applying the masks after each step, the sparsity would leak away
    # measured sparsity after each step is the target of the latest update (masks re-applied in between)
    last = 0.0
    for t in range(1, total + 1):
        last = expected.get(t, last)
        assert measured[t] == pytest.approx(last, abs=TOL), t
    targets = list(expected.values())
    assert any(0.05 < v < final - 0.05 for v in targets[1:-1])  # really intermediate values, not 0-then-final
    assert all(b >= a for a, b in zip(targets, targets[1:]))
    assert measured[total] == pytest.approx(final, abs=TOL)
    # the cubic curve itself, at the first mask update after the ramp's midpoint
    start, end = int(start_frac * total), int(end_frac * total)
    t_mid = next(t for t in expected if t >= (start + end) / 2)
    assert measured[t_mid] == pytest.approx(final * (1 - (1 - (t_mid - start) / (end - start)) ** 3), abs=TOL)


def test_callback_follows_the_schedule_under_a_bare_trainer(tmp_path):
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class Rows(torch.utils.data.Dataset):
        def __init__(self, n: int) -> None:
            self.rows = [(ids[i], y[i]) for ids, y in _batches(n // 8, seed=1) for i in range(8)]

        def __len__(self) -> int:
            return len(self.rows)

        def __getitem__(self, i: int) -> dict:
            return {"input_ids": self.rows[i][0], "labels": self.rows[i][1]}

    class Measure(TrainerCallback):  # runs after the pruner: callbacks are called in the order given
        def __init__(self) -> None:
            self.seen: dict[int, float] = {}

        def on_step_end(self, args, state, control, **kw):
            self.seen[state.global_step] = measured_sparsity(kw["model"])

    model = _tiny_bert(1)
    pruner, probe = GradualPruning(model, 0.8, 0.2, 0.6, 4), Measure()
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=2,
                             learning_rate=5e-3, save_strategy="no", eval_strategy="no", report_to="none",
                             use_cpu=True, seed=0, logging_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Rows(64), callbacks=[pruner, probe])
    trainer.train()
    total = trainer.state.max_steps
    assert total == trainer.state.global_step == 32
    expected = _expected_updates(total, 0.2, 0.6, 4, 0.8)
    assert [t for t, _ in pruner.history] == list(expected)
    assert len(probe.seen) == total
    last = 0.0
    for t in range(1, total + 1):
        last = expected.get(t, last)
        assert probe.seen[t] == pytest.approx(last, abs=TOL), t
    assert sorted(set(round(v, 2) for v in probe.seen.values()))[1:-1]  # intermediate levels were measured
    pruner.finalize(trainer.model)
    assert measured_sparsity(trainer.model) == pytest.approx(0.8, abs=TOL)
