"""The augment and compare stages: outputs a fine-tune can read, provenance, the label filter with a real
classifier, bad input, kill -9 resume, and the paired multi-seed gain."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmopt.fsutil import read_jsonl
from tests.conftest import make_rows, write_jsonl

LABELS = ["negative", "positive"]


def _data_stage(root: Path, train: list[dict] | None = None) -> Path:
    art = root / "stages" / "00-data" / "artifacts"
    art.mkdir(parents=True)
    for split, rows in (("train", train or make_rows(40, 0)), ("dev", make_rows(16, 1)), ("test", make_rows(16, 2))):
        write_jsonl(art / f"{split}.jsonl", rows)
    (art / "labels.json").write_text(json.dumps({"labels": LABELS}))
    return art.parent


def _ctx(root: Path, sid: str, dirs: dict[str, Path], seed: int = 0):
    from llmopt.stages.base import StageContext

    sdir = root / "stages" / sid
    (sdir / "artifacts").mkdir(parents=True, exist_ok=True)
    return StageContext(run_dir=root, stage_dir=sdir, seed=seed, threads=1, stage_dirs=dict(dirs))


@pytest.fixture(scope="module")
def tiny_teacher(tiny_bert: Path, tmp_path_factory) -> Path:
    from llmopt.models import load_classifier, load_tokenizer, save_model

    out = tmp_path_factory.mktemp("teacher") / "tiny-teacher"
    save_model(load_classifier(tiny_bert, labels=LABELS), load_tokenizer(tiny_bert), out)
    return out


def test_augment_writes_a_data_artifact_with_provenance_and_a_transfer_set(tmp_path):
    from llmopt.data.artifact import load_data_artifact
    from llmopt.stages.augment import AugmentConfig, run

    data = _data_stage(tmp_path)
    ctx = _ctx(tmp_path, "01-augment", {"data": data})
    m = run(AugmentConfig(id="augment", ops=["synonym", "swap", "delete"], copies=2, chunk_rows=15), ctx).metrics
    out = load_data_artifact(ctx.out_dir)  # what `finetune` with `data: augment` reads
    assert out.labels == LABELS and len(out.train) == m["train_rows"] == 40 + m["transfer_rows"]
    assert all({"source_id", "op"} <= set(r) for r in out.train)
    originals = [r for r in out.train if r["op"] == "original"]
    assert [(r["text"], r["label"]) for r in originals] == [(r["text"], r["label"]) for r in make_rows(40, 0)]
    for r in out.train[40:]:  # every variant carries its source row's label and differs from every original
        assert r["label"] == originals[r["source_id"]]["label"] and r["op"] in ("synonym", "swap", "delete")
        assert r["text"].lower() not in {o["text"].lower() for o in originals}
    assert (ctx.out_dir / "test.jsonl").read_bytes() == (data / "artifacts" / "test.jsonl").read_bytes()
    assert (ctx.out_dir / "dev.jsonl").read_bytes() == (data / "artifacts" / "dev.jsonl").read_bytes()
    assert read_jsonl(ctx.out_dir / "transfer.jsonl") == out.train[40:]
    dropped = read_jsonl(ctx.out_dir / "dropped.jsonl")
    for op in ("synonym", "swap", "delete"):  # every generated variant is kept or dropped with a reason
        assert m["generated"][op] == 80 == m["kept"][op] + sum(m["dropped_by_op"][op].values())
        assert m["rows_per_s"][op] > 0
    assert len(dropped) == sum(m["dropped"].values()) and all(d["reason"] for d in dropped)
    assert m["wordnet"] and m["pos_source"] in ("nltk-tagger", "wordnet-most-frequent") and m["chunks_reused"] == 0
    from llmopt.report.render import Doc
    from llmopt.stages.augment import section

    doc = Doc()
    section("augment", m, doc)
    md = doc.markdown()
    assert f"| synonym | 80 | {m['kept']['synonym']} |" in md and "40 train rows of stage 'data'" in md
    # deterministic: the same seed gives the same rows, another seed other rows
    again = run(AugmentConfig(id="augment", ops=["synonym", "swap", "delete"], copies=2, chunk_rows=40),
                _ctx(tmp_path / "b", "01-augment", {"data": data})).metrics
    assert again["examples"] == m["examples"]
    other = _ctx(tmp_path / "c", "01-augment", {"data": data}, seed=1)
    run(AugmentConfig(id="augment", ops=["synonym", "swap", "delete"], copies=2), other)
    assert read_jsonl(other.out_dir / "train.jsonl") != out.train


def test_a_resumed_augment_reuses_finished_chunks_and_writes_the_same_rows(tmp_path):
    from llmopt.stages.augment import AugmentConfig, run

    data = _data_stage(tmp_path)
    cfg = AugmentConfig(id="augment", ops=["swap", "delete"], chunk_rows=10)
    ctx = _ctx(tmp_path, "01-augment", {"data": data})
    run(cfg, ctx)
    first = read_jsonl(ctx.out_dir / "train.jsonl")
    chunks = sorted((ctx.stage_dir / "work").glob("chunk-*.json"))
    assert len(chunks) == 4
    chunks[-1].unlink()  # as if killed before the last chunk was written
    shutil.rmtree(ctx.out_dir)
    m = run(cfg, ctx).metrics
    assert m["chunks_reused"] == 3 and read_jsonl(ctx.out_dir / "train.jsonl") == first


def test_label_filter_with_a_real_classifier_keeps_exactly_the_rows_above_tau(tmp_path, tiny_teacher):
    import numpy as np

    from llmopt.data.augment.label_filter import label_probs
    from llmopt.stages.augment import AugmentConfig, run

    data = _data_stage(tmp_path)
    ctx = _ctx(tmp_path, "01-augment", {"data": data})
    unfiltered = run(AugmentConfig(id="augment", ops=["swap", "delete"]), ctx).metrics
    probs = label_probs(tiny_teacher, [r["text"] for r in read_jsonl(ctx.out_dir / "transfer.jsonl")],
                        [LABELS.index(r["label"]) for r in read_jsonl(ctx.out_dir / "transfer.jsonl")])
    tau = float(np.median(probs))
    ctx2 = _ctx(tmp_path / "f", "01-augment", {"data": data})
    m = run(AugmentConfig(id="augment", ops=["swap", "delete"], filter={"model": str(tiny_teacher), "min_prob": tau}),
            ctx2).metrics
    kept = read_jsonl(ctx2.out_dir / "transfer.jsonl")
    flipped = [d for d in read_jsonl(ctx2.out_dir / "dropped.jsonl") if d["reason"] == "label_prob_below_min"]
    assert len(kept) == int((probs >= tau).sum()) and len(flipped) == int((probs < tau).sum()) > 0
    # label_prob is stored rounded to 4 decimals
    assert all(r["label_prob"] >= tau - 5e-5 for r in kept) and all(d["label_prob"] <= tau + 5e-5 for d in flipped)
    assert m["transfer_rows"] + len(flipped) == unfiltered["transfer_rows"]
    assert m["filter"]["min_prob"] == tau and m["filter"]["model"] == str(tiny_teacher)


def test_a_filter_model_with_other_labels_is_refused(tmp_path, tiny_bert):
    from llmopt.errors import ModelError
    from llmopt.stages.augment import AugmentConfig, run

    data = _data_stage(tmp_path)
    with pytest.raises(ModelError, match=r"filter.model .* predicts .* Use a classifier fine-tuned on this data"):
        run(AugmentConfig(id="augment", ops=["swap"], filter={"model": str(tiny_bert)}),
            _ctx(tmp_path, "01-augment", {"data": data}))


def test_backtranslation_through_the_stage_with_a_failing_batch_keeps_the_other_rows(tmp_path, monkeypatch):
    from llmopt.data.augment import backtranslate
    from llmopt.stages.augment import AugmentConfig, run

    def fake_round_trip(self, texts):
        if any("number 5 " in t + " " for t in texts):
            raise backtranslate.TranslationError("apertium spa-eng exited 1: boom")
        return [t.replace("film", "movie") + " indeed" for t in texts]

    monkeypatch.setattr(backtranslate.Apertium, "round_trip", fake_round_trip)
    data = _data_stage(tmp_path)
    ctx = _ctx(tmp_path, "01-augment", {"data": data})
    m = run(AugmentConfig(id="augment", ops=["backtranslate"], translator={"kind": "apertium", "batch_rows": 4}),
            ctx).metrics
    assert m["failed_batches"] == [{"start": 4, "end": 8, "error": "apertium spa-eng exited 1: boom", "attempts": 2}]
    assert m["generated"]["backtranslate"] == 36 and m["dropped"]["translation_failed"] == 4
    failed = [d for d in read_jsonl(ctx.out_dir / "dropped.jsonl") if d["reason"] == "translation_failed"]
    assert [d["source_id"] for d in failed] == [4, 5, 6, 7]
    assert all(r["text"].endswith(" indeed") for r in read_jsonl(ctx.out_dir / "transfer.jsonl"))


def test_backtranslation_with_a_local_marian_pair_through_the_stage(tmp_path):
    from llmopt.stages.augment import AugmentConfig, run
    from tests.data.test_augment import _tiny_marian

    fw, bw = _tiny_marian(tmp_path / "en-xx", 1), _tiny_marian(tmp_path / "xx-en", 2)
    data = _data_stage(tmp_path)
    ctx = _ctx(tmp_path, "01-augment", {"data": data})
    m = run(AugmentConfig(id="augment", ops=["backtranslate"], translator={
        "kind": "marian", "forward": str(fw), "backward": str(bw), "batch_rows": 16, "max_new_tokens": 6}), ctx).metrics
    assert m["translator"] == "marian en-xx|xx-en" and m["generated"]["backtranslate"] == 40
    assert m["failed_batches"] == [] and m["kept"]["backtranslate"] + sum(m["dropped"].values()) == 40


@pytest.mark.parametrize("bad, match", [
    ({"ops": ["backtranslate"]}, "needs a `translator:`"),
    ({"ops": ["swap"], "translator": {"kind": "apertium"}}, "needs a `translator:`"),
    ({"ops": ["swap", "swap"]}, "lists an op twice"),
    ({"rate": 0.9}, "less than or equal to 0.5"),
    ({"ops": ["paraphrase"]}, "synonym"),
    ({"copies": 0}, "greater than or equal to 1"),
    ({"filter": {"model": "teacher", "min_prob": 1.5}}, "less than or equal to 1"),
])
def test_impossible_augment_settings_fail_at_load_time(bad, match):
    from llmopt.stages.augment import AugmentConfig

    with pytest.raises(ValidationError, match=match):
        AugmentConfig(id="augment", **bad)


def test_an_empty_text_column_is_a_clear_error(tmp_path):
    from llmopt.errors import DataError
    from llmopt.stages.augment import AugmentConfig, run

    data = _data_stage(tmp_path, train=[{"text": " ", "label": "positive"}, {"text": "", "label": "negative"}])
    with pytest.raises(DataError, match=r"train split of stage 'data' .* has no non-empty text; check the data "):
        run(AugmentConfig(id="augment", ops=["swap"]), _ctx(tmp_path, "01-augment", {"data": data}))


CRASH_RECIPE = """\
version: 1
name: aug
seed: 3
threads: 1
stages:
  - id: data
    type: data
    source: {{path: {data}}}
    length_tokenizer: null
  - id: augment
    type: augment
    ops: [synonym, swap, delete]
    chunk_rows: 8
"""


def test_kill_9_during_augment_resumes_with_nothing_lost(tmp_path):
    from llmopt.testing.crash import events, latest_run, partial_files, run_cli

    data = write_jsonl(tmp_path / "rows.jsonl", make_rows(60))
    recipe = tmp_path / "aug.yaml"
    recipe.write_text(CRASH_RECIPE.format(data=data))
    ref = run_cli(["run", str(recipe), "--runs-dir", str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = run_cli(["run", str(recipe), "--runs-dir", str(tmp_path / "runs")], fault="augment.chunk:3")
    assert killed.returncode == -9
    run_dir = latest_run(tmp_path / "runs")
    assert partial_files(run_dir) == []
    work = next(run_dir.glob("stages/*-augment/work"))
    assert len(list(work.glob("chunk-*.json"))) == 3 and not list(run_dir.glob("stages/*-augment/DONE"))
    resumed = run_cli(["run", str(recipe), "--runs-dir", str(tmp_path / "runs"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    evts = events(run_dir)
    later = [(e["stage"], e["action"]) for e in evts if e.get("pid") != evts[0].get("pid")]
    assert later == [("data", "skipped"), ("augment", "resumed"), ("augment", "done")]  # folder kept, not restarted
    art, ref_art = (next(r.glob("stages/*-augment")) for r in (run_dir, latest_run(tmp_path / "ref")))
    assert json.loads((art / "metrics.json").read_text())["chunks_reused"] == 3
    for name in ("train.jsonl", "transfer.jsonl", "dropped.jsonl", "dev.jsonl", "test.jsonl", "labels.json"):
        assert (art / "artifacts" / name).read_bytes() == (ref_art / "artifacts" / name).read_bytes(), name


# ---------------------------------------------------------------- compare: the measured gain

def test_paired_interval_by_hand():
    from llmopt.stages.compare import paired_interval

    g = paired_interval([0.80, 0.90, 0.85], [0.80, 0.80, 0.80])
    # diffs 0, .1, .05: mean .05, sd .05, se .05/√3 = .028868, t(.975, 2) = 4.302653 → half-width .124207
    assert g["mean"] == pytest.approx(0.05) and g["ci"] == pytest.approx([-0.074207, 0.174207], abs=1e-6)
    assert g["verdict"] == "no significant difference" and g["n_seeds"] == 3
    assert paired_interval([0.90, 0.91, 0.92], [0.80, 0.80, 0.80])["verdict"] == "gain"
    assert paired_interval([0.70, 0.71, 0.72], [0.80, 0.80, 0.81])["verdict"] == "loss"


def test_compare_trains_both_arms_per_seed_and_reports_a_paired_gain(tmp_path, tiny_bert):
    from llmopt.report.render import Doc
    from llmopt.stages.augment import AugmentConfig, run as augment
    from llmopt.stages.compare import CompareConfig, run, section

    data = _data_stage(tmp_path)
    actx = _ctx(tmp_path, "01-augment", {"data": data})
    augment(AugmentConfig(id="augment", ops=["swap"]), actx)
    ctx = _ctx(tmp_path, "02-gain", {"data": data, "augment": actx.stage_dir})
    cfg = CompareConfig(id="gain", treatment="augment", model=str(tiny_bert), seeds=[1, 2],
                        train={"max_steps": 2, "batch_size": 8, "epochs": 1, "max_length": 32,
                               "early_stopping_patience": None})
    m = run(cfg, ctx).metrics
    assert m["n_train"]["baseline"] == 40 and m["n_train"]["treatment"] > 40 and m["n_eval"] == 16
    g = m["accuracy_gain"]
    assert len(g["diffs"]) == 2 and g["diffs"] == pytest.approx(
        [t - b for t, b in zip(m["accuracy"]["treatment"], m["accuracy"]["baseline"])])
    assert g["ci"][0] <= g["mean"] <= g["ci"][1]
    assert all((ctx.stage_dir / f"{arm}-seed{s}" / "result.json").is_file() for arm in ("baseline", "treatment")
               for s in (1, 2))
    assert run(cfg, ctx).metrics == m  # finished runs are read back, not trained again
    doc = Doc()
    section("gain", m, doc)
    assert "95% interval" in doc.markdown() and g["verdict"] in doc.markdown()


def test_compare_refuses_arms_with_different_test_splits(tmp_path, tiny_bert):
    from llmopt.errors import RecipeError
    from llmopt.stages.compare import CompareConfig, run

    a, b = _data_stage(tmp_path / "a"), _data_stage(tmp_path / "b")
    write_jsonl(b / "artifacts" / "test.jsonl", make_rows(16, 9))
    with pytest.raises(RecipeError, match="different test splits"):
        run(CompareConfig(id="gain", baseline="a", treatment="b", model=str(tiny_bert)),
            _ctx(tmp_path, "02-gain", {"a": a, "b": b}))
    with pytest.raises(ValidationError, match="both 'data'"):
        CompareConfig(id="gain", treatment="data")
