"""`llmopt serve` against real servers on 127.0.0.1 (tiny models): the official openai client unchanged, streaming,
stop strings, limits and errors, API key, a failing request followed by a good one, micro-batching, the fault knob,
run-directory model choice and the CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from llmopt.serve.app import start_in_thread

MSG = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def causal(tiny_llama: Path):
    from llmopt.serve.models import CausalModel

    model = CausalModel(tiny_llama, threads=1)
    url, stop = start_in_thread(model, max_tokens_limit=64)
    yield url, model
    stop()


@pytest.fixture(scope="module")
def classifier(tiny_bert: Path):
    from llmopt.serve.models import ClassifierModel

    return ClassifierModel(tiny_bert, threads=1)


class Counting:
    """A served classifier that counts predict calls and raises on a text containing 'boom'."""

    kind, runtime = "classifier", "test"

    def __init__(self, inner) -> None:
        self.inner, self.path, self.labels, self.calls = inner, inner.path, inner.labels, 0
        self.lock = threading.Lock()

    def predict_proba(self, texts):
        with self.lock:
            self.calls += 1
        if any("boom" in t for t in texts):
            raise RuntimeError("planted failure")
        return self.inner.predict_proba(texts)

    def close(self) -> None:
        pass


def test_openai_client_chat_completions_and_streaming(causal) -> None:
    openai = pytest.importorskip("openai")
    from llmopt.eval.generation import chat_ids

    url, model = causal
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == [model.path.name]
    r = client.chat.completions.create(model=model.path.name, messages=MSG, max_tokens=6, temperature=0)
    text = r.choices[0].message.content
    assert r.choices[0].finish_reason in ("length", "stop") and r.choices[0].message.role == "assistant"
    # the chat template was applied: the prompt is exactly the templated one-turn chat
    assert r.usage.prompt_tokens == len(chat_ids(model.tokenizer, MSG[0]["content"]))
    assert 1 <= r.usage.completion_tokens <= 6
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # streaming: the deltas add up to the same greedy text
    chunks = list(client.chat.completions.create(model="x", messages=MSG, max_tokens=6, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == r.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    # the plain completions endpoint, greedy = the model's own argmax continuation
    c = client.completions.create(model="x", prompt="Once upon a time", max_tokens=5, temperature=0)
    ids = model.tokenizer("Once upon a time")["input_ids"]
    _, _, new = model.runner.generate_timed(ids, 5)
    assert c.choices[0].text == model.tokenizer.decode(new, skip_special_tokens=True)
    assert c.usage.prompt_tokens == len(ids)


def test_raw_sse_frames_end_with_done(causal) -> None:
    url, _ = causal
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=60,
                      json={"messages": MSG, "max_tokens": 4, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert all(ln.startswith("data: ") for ln in lines) and lines[-1] == "data: [DONE]"
    frames = [json.loads(ln[6:]) for ln in lines[:-1]]
    assert frames[0]["choices"][0]["delta"]["role"] == "assistant"
    assert frames[-1]["choices"][0]["finish_reason"] is not None
    assert {f["object"] for f in frames} == {"chat.completion.chunk"}


def test_stop_string_cuts_the_text(causal) -> None:
    url, _ = causal
    body = {"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0}
    full = httpx.post(f"{url}/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
    stop = full[len(full) // 2: len(full) // 2 + 3]
    assert stop.strip(), full
    want = full[: full.find(stop)]
    got = httpx.post(f"{url}/v1/completions", json={**body, "stop": [stop]}, timeout=60).json()["choices"][0]
    assert got["text"] == want and got["finish_reason"] == "stop"
    with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stop": stop, "stream": True}, timeout=60) as r:
        frames = [json.loads(ln[6:]) for ln in r.iter_lines() if ln.startswith("data: {")]
    assert "".join(f["choices"][0]["text"] for f in frames) == want


def test_sampling_is_seeded_and_temperature_changes_it(causal) -> None:
    url, _ = causal
    body = {"messages": MSG, "max_tokens": 8, "temperature": 1.5, "top_p": 0.95, "seed": 7}
    a = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()["choices"][0]["message"]["content"]
    b = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()["choices"][0]["message"]["content"]
    greedy = httpx.post(f"{url}/v1/chat/completions", json={**body, "temperature": 0},
                        timeout=60).json()["choices"][0]["message"]["content"]
    assert a == b and a != greedy


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"messages": []}, "messages"),
    ({}, "messages"),
    ({"messages": MSG, "max_tokens": 65}, "max_tokens"),  # over --max-tokens-limit 64
    ({"messages": MSG, "max_tokens": 0}, "max_tokens"),
    ({"messages": MSG, "temperature": 3}, "temperature"),
    ({"messages": MSG, "top_p": 0}, "top_p"),
    ({"messages": MSG, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": MSG, "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "word " * 600}], "max_tokens": 8}, "messages"),  # past the context
])
def test_bad_chat_requests_name_the_field(causal, body: dict, param: str) -> None:
    url, _ = causal
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and param.split(".")[0] in err["message"]


def test_invalid_json_and_wrong_endpoint(causal) -> None:
    url, _ = causal
    r = httpx.post(f"{url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/classify", json={"input": "x"})
    assert r.status_code == 400 and "/v1/chat/completions" in r.json()["error"]["message"]
    assert httpx.get(f"{url}/v1/nothing").status_code == 404


def test_oversized_request_rejected_and_serving_continues(tiny_llama: Path) -> None:
    url, stop = start_in_thread(tiny_llama, max_body_bytes=4000)
    try:
        big = {"messages": [{"role": "user", "content": "x" * 5000}], "max_tokens": 2}
        r = httpx.post(f"{url}/v1/chat/completions", json=big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

        def chunks():  # no Content-Length: the limit counts the bytes received
            yield b'{"messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}]}'

        r = httpx.post(f"{url}/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        r = httpx.post(f"{url}/v1/chat/completions", json={"messages": MSG, "max_tokens": 2}, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
    finally:
        stop()


def test_api_key_enforced(tiny_llama: Path) -> None:
    openai = pytest.importorskip("openai")
    url, stop = start_in_thread(tiny_llama, api_key="s3cret")
    try:
        body = {"messages": MSG, "max_tokens": 2}
        assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code == 401
        r = httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.get(f"{url}/health").status_code == 200  # liveness stays open
        ok = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert ok.chat.completions.create(model="x", messages=MSG, max_tokens=2).usage.completion_tokens >= 1
        bad = openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    finally:
        stop()


def test_bound_to_loopback_by_default(tiny_llama: Path) -> None:
    import inspect

    from llmopt.cli import build_parser
    from llmopt.serve.app import serve

    assert build_parser().parse_args(["serve", "m"]).host == "127.0.0.1"
    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    url, stop = start_in_thread(tiny_llama)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/health").json()["kind"] == "causal"
    finally:
        stop()


def test_a_failing_request_then_a_good_one(classifier, tiny_llama: Path) -> None:
    for batching in (True, False):
        url, stop = start_in_thread(Counting(classifier), batching=batching)
        try:
            r = httpx.post(f"{url}/v1/classify", json={"input": ["fine", "boom"]})
            assert r.status_code == 500 and "planted failure" in r.json()["error"]["message"]
            assert r.json()["error"]["type"] == "server_error"
            r = httpx.post(f"{url}/v1/classify", json={"input": ["fine"]})
            assert r.status_code == 200 and len(r.json()["data"]) == 1
        finally:
            stop()
    # a causal model that raises during generation: the non-streaming request gets a 500, the stream an error event
    from llmopt.serve.models import CausalModel

    model = CausalModel(tiny_llama, threads=1)
    real = model.generate

    def flaky(ids, *a, **kw):
        if len(ids) > 40:
            raise RuntimeError("planted generation failure")
        return real(ids, *a, **kw)

    model.generate = flaky
    url, stop = start_in_thread(model)
    try:
        long_msg = [{"role": "user", "content": "tell me " * 20}]
        r = httpx.post(f"{url}/v1/chat/completions", json={"messages": long_msg, "max_tokens": 2}, timeout=60)
        assert r.status_code == 500 and "planted generation failure" in r.json()["error"]["message"]
        with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=60,
                          json={"messages": long_msg, "max_tokens": 2, "stream": True}) as s:
            lines = [ln for ln in s.iter_lines() if ln]
        assert any("planted generation failure" in ln for ln in lines) and lines[-1] == "data: [DONE]"
        r = httpx.post(f"{url}/v1/chat/completions", json={"messages": MSG, "max_tokens": 2}, timeout=60)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None
        assert httpx.get(f"{url}/health").json()["errors"] == 2
    finally:
        stop()


def test_generation_runs_off_the_event_loop_and_a_dropped_stream_frees_the_model(tiny_llama: Path) -> None:
    import time

    from llmopt.serve.models import CausalModel

    model = CausalModel(tiny_llama, threads=1)
    real = model.generate

    def slow(*a, **kw):  # 0.1 s per token
        for ch in real(*a, **kw):
            time.sleep(0.1)
            yield ch

    model.generate = slow
    url, stop = start_in_thread(model)
    try:
        body = {"messages": MSG, "max_tokens": 40, "temperature": 0}
        t = threading.Thread(target=httpx.post, args=(f"{url}/v1/chat/completions",),
                             kwargs={"json": body, "timeout": 60})
        t.start()
        time.sleep(0.5)
        t0 = time.perf_counter()
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        assert time.perf_counter() - t0 < 1.0  # answered while the generation holds the model
        t.join()
        # a client that goes away mid-stream: the generation stops at the next token instead of running 4 s more
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=60) as r:
            next(ln for ln in r.iter_lines() if '"content": "' in ln and '"role"' not in ln)
        t0 = time.perf_counter()
        r = httpx.post(f"{url}/v1/chat/completions", json={**body, "max_tokens": 2}, timeout=60)
        assert r.status_code == 200 and time.perf_counter() - t0 < 2.5
    finally:
        stop()


def test_classify_labels_probabilities_and_list_input(classifier) -> None:
    url, stop = start_in_thread(classifier)
    try:
        texts = ["a great film", "a dull mess", "fine"]
        r = httpx.post(f"{url}/v1/classify", json={"input": texts})
        data = r.json()["data"]
        want = classifier.predict_proba(texts)
        assert [d["index"] for d in data] == [0, 1, 2]
        for d, p in zip(data, want):
            assert list(d["probabilities"]) == classifier.labels
            assert np.allclose(list(d["probabilities"].values()), p, atol=1e-5)
            assert d["label"] == classifier.labels[int(p.argmax())]
        assert len(httpx.post(f"{url}/v1/classify", json={"input": "one text"}).json()["data"]) == 1
        r = httpx.post(f"{url}/v1/classify", json={"input": []})
        assert r.status_code == 400 and r.json()["error"]["param"] == "input"
        r = httpx.post(f"{url}/v1/classify", json={"input": [1, 2]})
        assert r.status_code == 400 and r.json()["error"]["param"].startswith("input")
        r = httpx.post(f"{url}/v1/classify", json={"input": ["x"] * 300})
        assert r.status_code == 400 and "at most 256" in r.json()["error"]["message"]
    finally:
        stop()


def _concurrent(url: str, texts: list[str]) -> list[dict]:
    import asyncio

    async def go() -> list[dict]:
        async with httpx.AsyncClient(timeout=60) as client:
            rs = await asyncio.gather(*(client.post(f"{url}/v1/classify", json={"input": [t]}) for t in texts))
        return [r.json() for r in rs]

    return asyncio.run(go())


def test_micro_batching_merges_concurrent_requests(classifier) -> None:
    texts = [f"review number {i} was {'good' if i % 2 else 'bad'}" for i in range(16)]
    want = classifier.predict_proba(texts)
    calls = {}
    for batching in (True, False):
        served = Counting(classifier)
        url, stop = start_in_thread(served, batching=batching, batch_wait_ms=50, max_batch=64)
        try:
            out = _concurrent(url, texts)
            health = httpx.get(f"{url}/health").json()
        finally:
            stop()
        # every request got its own row back, whatever batch it rode in
        for o, p in zip(out, want):
            assert np.allclose(list(o["data"][0]["probabilities"].values()), p, atol=1e-5)
        calls[batching] = served.calls
        if batching:
            assert health["batching"]["requests"] == 16 and health["batching"]["predict_calls"] == served.calls
    assert calls[False] == 16
    assert calls[True] < 16, calls


def test_fault_knob_answers_503_first(classifier, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPT_SERVE_FAULT", "503:2")
    url, stop = start_in_thread(classifier)
    try:
        codes = [httpx.post(f"{url}/v1/classify", json={"input": "x"}).status_code for _ in range(3)]
        assert codes == [503, 503, 200]
        assert httpx.get(f"{url}/health").status_code == 200  # only /v1/* is faulted
    finally:
        stop()
    with pytest.raises(ValueError, match="CODE:N"):
        start_in_thread(classifier, fault="often")


def test_run_directory_picks_a_model(tmp_path: Path) -> None:
    from llmopt.errors import RunDirError
    from llmopt.serve.models import resolve_target

    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.resolved.yaml").write_text("name: x\n")
    for i, (sid, typ, model) in enumerate([("ft", "finetune", True), ("q", "quantize", True),
                                           ("eval", "evaluate", False), ("unfinished", "prune", True)]):
        sdir = run / "stages" / f"{i:02d}-{sid}"
        (sdir / "artifacts").mkdir(parents=True)
        if model:
            (sdir / "artifacts" / "model").mkdir()
        (sdir / "config.json").write_text(json.dumps({"id": sid, "type": typ}))
        (sdir / "metrics.json").write_text("{}")
        if sid != "unfinished":
            (sdir / "DONE").write_text("{}")
    path, why = resolve_target(run)
    assert path == run / "stages" / "01-q" / "artifacts" / "model" and "'q'" in why
    assert resolve_target(run, "ft")[0] == run / "stages" / "00-ft" / "artifacts" / "model"
    with pytest.raises(RunDirError, match="finished stages: ft, q, eval"):
        resolve_target(run, "unfinished")
    with pytest.raises(RunDirError, match="stages with a model: ft, q"):
        resolve_target(run, "eval")
    assert resolve_target(tmp_path / "model")[0] == tmp_path / "model"


def test_run_directory_serves_what_its_evaluate_stage_recommends(tmp_path: Path) -> None:
    from llmopt.serve.models import resolve_target

    run = tmp_path / "runs" / "r" / "20260101-000000-abc"
    (run / "stages").mkdir(parents=True)
    (run / "recipe.resolved.yaml").write_text("name: r\n")
    for i, (sid, typ) in enumerate([("teacher", "finetune"), ("student", "quantize"), ("evaluate", "evaluate")]):
        sdir = run / "stages" / f"{i:02d}-{sid}"
        (sdir / "artifacts" / "model").mkdir(parents=True)
        (sdir / "config.json").write_text(json.dumps({"id": sid, "type": typ}))
        (sdir / "DONE").write_text("{}")
    moved = "/somewhere/else/runs/r/20260101-000000-abc/stages"  # recorded where the run was made, since moved
    metrics = {"reference": "teacher", "models": {
        "teacher": {"kind": "model", "accuracy": 0.90, "latency_b1_p50_ms": 10.0,
                    "path": f"{moved}/00-teacher/artifacts/model"},
        "student": {"kind": "model", "accuracy": 0.90, "latency_b1_p50_ms": 2.0,
                    "gate": {"passed": True, "parent": "teacher"}, "path": f"{moved}/01-student/artifacts/model"},
        "majority": {"kind": "baseline", "accuracy": 0.5, "latency_b1_p50_ms": 0.01}}}
    (run / "stages" / "02-evaluate" / "metrics.json").write_text(json.dumps(metrics))
    path, why = resolve_target(run)
    assert path == run / "stages" / "01-student" / "artifacts" / "model" and "recommends (student)" in why
    metrics["models"]["student"]["accuracy"] = 0.5  # now nothing beats the teacher within the budget
    (run / "stages" / "02-evaluate" / "metrics.json").write_text(json.dumps(metrics))
    assert resolve_target(run)[0] == run / "stages" / "00-teacher" / "artifacts" / "model"


def test_cli_errors_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from llmopt.cli import main

    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    assert main(["serve", str(tmp_path), "--api-key-env", "NO_SUCH_KEY_VAR"]) == 2
    assert "NO_SUCH_KEY_VAR" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--stage", "x"]) == 2


def test_cli_serves_with_the_key_from_the_environment(tiny_bert: Path) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    env = {**os.environ, "MY_SERVE_KEY": "k-123", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "llmopt.cli", "serve", str(tiny_bert), "--port", str(port),
                             "--api-key-env", "MY_SERVE_KEY", "--threads", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"{url}/health", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()
        assert health["kind"] == "classifier"
        assert httpx.post(f"{url}/v1/classify", json={"input": "x"}).status_code == 401
        r = httpx.post(f"{url}/v1/classify", json={"input": "x"}, headers={"Authorization": "Bearer k-123"})
        assert r.status_code == 200 and len(r.json()["data"]) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert "http://127.0.0.1:" in proc.stderr.read()


@pytest.mark.slow
def test_smollm2_chat_completion() -> None:
    openai = pytest.importorskip("openai")
    from llmopt.llm import smollm2_path

    url, stop = start_in_thread(smollm2_path(), threads=2)
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        r = client.chat.completions.create(model="smollm2", temperature=0, max_tokens=24,
                                           messages=[{"role": "user", "content": "What is the capital of France?"}])
        assert "Paris" in r.choices[0].message.content
        assert r.usage.completion_tokens <= 24
    finally:
        stop()


@pytest.mark.slow
def test_smollm2_gguf_in_llama_cpp() -> None:
    pytest.importorskip("llama_cpp")
    from llmopt.llm import smollm2_gguf

    url, stop = start_in_thread(smollm2_gguf(), threads=2)
    try:
        assert httpx.get(f"{url}/health").json()["runtime"] == "llama.cpp"
        body = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 12, "temperature": 0}
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300).json()
        text = r["choices"][0]["message"]["content"]
        assert text.strip() and 1 <= r["usage"]["completion_tokens"] <= 12
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=300) as s:
            frames = [json.loads(ln[6:]) for ln in s.iter_lines() if ln.startswith("data: {")]
        assert "".join(f["choices"][0]["delta"].get("content", "") for f in frames) == text
    finally:
        stop()
