"""Item sources: the label-error ranking (both feature methods), the review_items.jsonl plug-in point."""

from __future__ import annotations

import json

import pytest

from llmopt.review.sources import LabelErrorSource, ReviewFileSource, RunView, collect
from tests.review.conftest import FLIPPED


@pytest.mark.parametrize("method", ["tfidf", "minilm"])
def test_label_error_ranking_puts_the_flipped_rows_first(review_run, method):
    run = RunView(review_run)
    assert run.train_stage.id == "data"  # the finetune stage's data
    ranked = list(LabelErrorSource(method, folds=4, flagged_only=False, limit=None).items(run))
    assert len(ranked) == 80 and {it.row for it in ranked[:3]} == set(FLIPPED)
    assert all(it.model_label != it.given_label for it in ranked[:3])
    cache = review_run / "review" / "labelcheck" / "data.json"
    assert json.loads(cache.read_text())["key"]["method"] == method
    flagged = list(LabelErrorSource(method, folds=4).items(run))
    assert {it.row for it in flagged} >= set(FLIPPED) and len(flagged) <= 8


def test_a_later_stage_plugs_drafts_in_through_review_items(review_run):
    run = RunView(review_run)
    items = collect(run, [ReviewFileSource()])
    draft = next(it for it in items if it.kind == "draft")
    assert draft.prompt.startswith("Write a one-line review") and draft.context == {"model": "smollm2"}
    conflict = next(it for it in items if it.kind == "label_conflict")
    assert conflict.given_label == "positive" and conflict.context["labels"] == {"positive": 1, "negative": 1}
    bad = review_run / "stages" / "05-prompt" / "artifacts" / "review_items.jsonl"
    bad.write_text(json.dumps({"kind": "draft", "prompt": "p"}) + "\n")
    from llmopt.errors import DataError

    with pytest.raises(DataError, match="row 1 needs string `kind` and `text`"):
        collect(run, [ReviewFileSource()])


def test_unknown_train_stage_is_a_clear_error(review_run):
    from llmopt.errors import RunDirError

    with pytest.raises(RunDirError, match="no finished stage 'nope' with a train split"):
        RunView(review_run, train_stage="nope")


def test_a_curate_conflict_points_at_its_train_row_and_export_applies_it(review_run):
    """With the curate stage as the train stage, a conflict decision changes that row of the exported train."""
    from llmopt.review.export import export
    from llmopt.review.server import ReviewSession

    art = review_run / "stages" / "02-curate" / "artifacts"
    rows = [{"id": i, "text": f"row {i}", "label": "positive"} for i in range(4)]
    rows[2] = {"id": 5, "text": "a great film number 5", "label": "positive"}
    (art / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("dev.jsonl", "test.jsonl", "labels.json"):
        (art / name).write_bytes((review_run / "stages" / "00-data" / "artifacts" / name).read_bytes())
    s = ReviewSession(review_run, train_stage="curate", method="none")
    item = s.by_id["curate.label_conflict.0"]
    assert (item.split, item.row) == ("train", 2)
    s.decide(item.id, "relabel", label="negative")
    c = export(s, review_run / "out")
    got = [json.loads(x) for x in (review_run / "out" / "train.jsonl").read_text().splitlines()]
    assert c["train_changed"] == 1 and got[2]["label"] == "negative" and got[2]["provenance"]["item"] == item.id
    assert [r["label"] for i, r in enumerate(got) if i != 2] == ["positive"] * 3
