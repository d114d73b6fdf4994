"""Backends: label scoring equals a hand computation; the cache skips calls; the HTTP backend retries on 503 and
keeps to its concurrency limit against a real `llmopt serve` on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from llmopt.prompting.backends import Cached, LocalHF, OpenAIChat
from llmopt.prompting.cache import CallCache

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is 'a great film' good or bad?"}]


@pytest.fixture(scope="module")
def local(tiny_llama: Path) -> LocalHF:
    return LocalHF(tiny_llama, threads=1)


def test_label_scoring_equals_a_hand_computation(local: LocalHF):
    import torch

    words = ["good", "bad", "neutral"]
    got = local.score_labels(CHAT, words)
    tok, model = local.tokenizer, local.runner.model
    prompt = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert prompt.endswith("<|im_start|>assistant\n") and got["prompt_tokens"] == len(ids)
    hand = []
    for w in words:
        cont = tok(w, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seq = ids + cont
        with torch.no_grad():  # one sequence alone, no padding: the plain definition
            logits = model(torch.tensor([seq])).logits[0].double().numpy()
        total = 0.0
        for j, t in enumerate(cont):
            row = logits[len(ids) - 1 + j]  # the position before token t predicts it
            total += row[t] - (row.max() + np.log(np.exp(row - row.max()).sum()))
        hand.append(total)
    np.testing.assert_allclose(got["logprobs"], hand, atol=1e-4)
    probs = np.exp(np.asarray(hand) - max(hand))
    probs /= probs.sum()
    assert int(np.argmax(got["logprobs"])) == int(np.argmax(probs))


def test_shared_prefix_scoring_equals_the_runners_batched_scoring(local: LocalHF):
    # labels of 1, 2 and 3 tokens (before the end-of-turn token), so padding is exercised
    words = ["good", "not good", "somewhat unclear"]
    ids = local.chat_ids(CHAT)
    conts = local.continuations(words)
    assert sorted(len(c) for c in conts) != [len(conts[0])] * 3
    assert local.shared_prefix
    np.testing.assert_allclose(local.score_labels(CHAT, words)["logprobs"],
                               local.runner.continuation_logprobs(ids, conts), atol=1e-4)


def test_few_shot_prefix_is_computed_once_and_scores_stay_exact(local: LocalHF):
    shots = [{"role": "system", "content": "Label reviews."}, {"role": "user", "content": "a great film"},
             {"role": "assistant", "content": "good"}, {"role": "user", "content": "a dull mess"},
             {"role": "assistant", "content": "bad"}]
    words = ["good", "not good"]
    local._held, local.reused_tokens, local.computed_tokens = None, 0, 0

    def lcp(a: list[int], b: list[int]) -> int:
        return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))

    prev: list[int] = []
    examples = len(local.chat_ids(shots[:-1]))  # the system turn and the first example at least
    for query in ("i loved it", "tedious and flat", "i loved it"):
        chat = shots + [{"role": "user", "content": query}]
        ids = local.chat_ids(chat)
        before = local.reused_tokens, local.computed_tokens
        got = local.score_labels(chat, words)["logprobs"]
        reused, computed = local.reused_tokens - before[0], local.computed_tokens - before[1]
        assert reused + computed == len(ids)
        assert reused == (min(lcp(prev, ids), len(ids) - 1) if prev else 0)
        if prev:
            assert reused > examples  # the examples came from the previous row's cache
        np.testing.assert_allclose(got, local.runner.continuation_logprobs(ids, local.continuations(words)),
                                   atol=1e-4)
        prev = ids


def test_cache_hits_skip_calls_and_keys_include_decoding_params(local: LocalHF, tmp_path: Path):
    cache = CallCache(tmp_path / "calls.sqlite")
    b = Cached(local, cache)
    before = local.calls
    first = b.score_labels(CHAT, ["good", "bad"])
    again = b.score_labels(CHAT, ["good", "bad"])
    assert local.calls == before + 1 and not first["cached"] and again["cached"]
    assert again["logprobs"] == first["logprobs"]
    b.score_labels(CHAT, ["bad", "good"])  # other label words: another call
    b.generate(CHAT, 3)
    b.generate(CHAT, 4)  # other decoding parameters: another call
    assert local.calls == before + 4
    # a second process's view of the same file (a resumed run) hits too
    b2 = Cached(local, CallCache(tmp_path / "calls.sqlite"))
    assert b2.generate(CHAT, 3)["cached"] and local.calls == before + 4 and b2.cache.hits == 1


def test_cache_is_safe_under_concurrent_writers(tmp_path: Path):
    cache = CallCache(tmp_path / "c.sqlite")

    def work(i: int) -> None:
        for j in range(50):
            cache.put(f"k{j}", {"v": j})
            assert cache.get(f"k{j}") == {"v": j}

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [CallCache(tmp_path / "c.sqlite").get(f"k{j}") for j in range(50)] == [{"v": j} for j in range(50)]


@pytest.fixture(scope="module")
def served(tiny_llama: Path):
    """The real `llmopt serve` on 127.0.0.1, its first 2 /v1 requests answering 503."""
    from llmopt.serve.app import start_in_thread

    url, stop = start_in_thread(tiny_llama, fault="503:2")
    yield url
    stop()


def test_http_backend_retries_on_503_and_keeps_to_its_concurrency_limit(served: str):
    from concurrent.futures import ThreadPoolExecutor

    b = OpenAIChat(served + "/v1", "tiny", retries=3, backoff_s=0.01, max_concurrency=2)
    out = b.generate(CHAT, 4)  # the server's first two answers are 503: two retries, then an answer
    assert b.calls == 3 and b.retried == 2 and isinstance(out["text"], str) and out["completion_tokens"] >= 1

    live, peak, lock = [0], [0], threading.Lock()
    post = b._client.post

    def counting_post(*a, **kw):  # requests in flight on the wire, measured around the client call
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        try:
            time.sleep(0.05)
            return post(*a, **kw)
        finally:
            with lock:
                live[0] -= 1

    b._client.post = counting_post
    with ThreadPoolExecutor(8) as ex:
        outs = list(ex.map(lambda i: b.generate([{"role": "user", "content": f"q{i}"}], 2), range(8)))
    assert len(outs) == 8 and peak[0] == 2  # 8 callers at once, never more than 2 requests in flight
    b.close()


def test_http_backend_gives_up_with_a_clear_error_and_does_not_retry_a_400():
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from llmopt.errors import ModelError
    from llmopt.review.server import bind_loopback

    import uvicorn

    app, hits = FastAPI(), []

    @app.post("/v1/chat/completions")
    def chat(body: dict) -> JSONResponse:
        hits.append(body["model"])
        return JSONResponse({"error": {"message": "nope"}}, status_code=503 if body["model"] == "busy" else 400)

    sock = bind_loopback()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    try:
        with pytest.raises(ModelError, match="failed after 3 tries; last: HTTP 503"):
            OpenAIChat(url, "busy", retries=2, backoff_s=0.0).generate(CHAT, 2)
        with pytest.raises(ModelError, match="HTTP 400"):
            OpenAIChat(url, "bad", retries=2, backoff_s=0.0).generate(CHAT, 2)
        assert hits == ["busy"] * 3 + ["bad"]
    finally:
        server.should_exit = True
        th.join(5)


def test_generation_over_http_counts_unparseable_answers(served: str):
    from llmopt.data.sft import parse_label
    from llmopt.prompting.run import predict
    from llmopt.prompting.templates import PromptTemplate

    t = PromptTemplate(name="v", template="Is this {{ labels }}? {{ text }}", label_words={"negative": "bad",
                                                                                        "positive": "good"})
    rows = [{"text": f"review {i}", "label": "positive"} for i in range(6)]
    b = OpenAIChat(served + "/v1", "tiny", retries=3, backoff_s=0.01, max_concurrency=3)
    out = predict(b, t, rows, ["negative", "positive"], "generate", lambda i, r: [], max_new_tokens=3)
    parsed = [parse_label(a, {"negative": "bad", "positive": "good"}) for a in out["answers"]]
    assert len(out["answers"]) == 6 and out["unparseable"] == sum(p is None for p in parsed)
    assert out["preds"] == [2 if p is None else ["negative", "positive"].index(p) for p in parsed]
    b.close()
