"""`learning_rate: auto` and `sweep:`: short trials chosen on dev (a hand-made dev metric sets the winner), 2e-5
always tried, trials resumed one by one from trials/<name>.json, the time budget stops new trials, bad blocks are
one RecipeError naming the key."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.compression.conftest import data_stage, make_ctx  # noqa: F401 — data_stage is a fixture: 48/24/24 rows

os.environ.setdefault("OMP_NUM_THREADS", "1")
# the dev metric each learning rate gets: 1e-4 wins, 2e-4 is runner-up, 2e-5 (the default) is worst
HAND_MADE = {2e-5: 0.50, 5e-5: 0.60, 1e-4: 0.90, 2e-4: 0.80}
TRAIN = {"epochs": 2, "batch_size": 8, "max_length": 16, "logging_steps": 1, "save_total_limit": 1}


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def hand_made_dev(monkeypatch):
    """score_dev's real scores, with `value` replaced by HAND_MADE[learning rate]; records the rates it scored."""
    from llmopt.eval import trials

    real, scored = trials.score_dev, []

    def fake(trainer, num_labels, metric, seed):
        lr = trainer.args.learning_rate
        scored.append(lr)
        return {**real(trainer, num_labels, metric, seed), "value": HAND_MADE[lr], "loss": 1 - HAND_MADE[lr]}

    monkeypatch.setattr(trials, "score_dev", fake)
    return scored


def _run(tmp_path: Path, data_stage: Path, model: Path, **train):
    from llmopt.stages.finetune import FinetuneConfig, run

    ctx = make_ctx(tmp_path, "01-finetune", {"data": data_stage})
    cfg = FinetuneConfig(id="finetune", model=str(model), train={**TRAIN, **train})
    return run(cfg, ctx).metrics, ctx


def test_auto_tries_2e5_and_picks_the_dev_winner_then_trains_it_fully(tmp_path, data_stage, tiny_bert, hand_made_dev,
                                                                      monkeypatch):
    from llmopt.report.render import Doc
    from llmopt.stages.finetune import section
    from llmopt.training import sweep

    monkeypatch.setattr(sweep.Sweep, "fractions", lambda self: [0.25, 0.5])  # the plan; the budget is not binding
    m, ctx = _run(tmp_path, data_stage, tiny_bert, learning_rate="auto", sweep_budget=1000, compare_fixed=True)
    s = m["lr_search"]
    rung0 = [t for t in s["trials"] if t["rung"] == 0]
    assert [t["values"]["learning_rate"] for t in rung0] == [2e-5, 5e-5, 1e-4, 2e-4]  # 2e-5 first, always tried
    assert sorted(t["values"]["learning_rate"] for t in s["trials"] if t["rung"] == 1) == [1e-4, 2e-4]
    assert hand_made_dev == [2e-5, 5e-5, 1e-4, 2e-4, 1e-4, 2e-4]  # six trials, halving kept the better two
    assert s["chosen"] == {"learning_rate": 1e-4} and m["learning_rate"] == 1e-4
    full = 12  # 48 rows / batch 8 × 2 epochs
    assert [t["steps"] for t in rung0] == [3] * 4 and [t["steps"] for t in s["trials"][4:]] == [6, 6]
    assert m["global_steps"] == full and s["fractions"] == [0.25, 0.5]
    # the full training ran at the chosen rate: the logged rate peaks at 1e-4 after warm-up, above any other's
    peak = max(h["learning_rate"] for h in m["history"] if "learning_rate" in h)
    assert 5e-5 < peak <= 1e-4
    trial_files = sorted(p.name for p in (ctx.stage_dir / "trials").iterdir())
    assert len([f for f in trial_files if f.startswith("r")]) == 6 and "fixed.json" in trial_files
    assert all(f.endswith(".json") for f in trial_files)  # trial work folders are removed
    assert {"candidates", "chosen", "seconds", "budget_s"} <= set(s) and s["trained_now"] == 6
    assert [c["status"] for c in s["candidates"]] == ["dropped after rung 0", "dropped after rung 0", "chosen",
                                                      "dropped after rung 1"]
    for t in s["trials"]:
        lo, hi = t["dev"]["accuracy_ci"]
        assert 0 <= lo <= t["dev"]["accuracy"] <= hi <= 1 and t["seconds"] > 0
    c = s["compare_fixed"]
    assert c["fixed"] == {"learning_rate": 2e-5} and not c["same_config"] and c["n"] == 24
    assert c["gain"]["accuracy"]["diff"] == pytest.approx(c["chosen_accuracy"] - c["fixed_accuracy"])
    lo, hi = c["gain"]["accuracy"]["ci"]
    assert lo <= c["gain"]["accuracy"]["diff"] <= hi
    doc = Doc()
    section("finetune", m, doc)
    md = doc.markdown()
    assert "| learning_rate 0.0001 | 1 |" in md and "Chosen: learning_rate 0.0001" in md
    assert "paired bootstrap 95% interval" in md


def test_early_rungs_keep_the_lowest_dev_loss_and_the_last_ranks_on_the_metric(tmp_path, data_stage, tiny_bert,
                                                                               hand_made_dev, monkeypatch):
    """Short trials tie on accuracy/F1 (one class predicted) while the loss separates them: rung 0 keeps the two
    lowest dev losses even where the metric prefers others; the final choice among them is by the metric."""
    from llmopt.eval import trials
    from llmopt.training import sweep

    loss = {2e-5: 0.3, 5e-5: 0.4, 1e-4: 0.5, 2e-4: 0.6}  # the reverse of HAND_MADE's order
    fake = trials.score_dev
    monkeypatch.setattr(trials, "score_dev", lambda tr, *a: {**fake(tr, *a), "loss": loss[tr.args.learning_rate]})
    monkeypatch.setattr(sweep.Sweep, "fractions", lambda self: [0.25, 0.5])
    m, _ = _run(tmp_path, data_stage, tiny_bert, learning_rate="auto", sweep_budget=1000)
    assert hand_made_dev == [2e-5, 5e-5, 1e-4, 2e-4, 2e-5, 5e-5]  # 1e-4 (best metric) dropped on its loss
    assert m["lr_search"]["chosen"] == {"learning_rate": 5e-5}  # 0.60 > 0.50 on the metric in the last rung


def test_a_sweep_the_budget_cuts_before_its_last_rung_chooses_on_dev_loss(tmp_path, data_stage, tiny_bert,
                                                                          hand_made_dev, monkeypatch):
    """Only rung 0's short trials ran: their F1 ties or differs by a row (noise), so the choice is the lowest dev
    loss, not the metric (which here prefers 1e-4)."""
    from llmopt.eval import trials
    from llmopt.training import sweep

    loss = {2e-5: 0.6, 5e-5: 0.5, 1e-4: 0.4, 2e-4: 0.3}
    fake = trials.score_dev
    monkeypatch.setattr(trials, "score_dev", lambda tr, *a: {**fake(tr, *a), "loss": loss[tr.args.learning_rate]})
    monkeypatch.setattr(sweep.Sweep, "fractions", lambda self: [0.25, 0.5])
    monkeypatch.setattr(sweep.Sweep, "budget_s", lambda self: 1e9 if len(self.records) < 4 else 0.0)
    m, _ = _run(tmp_path, data_stage, tiny_bert, learning_rate="auto")
    s = m["lr_search"]
    assert hand_made_dev == [2e-5, 5e-5, 1e-4, 2e-4] and "rung 1" in s["stopped"]
    assert s["chosen"] == {"learning_rate": 2e-4} and m["learning_rate"] == 2e-4


@pytest.mark.parametrize("budget, shortened", [(77.0, 0.401), (50.0, None)])
def test_a_rung_past_the_budget_is_shortened_to_fit_or_skipped(tmp_path, data_stage, tiny_bert, hand_made_dev,
                                                              monkeypatch, budget, shortened):
    """At 1 s per train row, rung 1 (two candidates, 12 full steps of 8 rows each) at its planned 50% would take
    96 s. A budget of 77 s fits 40.1%: the rung runs 5 steps, not 6. A budget of 50 s fits 26%, not 1.25x rung 0's
    25%: the rung is skipped."""
    from llmopt.training import sweep

    monkeypatch.setattr(sweep.Sweep, "fractions", lambda self: [0.25, 0.5])
    monkeypatch.setattr(sweep.Sweep, "_rates", lambda self: (1.0, 0.0, 0.0) if self.records else None)
    monkeypatch.setattr(sweep.Sweep, "spent_s", lambda self: 0.0)
    monkeypatch.setattr(sweep.Sweep, "budget_s", lambda self: budget)
    m, _ = _run(tmp_path, data_stage, tiny_bert, learning_rate="auto")
    s = m["lr_search"]
    rung1 = [t for t in s["trials"] if t["rung"] == 1]
    if shortened is None:
        assert not rung1 and "rung 1" in s["stopped"] and s["shortened"] == {}
        assert hand_made_dev == [2e-5, 5e-5, 1e-4, 2e-4]
    else:
        assert s["shortened"] == {"1": shortened} and s["stopped"] is None
        assert [t["steps"] for t in rung1] == [5, 5] and hand_made_dev == [2e-5, 5e-5, 1e-4, 2e-4, 1e-4, 2e-4]
        assert s["chosen"] == {"learning_rate": 1e-4}


def test_a_resumed_sweep_trains_only_the_unfinished_trials(tmp_path, data_stage, tiny_bert, hand_made_dev, monkeypatch):
    from llmopt.data.artifact import load_data_artifact
    from llmopt.eval import trials
    from llmopt.models import load_classifier, load_tokenizer
    from llmopt.training import sweep
    from llmopt.training.config import TrainConfig

    monkeypatch.setattr(sweep.Sweep, "fractions", lambda self: [0.25, 0.5])
    data = load_data_artifact(data_stage / "artifacts")
    cfg = TrainConfig(**TRAIN, learning_rate="auto", sweep_budget=1000)
    stage = tmp_path / "stage"

    def new_sweep(score=trials.score_dev) -> sweep.Sweep:
        model = load_classifier(tiny_bert, labels=data.labels, ignore_mismatched_sizes=True)
        return sweep.Sweep(cfg, model, load_tokenizer(tiny_bert), train=(data.texts("train"), data.ids(data.train)),
                           dev=(data.texts("dev"), data.ids(data.dev)), num_labels=2, seed=0, stage_dir=stage,
                           score=score)

    calls = []

    def crash_on_third(trainer, *a):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed during the third trial")
        return trials.score_dev(trainer, *a)

    with pytest.raises(KeyboardInterrupt):
        new_sweep(crash_on_third).run()
    done = {p.name: p.stat().st_mtime_ns for p in (stage / "trials").glob("*.json")}
    assert len(done) == 2 and len(calls) == 3
    first = new_sweep()
    first.run()
    assert first.trained_now == 4  # 6 trials, the 2 finished ones read back
    assert {p.name: p.stat().st_mtime_ns for p in (stage / "trials").glob("*.json")
            if p.name in done} == done  # not rewritten
    again = new_sweep()
    assert again.run() == first.cfg and again.trained_now == 0  # everything finished: nothing trained
    assert again.summary()["trials"] == first.summary()["trials"]


def test_the_budget_stops_new_trials_and_2e5_is_the_one_tried(tmp_path, data_stage, tiny_bert, hand_made_dev):
    m, ctx = _run(tmp_path, data_stage, tiny_bert, learning_rate="auto", sweep_budget=0.01)
    s = m["lr_search"]
    assert hand_made_dev == [2e-5] and s["trained_now"] == 1  # the first trial runs; its timing stops the rest
    assert s["chosen"] == {"learning_rate": 2e-5} and m["learning_rate"] == 2e-5
    assert "budget" in s["stopped"] and s["budget_s"] is not None and s["budget_s"] < s["seconds"]
    assert [c["status"] for c in s["candidates"]] == ["chosen"] + ["not tried (budget)"] * 3
    assert len(list((ctx.stage_dir / "trials").glob("*.json"))) == 1


def test_a_sweep_over_another_field_and_grid(tmp_path, data_stage, tiny_bert, monkeypatch):
    from llmopt.eval import trials

    scored = []

    def by_decay(trainer, num_labels, metric, seed):
        scored.append((trainer.args.learning_rate, trainer.args.weight_decay, trainer.args.warmup_steps))
        return {"metric": metric, "value": {0.0: 0.7, 0.1: 0.8}[trainer.args.weight_decay], "ci": [0.5, 0.9],
                "accuracy": 0.5, "accuracy_ci": [0.3, 0.7], "macro_f1": 0.5, "macro_f1_ci": [0.3, 0.7], "n": 24}

    monkeypatch.setattr(trials, "score_dev", by_decay)
    m, _ = _run(tmp_path, data_stage, tiny_bert, learning_rate=3e-4, sweep={"weight_decay": [0, 0.1]},
                sweep_strategy="grid", sweep_budget=1000)
    s = m["lr_search"]
    assert sorted(scored) == [(3e-4, 0.0, 0.1), (3e-4, 0.1, 0.1)]  # the block's own rate, each decay once
    assert s["chosen"] == {"weight_decay": 0.1} and s["fixed"] == {"weight_decay": 0.01} and not s["auto"]
    assert s["fractions"] == [1.0]  # grid at a large budget: one rung of full-length trials


@pytest.mark.parametrize("train, says", [
    ({"sweep": {"warmup_rato": [0.1]}}, "sweep.warmup_rato: not a training field (did you mean 'warmup_ratio'?)"),
    ({"sweep": {"weight_decay": []}}, "sweep.weight_decay: empty list"),
    ({"sweep": {}}, "sweep: empty"),
    ({"learning_rate": "auto", "sweep": {"learning_rate": [1e-4]}}, "sweep.learning_rate: learning_rate is auto"),
    ({"sweep": {"weight_decay": [0.1, -1]}}, "sweep.weight_decay[1] = -1"),
    ({"sweep": {"metric_for_best": ["loss"]}}, "sweep.metric_for_best: cannot be swept"),
    ({"compare_fixed": True}, "compare_fixed: only with learning_rate: auto or a sweep"),
])
def test_bad_sweeps_are_one_recipe_error_naming_the_key(train, says):
    from llmopt.errors import RecipeError
    from llmopt.recipe import parse_recipe

    text = ("version: 1\nname: t\nstages:\n  - {id: data, type: data, source: {builtin: rotten_tomatoes}}\n"
            f"  - {{id: ft, type: finetune, train: {json.dumps(train)}}}\n")
    with pytest.raises(RecipeError) as e:
        parse_recipe(text, check_paths=False)
    assert says in str(e.value) and "stages[1].train.sweep" in str(e.value)


def test_auto_is_refused_where_it_is_not_supported():
    from llmopt.errors import RecipeError
    from llmopt.recipe import parse_recipe
    from llmopt.training.config import TrainConfig
    from llmopt.training.sweep import refuse

    text = ("version: 1\nname: t\nstages:\n  - {id: data, type: data, source: {builtin: rotten_tomatoes}}\n"
            "  - {id: ft, type: finetune, task: mlm, train: {learning_rate: auto}}\n")
    with pytest.raises(RecipeError, match="train.learning_rate: auto: only task classification"):
        parse_recipe(text, check_paths=False)
    with pytest.raises(RecipeError, match=r"train.sweep: distill 'd' cannot sweep"):  # distill, prune, search
        refuse(TrainConfig(sweep={"weight_decay": [0, 0.1]}), "distill 'd'")
    ok = parse_recipe(text.replace("task: mlm, train: {learning_rate: auto}", "train: {learning_rate: auto}"),
                      check_paths=False)
    assert ok.stage("ft").train.learning_rate == "auto"
