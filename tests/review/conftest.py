"""A small run directory holding every kind of review item, written by hand in the stages' formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_rows

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
FLIPPED = (3, 10, 17)  # train rows whose label the fixture flips


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _stage(run: Path, index: int, sid: str, stype: str, metrics: dict | None = None, **config) -> Path:
    d = run / "stages" / f"{index:02d}-{sid}"
    (d / "artifacts").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"id": sid, "type": stype, "config": {"id": sid, "type": stype,
                                                                                   **config}}))
    (d / "metrics.json").write_text(json.dumps(metrics or {}))
    (d / "DONE").write_text("")
    return d / "artifacts"


def build_run(root: Path) -> Path:
    run = root / "runs" / "demo" / "20260101-000000-abcdef"
    run.mkdir(parents=True)
    (run / "recipe.resolved.yaml").write_text("name: demo\n")
    (run / "manifest.json").write_text(json.dumps({"seed": 0}))
    labels = {"labels": ["negative", "positive"]}
    train = make_rows(80, seed=1)
    for i in FLIPPED:
        train[i]["label"] = "negative" if train[i]["label"] == "positive" else "positive"
    a = _stage(run, 0, "data", "data")
    _jsonl(a / "train.jsonl", train)
    _jsonl(a / "dev.jsonl", make_rows(10, seed=2))
    _jsonl(a / "test.jsonl", make_rows(10, seed=3))
    (a / "labels.json").write_text(json.dumps(labels))
    _stage(run, 1, "finetune", "finetune", data="data")
    # curate under label_conflicts: review (engine.py's review_items.jsonl rows)
    c = _stage(run, 2, "curate", "curate", data="data")
    _jsonl(c / "review_items.jsonl", [{"kind": "label_conflict", "id": 5, "text": "a great film number 5",
                                       "labels": {"positive": 1, "negative": 1}, "resolution": "sent to review",
                                       "members": [{"id": 5, "label": "positive"},
                                                   {"id": 7, "label": "negative", "text": "a great film number 5"}]}])
    g = _stage(run, 3, "augment", "augment", data="data")
    _jsonl(g / "train.jsonl", [{"text": "a great film", "label": "positive", "source_id": 0, "op": "original"},
                               {"text": "a swell film", "label": "positive", "source_id": 0, "op": "synonym"},
                               {"text": "film great a", "label": "positive", "source_id": 0, "op": "swap"}])
    e = _stage(run, 4, "evaluate", "evaluate", split="test", metrics={
        "reference": "finetune", "models": {"finetune": {"kind": "model"}, "tfidf": {"kind": "baseline"}}})
    test = make_rows(10, seed=3)
    preds = []
    for i, r in enumerate(test):
        wrong = i in (2, 5)
        pred = ("negative" if r["label"] == "positive" else "positive") if wrong else r["label"]
        conf = 0.9 if wrong else 0.55 + 0.04 * i
        preds.append({"text": r["text"], "label": r["label"], "pred": pred, "confidence": conf,
                      "probs": {pred: conf, ("negative" if pred == "positive" else "positive"): 1 - conf}})
    preds[7]["text"] = XSS
    _jsonl(e / "predictions" / "finetune.jsonl", preds)
    _jsonl(e / "predictions" / "tfidf.jsonl", [{**p, "pred": r["label"], "confidence": 0.7} if i != 2 else p
                                                for i, (p, r) in enumerate(zip(preds, test))])
    _jsonl(e / "predictions" / "smollm.jsonl",
           [{"text": r["text"], "label": r["label"], "pred": None if i == 1 else r["label"],
             "answer": "I think it is mixed" if i == 1 else r["label"]} for i, r in enumerate(test)])
    # a later stage that generates free text plugs in through review_items.jsonl
    p = _stage(run, 5, "prompt", "prompt")
    _jsonl(p / "review_items.jsonl", [{"kind": "draft", "prompt": "Write a one-line review of a good film.",
                                       "text": "This film were great.", "model": "smollm2"}])
    return run


@pytest.fixture
def review_run(tmp_path: Path) -> Path:
    return build_run(tmp_path)


@pytest.fixture
def session(review_run: Path):
    from llmopt.review.server import ReviewSession

    return ReviewSession(review_run, reviewer="tester")
