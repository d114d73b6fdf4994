"""Serving benchmark: `llmopt serve` under load from a local client on 127.0.0.1, bounded request counts.

- classify: the best compressed classifier (default: bench/results/compress.json's `best` model when its run
  directory is still there, else the model the latest runs/default run recommends; or --model) served by the real
  CLI (`python -m llmopt.cli serve`, its own process, so client and server do not share a GIL), with and without
  micro-batching; at concurrency 1, 8 and 32 an httpx async client sends N one-text /v1/classify requests (SST-2 dev
  texts, cycled) after 2 x concurrency warm-up requests: requests/s (N / wall), p50 and p99 latency per request,
  non-200 answers (errors), and the server's requests per predict call (/health).
- chat: the bundled SmolLM2-135M-Instruct (transformers folder) answering /v1/chat/completions one request at a
  time, greedy, exactly max_tokens unless EOS comes first: completion tokens/s = completion tokens / wall seconds of
  the requests (prefill included), and the time to the first streamed token; also the package's Q4_1 GGUF in
  llama.cpp when llama-cpp-python is installed (not in --quick).

Full: N = 400 per level, 6 chat prompts x 64 tokens → bench/results/serve.json. --quick: N = 64, 2 prompts x 16
tokens, HF only → bench/results/serve.quick.json (about 2 minutes on 2 busy cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"
CONCURRENCY = (1, 8, 32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`llmopt serve MODEL` in a child process on a free port of 127.0.0.1."""

    def __init__(self, model: Path, *args: str, threads: int = 1, timeout: float = 300) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
        env.pop("LLMOPT_SERVE_FAULT", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "llmopt.cli", "serve", str(model), "--port",
                                      str(self.port), "--threads", str(threads), *args], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llmopt serve exited: {self.proc.stderr.read()[-2000:]}")
            try:
                self.health = httpx.get(f"{self.url}/health", timeout=2).json()
                return
            except httpx.HTTPError:
                time.sleep(0.3)
        self.close()
        raise RuntimeError(f"llmopt serve did not answer /health within {timeout:.0f} s")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def pick_classifier(arg: str | None) -> tuple[Path, str]:
    from llmopt.serve.models import resolve_target

    if arg:
        return resolve_target(Path(arg))
    comp = ROOT / "bench" / "results" / "compress.json"
    if comp.is_file():
        c = json.loads(comp.read_text())
        run = Path(c.get("run_dir", ""))
        if run.is_dir() and c.get("best", {}).get("name"):
            path, _ = resolve_target(run, c["best"]["name"])
            return path, f"bench/results/compress.json best: {c['best']['name']}"
    runs = sorted((ROOT / "runs" / "default").glob("*/recipe.resolved.yaml"))
    for r in reversed(runs):
        try:
            return resolve_target(r.parent)
        except Exception:  # noqa: BLE001 — an unfinished run: try an older one
            continue
    raise SystemExit("no classifier found: run bench/compress.py or `llmopt run`, or pass --model")


async def load(url: str, texts: list[str], concurrency: int, n: int) -> dict:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []
    errors = 0

    async def one(client: httpx.AsyncClient, text: str, record: bool) -> None:
        nonlocal errors
        async with sem:
            t0 = time.perf_counter()
            try:
                r = await client.post(f"{url}/v1/classify", json={"input": [text]})
                ok = r.status_code == 200 and len(r.json()["data"]) == 1
            except httpx.HTTPError:
                ok = False
            if record:
                lat.append(time.perf_counter() - t0)
                errors += not ok

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*(one(client, texts[i % len(texts)], False) for i in range(2 * concurrency)))
        t0 = time.perf_counter()
        await asyncio.gather(*(one(client, texts[i % len(texts)], True) for i in range(n)))
        wall = time.perf_counter() - t0
    ms = np.asarray(lat) * 1000
    return {"requests": n, "rps": n / wall, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "errors": errors,
            "wall_s": wall}


def bench_classify(model: Path, texts: list[str], n: int, threads: int, wait_ms: float, max_batch: int) -> dict:
    import httpx

    out: dict = {str(c): {} for c in CONCURRENCY}
    for mode, args in (("batching", ["--batch-wait-ms", str(wait_ms), "--max-batch", str(max_batch)]),
                       ("no_batching", ["--no-batching"])):
        srv = Server(model, *args, threads=threads)
        try:
            for c in CONCURRENCY:
                before = httpx.get(f"{srv.url}/health").json().get("batching") or {}
                r = asyncio.run(load(srv.url, texts, c, n))
                after = httpx.get(f"{srv.url}/health").json().get("batching")
                if after:  # warm-up included: requests per predict call at this concurrency
                    calls = after["predict_calls"] - before.get("predict_calls", 0)
                    r["requests_per_predict_call"] = (after["requests"] - before.get("requests", 0)) / max(1, calls)
                out[str(c)][mode] = r
                print(f"classify c={c:>2} {mode:<11} {r['rps']:7.1f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                      f"p99 {r['p99_ms']:7.1f} ms  errors {r['errors']}"
                      + (f"  {r['requests_per_predict_call']:.1f} req/call" if after else ""), flush=True)
            runtime = srv.health["runtime"]
        finally:
            srv.close()
    return {"runtime": runtime, **out}


def bench_chat(model: Path, prompts: list[str], max_tokens: int, threads: int) -> dict:
    import httpx

    srv = Server(model, threads=threads)
    try:
        url = f"{srv.url}/v1/chat/completions"
        body = {"max_tokens": max_tokens, "temperature": 0}
        msg = lambda p: [{"role": "user", "content": p}]  # noqa: E731
        httpx.post(url, json={**body, "messages": msg("Hello."), "max_tokens": 4}, timeout=600)  # warm-up
        tokens, wall, errors, ttft = 0, 0.0, 0, []
        for p in prompts:
            t0 = time.perf_counter()
            r = httpx.post(url, json={**body, "messages": msg(p)}, timeout=600)
            wall += time.perf_counter() - t0
            if r.status_code != 200:
                errors += 1
                continue
            tokens += r.json()["usage"]["completion_tokens"]
            t0 = time.perf_counter()
            with httpx.stream("POST", url, json={**body, "messages": msg(p), "max_tokens": 2, "stream": True},
                              timeout=600) as s:
                for line in s.iter_lines():
                    if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                        ttft.append(time.perf_counter() - t0)
                        break
        res = {"runtime": srv.health["runtime"], "tokens_per_s": tokens / wall if wall else None,
               "requests": len(prompts), "completion_tokens": tokens, "max_tokens": max_tokens, "wall_s": wall,
               "ttft_ms_p50": 1000 * statistics.median(ttft) if ttft else None, "errors": errors}
        print(f"chat {srv.health['runtime']}: {res['tokens_per_s']:.1f} completion tokens/s over {tokens} tokens, "
              f"first token p50 {res['ttft_ms_p50']:.0f} ms, errors {errors}", flush=True)
        return res
    finally:
        srv.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default=None, help="classifier folder or run directory (default: see the docstring)")
    ap.add_argument("--threads", type=int, default=1, help="server model threads (default 1)")
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--skip-chat", action="store_true")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from llmopt.eval.generation import PROMPTS
    from llmopt.fsutil import atomic_write_json

    t_start = time.perf_counter()
    n = 64 if a.quick else 400
    texts = [json.loads(ln)["text"] for ln in (SST2 / "dev.jsonl").read_text().splitlines() if ln.strip()][:500]
    model, why = pick_classifier(a.model)
    print(f"classifier: {model} ({why})", flush=True)
    res: dict = {"benchmark": "serve", "quick": a.quick, "cpus": os.cpu_count(),
                 "load_average_at_start": list(os.getloadavg()), "threads": a.threads,
                 "classifier": {"path": str(model), "why": why}, "requests_per_level": n,
                 "batch_wait_ms": a.batch_wait_ms, "max_batch": a.max_batch,
                 "client": "httpx AsyncClient on 127.0.0.1, one text per request, connections = concurrency; "
                           "server: `python -m llmopt.cli serve` in its own process"}
    res["classify"] = bench_classify(model, texts, n, a.threads, a.batch_wait_ms, a.max_batch)
    res["classifier"]["runtime"] = res["classify"].pop("runtime")
    if not a.skip_chat:
        from llmopt.llm import smollm2_gguf, smollm2_path

        prompts, max_tokens = (PROMPTS[:2], 16) if a.quick else (PROMPTS[:6], 64)
        res["chat"] = {"model": "builtin smollm2-135m", **bench_chat(smollm2_path(), prompts, max_tokens,
                                                                     max(2, a.threads))}
        if not a.quick:
            try:
                import llama_cpp  # noqa: F401
            except ImportError:
                res["chat"]["llama_cpp"] = None
            else:
                res["chat"]["llama_cpp"] = {"model": smollm2_gguf().name,
                                            **bench_chat(smollm2_gguf(), prompts, max_tokens, max(2, a.threads))}
    res["wall_seconds"] = time.perf_counter() - t_start
    out = ROOT / "bench" / "results" / ("serve.quick.json" if a.quick else "serve.json")
    atomic_write_json(out, res)
    print(f"wrote {out.relative_to(ROOT)} in {res['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
