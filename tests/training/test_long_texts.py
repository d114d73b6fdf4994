"""Long texts whose label sits at the very end: right truncation cannot see it, head_tail can — in training
and, through the model folder's own settings, at inference (PyTorch and the ONNX export)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tests.compression.conftest import make_ctx
from tests.conftest import write_jsonl

FILLER = ("the report on the quarterly meeting was sent to the office team and the schedule for next week "
          "includes a review of budget items travel plans and the new process for customer requests").split()
MAX_LENGTH = 32


def long_rows(n: int, seed: int) -> list[dict]:
    """200 label-free filler words, then 'verdict: great' or 'verdict: awful' (about 210 tokens)."""
    rng = random.Random(seed)
    return [{"text": " ".join(rng.choice(FILLER) for _ in range(200)) + (" verdict: great" if i % 2 == 0
                                                                          else " verdict: awful"),
             "label": "positive" if i % 2 == 0 else "negative"} for i in range(n)]


@pytest.fixture
def one_thread():
    """One torch thread: on a busy shared CPU, two spinning threads make a tiny model's steps ten times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _accuracy(pred, rows: list[dict]) -> float:
    from llmopt.eval.predictors import predict_all

    y = np.array([r["label"] == "positive" for r in rows], dtype=int)
    return float((predict_all(pred, [r["text"] for r in rows]).argmax(1) == y).mean())


def test_head_tail_learns_the_ending_that_right_truncation_cuts_off(tmp_path, tiny_bert, one_thread, capsys):
    from llmopt.compression.onnx_export import build_onnx_model
    from llmopt.eval.predictors import HFClassifier, OrtClassifier, load_predictor
    from llmopt.models import INFERENCE_FILE
    from llmopt.stages.finetune import FinetuneConfig, run

    art = tmp_path / "stages" / "00-data" / "artifacts"
    art.mkdir(parents=True)
    for split, n, seed in (("train", 160, 0), ("dev", 64, 1), ("test", 128, 2)):
        write_jsonl(art / f"{split}.jsonl", long_rows(n, seed))
    (art / "labels.json").write_text(json.dumps({"labels": ["negative", "positive"]}))
    test = long_rows(128, 2)

    trained: dict[str, tuple[dict, Path]] = {}
    for truncation in ("right", "head_tail"):
        ctx = make_ctx(tmp_path, f"01-{truncation}", {"data": art.parent})
        cfg = FinetuneConfig(id="finetune", model=str(tiny_bert), train=dict(
            max_length=MAX_LENGTH, truncation=truncation, learning_rate=5e-3, epochs=6, batch_size=16,
            early_stopping_patience=None, save_total_limit=1, logging_steps=20))
        trained[truncation] = (run(cfg, ctx).metrics, ctx.out_dir / "model")

    m, folder = trained["right"]
    assert m["max_length"] == MAX_LENGTH and m["truncation"] == "right"
    assert m["train_coverage"]["share_rows_cut"] == 1.0 and m["train_coverage"]["mean_share_tokens_kept"] < 0.2
    assert m["dev_accuracy"] <= 0.65  # the label word was cut from every text: chance
    assert _accuracy(load_predictor(folder), test) <= 0.65
    said = capsys.readouterr().err
    assert "max_length 32 (right truncation) cuts 100% of the train texts" in said and "truncation: head_tail" in said

    m, folder = trained["head_tail"]
    assert m["truncation"] == "head_tail" and m["dev_accuracy"] >= 0.9
    assert json.loads((folder / INFERENCE_FILE).read_text()) == {"max_length": MAX_LENGTH, "truncation": "head_tail"}
    pred = load_predictor(folder)  # no settings given: the folder's own
    assert isinstance(pred, HFClassifier) and (pred.max_length, pred.truncation) == (MAX_LENGTH, "head_tail")
    assert _accuracy(pred, test) >= 0.9
    # the same model fed right-truncated texts is back at chance: inference must cut as training did
    assert _accuracy(load_predictor(folder, truncation="right"), test) <= 0.65

    onnx = tmp_path / "onnx"
    build_onnx_model(folder, onnx, "fp32")
    assert json.loads((onnx / INFERENCE_FILE).read_text())["truncation"] == "head_tail"
    ort = load_predictor(onnx)
    assert isinstance(ort, OrtClassifier) and (ort.max_length, ort.truncation) == (MAX_LENGTH, "head_tail")
    np.testing.assert_allclose(ort.predict_proba([r["text"] for r in test[:8]]),
                               pred.predict_proba([r["text"] for r in test[:8]]), atol=1e-4)
    assert _accuracy(ort, test) >= 0.9
