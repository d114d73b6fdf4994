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
