"""The predictors' tokenization gives exactly the ids of the usual tokenizer call."""

import numpy as np
import pytest

from llmopt.eval.predictors import Encoder, HFClassifier
from llmopt.models import load_tokenizer

TEXTS = [
    "a gripping , funny film .",
    "",
    "naïve café déjà-vu — “quotes” 😀 日本語",
    "word " * 300,  # truncated
    "UPPER lower MiXeD 12345 !!!",
]


@pytest.mark.parametrize("max_length", [8, 64])
def test_encoder_matches_the_tokenizer_call(minilm_path, max_length):
    tok = load_tokenizer(minilm_path)
    enc = Encoder(tok, max_length)
    assert enc.backend is not None  # the fast path is the one under test
    for batch in ([TEXTS[0]], [TEXTS[3]], TEXTS, TEXTS[::-1]):
        want = tok(batch, truncation=True, max_length=max_length, padding=True, return_tensors="np")
        got = enc(batch)
        assert set(got) == set(want)
        for k in want:
            assert got[k].dtype == np.int64
            np.testing.assert_array_equal(got[k], want[k])
    # the shared tokenizer keeps its own settings
    assert tok(TEXTS[3])["input_ids"].__len__() > max_length


def test_classifier_probabilities_unchanged_by_the_fast_path(tiny_bert):
    import torch

    pred = HFClassifier(tiny_bert, max_length=32)
    enc = pred.tokenizer(TEXTS, truncation=True, max_length=32, padding=True, return_tensors="pt")
    with torch.inference_mode():
        want = torch.softmax(pred.model(**enc).logits, dim=-1).numpy()
    np.testing.assert_allclose(pred.predict_proba(TEXTS), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("max_length", [8, 64])
def test_head_tail_encoder_gives_the_training_ids_padded(minilm_path, max_length):
    from llmopt.training.tokenize import encode

    tok = load_tokenizer(minilm_path)
    slow = load_tokenizer(minilm_path)
    slow.truncation_side = "left"  # no backend fast path: the tokenizer-call route
    fast, plain = Encoder(tok, max_length, "head_tail"), Encoder(slow, max_length, "head_tail")
    assert fast.backend is not None and plain.backend is None
    for batch in ([TEXTS[0]], [TEXTS[3]], TEXTS, TEXTS[::-1]):
        want = tok.pad(encode(tok, batch, max_length, "head_tail"), return_tensors="np")
        for enc in (fast, plain):
            got = enc(batch)
            assert set(got) == set(want)
            for k in want:
                assert got[k].dtype == np.int64
                np.testing.assert_array_equal(got[k], want[k])
    long_ids = fast([TEXTS[3] + " the end"])["input_ids"][0]
    assert len(long_ids) == max_length and tok.decode(long_ids[-3:-1]) == "the end"


def test_predictors_take_the_model_folders_own_settings(tmp_path, tiny_bert):
    import shutil

    from llmopt.errors import ModelError
    from llmopt.models import INFERENCE_FILE, inference_settings

    assert inference_settings(tiny_bert) == (128, "right")  # no file: the old defaults
    folder = tmp_path / "m"
    shutil.copytree(tiny_bert, folder)
    (folder / INFERENCE_FILE).write_text('{"max_length": 48, "truncation": "head_tail"}')
    assert inference_settings(folder) == (48, "head_tail")
    assert inference_settings(folder, 64) == (64, "head_tail")  # a recipe's max_length wins; truncation stays
    pred = HFClassifier(folder)
    assert (pred.max_length, pred.truncation, pred.encode.truncation) == (48, "head_tail", "head_tail")
    (folder / INFERENCE_FILE).write_text('{"max_length": "long"}')
    with pytest.raises(ModelError, match=INFERENCE_FILE):
        inference_settings(folder)
