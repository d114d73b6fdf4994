"""The data stage measures how long each split's texts are, in tokens and in words."""

from __future__ import annotations

import pytest

from tests.compression.conftest import make_ctx
from tests.conftest import write_jsonl

WORDS = {"train": [10, 70, 150, 300], "dev": [5, 5], "test": [600, 20]}


def _source(tmp_path):
    files = {}
    for split, counts in WORDS.items():
        rows = [{"text": "word " * n, "label": "a" if i % 2 == 0 else "b"} for i, n in enumerate(counts)]
        files[split] = str(write_jsonl(tmp_path / f"{split}.jsonl", rows))
    return files


def test_data_stage_records_token_and_word_lengths_per_split(tmp_path):
    from llmopt.stages.data import DataConfig, run

    cfg = DataConfig(id="data", source=_source(tmp_path))
    assert cfg.inputs().models == ["builtin:minilm"]  # the tokenizer is a declared input (fingerprinted)
    m = run(cfg, make_ctx(tmp_path, "00-data", {})).metrics["lengths"]
    assert m["tokenizer"] == "builtin:minilm"
    tr = m["train"]["tokens"]  # "word" is one MiniLM token; [CLS] and [SEP] make n + 2
    assert (tr["rows"], tr["max"], tr["p50"]) == (4, 302, 112.0)
    assert tr["p99"] == pytest.approx(302 - 0.03 * 150)  # between the 3rd and 4th of four values
    assert tr["share_over"] == {"64": 0.75, "128": 0.5, "256": 0.25, "512": 0.0}
    assert m["train"]["words"]["p50"] == 110.0 and m["train"]["words"]["max"] == 300
    assert m["dev"]["tokens"]["share_over"]["64"] == 0.0 and m["dev"]["words"]["mean"] == 5.0
    assert m["test"]["tokens"]["max"] == 602 and m["test"]["tokens"]["share_over"]["512"] == 0.5


def test_length_tokenizer_null_skips_the_measurement(tmp_path):
    from llmopt.stages.data import DataConfig, run

    cfg = DataConfig(id="data", source=_source(tmp_path), length_tokenizer=None)
    assert cfg.inputs().models == []
    assert "lengths" not in run(cfg, make_ctx(tmp_path, "00-data", {})).metrics
