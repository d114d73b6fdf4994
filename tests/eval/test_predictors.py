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
