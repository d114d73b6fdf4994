"""Helpers for compression tests: a data-stage folder and a StageContext without running a pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_rows, write_jsonl


@pytest.fixture
def data_stage(tmp_path: Path) -> Path:
    """A finished data stage's folder (artifacts: train/dev/test JSONL + labels.json)."""
    art = tmp_path / "stages" / "00-data" / "artifacts"
    art.mkdir(parents=True)
    for split, n, seed in (("train", 48, 0), ("dev", 24, 1), ("test", 24, 2)):
        write_jsonl(art / f"{split}.jsonl", make_rows(n, seed))
    (art / "labels.json").write_text(json.dumps({"labels": ["negative", "positive"]}))
    return art.parent


def make_ctx(tmp_path: Path, stage_id: str, dirs: dict[str, Path], seed: int = 0):
    """A StageContext for `stage_id` that can read the earlier stage folders in `dirs`."""
    from llmopt.stages.base import StageContext

    sdir = tmp_path / "stages" / stage_id
    (sdir / "artifacts").mkdir(parents=True, exist_ok=True)
    return StageContext(run_dir=tmp_path, stage_dir=sdir, seed=seed, threads=1, stage_dirs=dict(dirs))


LABELS = ["negative", "positive"]


@pytest.fixture(scope="session")
def tiny_teacher(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_bert with the test data's labels (negative/positive) in its config."""
    from llmopt.models import load_classifier, load_tokenizer, save_model

    out = tmp_path_factory.mktemp("teacher") / "tiny-teacher"
    save_model(load_classifier(tiny_bert, labels=LABELS), load_tokenizer(tiny_bert), out)
    return out


@pytest.fixture(scope="session")
def other_tokenizer_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer BERT with its own small WordPiece vocabulary, trained on the test sentences."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    from tests.conftest import NEG, POS

    tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tk.train_from_iterator(POS + NEG + ["number 0 1 2 3 4 5 6 7 8 9"] * 3,
                           trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    tk.post_processor = processors.BertProcessing(("[SEP]", tk.token_to_id("[SEP]")), ("[CLS]", tk.token_to_id("[CLS]")))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=tk.get_vocab_size(), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, num_labels=2, pad_token_id=0)
    out = tmp_path_factory.mktemp("other") / "other-bert"
    BertForSequenceClassification(cfg).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out
