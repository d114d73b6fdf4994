"""Shared fixtures: tiny models built from configs (no downloads) and small data files."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

POS = ["a great film", "wonderful acting and a moving story", "i loved every minute", "funny and warm",
       "a delight from start to finish", "brilliant and touching", "the best movie this year", "charming"]
NEG = ["a dull mess", "boring and far too long", "i hated it", "the plot makes no sense",
       "a waste of time", "awful acting", "tedious and flat", "the worst film this year"]


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """n labelled sentences, balanced, with small variations so none repeat."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        pos = i % 2 == 0
        base = rng.choice(POS if pos else NEG)
        rows.append({"text": f"{base} number {i}", "label": "positive" if pos else "negative"})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_tiny_quantize_recipe(path: Path, data: Path, model: Path, *, epochs: int = 1, check_rows: int = 200) -> Path:
    """data → finetune (tiny) → quantize → evaluate both → report: the smallest run that has every report part."""
    path.write_text(f"""\
version: 1
name: tiny
seed: 3
threads: 1
stages:
  - {{id: data, type: data, source: {{path: {data}}}}}
  - id: finetune
    type: finetune
    model: {model}
    train: {{epochs: {epochs}, batch_size: 16, learning_rate: 1.0e-3, max_length: 32, logging_steps: 1}}
  - {{id: quantize, type: quantize, model: finetune, max_length: 32, check_rows: {check_rows}}}
  - id: evaluate
    type: evaluate
    models: [finetune, quantize]
    latency_runs: 10
    warmup: 2
    throughput_batches: 2
    max_length: 32
  - {{id: report, type: report}}
""")
    return path


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    from llmopt.models import builtin_model_path

    return builtin_model_path("minilm")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    """A 2-layer, 32-wide BERT (random weights) with the MiniLM tokenizer, saved as a model folder."""
    from llmopt.testing.bad_inputs import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "tiny-bert", minilm_path)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide Llama causal LM (random weights) with the SmolLM2 tokenizer and chat template."""
    from llmopt.testing.bad_inputs import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """60 labelled rows in one JSONL file."""
    return write_jsonl(tmp_path / "tiny.jsonl", make_rows(60))
