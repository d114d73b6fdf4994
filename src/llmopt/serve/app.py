"""`llmopt serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) for a model llmopt produced (no
`from __future__ import annotations` here: FastAPI reads the route annotations at runtime).

Routes: POST /v1/chat/completions (chat template applied; `stream: true` sends server-sent events `data: {...}`
ending `data: [DONE]`), POST /v1/completions, POST /v1/classify ({"input": text or [texts]} → label and
probabilities per text), GET /v1/models, GET /health.

Safety and limits: bound to 127.0.0.1 unless told otherwise; with an API key every route but /health needs
`Authorization: Bearer <key>`; request bodies over `max_body_bytes` get a 413 (checked on the declared length and on
the bytes actually received); max_tokens over `max_tokens_limit`, or past the model's context, is a 400. Errors
have OpenAI's shape, {"error": {"message", "type", "param", "code"}}, with `param` naming the bad field. The model
runs in one worker thread behind a lock (neither torch with a KV cache nor llama.cpp may be called from two threads
at once), off the event loop, so /health answers while a generation runs; a request that makes the model raise
gets a 500 and the server goes on serving.

Fault knob for client tests: env LLMOPT_SERVE_FAULT=CODE:N (e.g. 503:2 or 429:1) makes the first N requests to
/v1/* answer CODE with an OpenAI error body (off by default; `fault=` of create_app / start_in_thread does the same).
"""

import asyncio
import json
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmopt.serve.schemas import ChatRequest, ClassifyRequest, CompletionRequest, error_body, usage

FAULT_ENV = "LLMOPT_SERVE_FAULT"


@dataclass
class ServeOptions:
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    max_tokens_limit: int = 1024
    max_inputs: int = 256  # texts per /v1/classify request
    batching: bool = True
    max_batch: int = 32
    batch_wait_ms: float = 5.0
    name: str | None = None  # the model id /v1/models lists (default: the folder's name)
    fault: str | None = None  # CODE:N, see the module docstring (default: $LLMOPT_SERVE_FAULT)


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None,
                 type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.type = status, message, param, type_


def parse_fault(spec: str | None) -> tuple[int, int]:
    """'503:2' → (503, 2); None or '' → (0, 0)."""
    if not spec:
        return 0, 0
    try:
        code, n = spec.split(":")
        code_i, n_i = int(code), int(n)
    except ValueError:
        raise ValueError(f"{FAULT_ENV}={spec!r}: write CODE:N, e.g. 503:2") from None
    if not 400 <= code_i <= 599 or n_i < 0:
        raise ValueError(f"{FAULT_ENV}={spec!r}: CODE is an HTTP error status (400-599), N >= 0")
    return code_i, n_i


class Worker:
    """One thread that runs every model call, behind a lock."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="llmopt-serve-model")
        self.lock = threading.Lock()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        def locked() -> Any:
            with self.lock:
                return fn(*args)

        return await asyncio.get_running_loop().run_in_executor(self.pool, locked)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class BodyLimit:
    """ASGI middleware: a 413 for a body over `limit` bytes, by Content-Length or by the bytes received."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._reject(send, int(length))
        # read the whole body here (at most `limit` bytes), then hand it on: a chunked body without a
        # Content-Length is cut off at the limit too (an error raised mid-read would reach FastAPI as a 400)
        chunks, seen, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":  # the client went away
                return
            chunks.append(msg.get("body", b""))
            seen += len(chunks[-1])
            more = msg.get("more_body", False)
            if seen > self.limit:
                return await self._reject(send, seen)
        body, sent = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect as the app expects

        await self.app(scope, replay, send)

    async def _reject(self, send: Callable, size: int) -> None:
        body = json.dumps(error_body(f"request body is {size:,}+ bytes; this server accepts at most {self.limit:,} "
                                     "(llmopt serve --max-body-bytes)", param=None,
                                     code="request_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _param(loc: tuple | list) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    # pydantic puts the union member tried in the path (str, list[str], function-after[...]): not a field name
    parts = [p for p in parts if not (p in ("str", "list[str]", "int", "float", "bool") or "[" in p)]
    return ".".join(parts) or None


def create_app(model: Any, opts: ServeOptions | None = None) -> Any:
    """The FastAPI app over one loaded model (serve.models: CausalModel or ClassifierModel)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    from llmopt.serve.batching import MicroBatcher

    opts = opts or ServeOptions()
    name = opts.name or Path(getattr(model, "path", "model")).name
    fault_code, fault_left = parse_fault(opts.fault if opts.fault is not None else os.environ.get(FAULT_ENV))
    fault = {"code": fault_code, "left": fault_left}
    worker = Worker()
    batcher = (MicroBatcher(model.predict_proba, worker.run, opts.max_batch, opts.batch_wait_ms)
               if model.kind == "classifier" and opts.batching else None)
    counts = {"requests": 0, "errors": 0, "predict_calls": 0}
    created = int(time.time())

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.model, app.state.worker, app.state.batcher, app.state.counts = model, worker, batcher, counts

    def err(status: int, message: str, param: str | None = None, type_: str = "invalid_request_error",
            code: str | None = None) -> JSONResponse:
        if status >= 500:
            counts["errors"] += 1
        return JSONResponse(error_body(message, type_, param, code), status_code=status)

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError) -> JSONResponse:
        return err(e.status, e.message, e.param, e.type)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        if first.get("type") == "json_invalid":
            return err(400, f"request body is not valid JSON ({first.get('msg', '')})")
        param = _param(first.get("loc", ()))
        msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        more = f" (and {len(e.errors()) - 1} more problems)" if len(e.errors()) > 1 else ""
        return err(400, f"{param or 'body'}: {msg}{more}", param)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return err(e.status_code, str(e.detail), type_="not_found_error" if e.status_code == 404
                   else "invalid_request_error")

    @app.middleware("http")
    async def guard(request: Request, call_next):  # noqa: ANN202
        path = request.url.path
        if opts.api_key and path != "/health":
            given = request.headers.get("authorization", "")
            token = given[7:] if given[:7].lower() == "bearer " else ""
            if not (token and secrets.compare_digest(token.encode(), opts.api_key.encode())):
                return err(401, "missing or wrong API key: send Authorization: Bearer <key>", code="invalid_api_key")
        if path.startswith("/v1/"):
            counts["requests"] += 1
            if fault["left"] > 0:
                fault["left"] -= 1
                return err(fault["code"], f"injected fault ({FAULT_ENV}): try again", type_="server_error")
        return await call_next(request)

    app.add_middleware(BodyLimit, limit=opts.max_body_bytes)

    async def on_model(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await worker.run(fn, *args)
        except APIError:
            raise
        except Exception as e:  # noqa: BLE001 — this request fails; the server goes on
            raise APIError(500, f"the model failed on this request ({type(e).__name__}: {e})",
                           type_="server_error") from None

    def need(kind: str, route: str) -> Any:
        if model.kind != kind:
            other = "/v1/classify" if model.kind == "classifier" else "/v1/chat/completions or /v1/completions"
            raise APIError(400, f"{route}: this server holds a {model.kind} ({name}); use {other}", "model")
        return model

    def budget(prompt_len: int, asked: int | None, param: str, prompt_param: str) -> int:
        if asked is not None and asked > opts.max_tokens_limit:
            raise APIError(400, f"{param}: {asked} is over this server's limit of {opts.max_tokens_limit} "
                           "(llmopt serve --max-tokens-limit)", param)
        room = model.n_ctx - prompt_len
        if room < 1:
            raise APIError(400, f"{prompt_param}: the prompt is {prompt_len} tokens; the model's context is "
                           f"{model.n_ctx}", prompt_param)
        if asked is not None and asked > room:
            raise APIError(400, f"{param}: {asked} new tokens after a {prompt_len}-token prompt exceed the model's "
                           f"context of {model.n_ctx} (at most {room})", param)
        return asked if asked is not None else min(opts.max_tokens_limit, room)

    def prompt_of(fn: Callable[..., list[int]], arg: Any, param: str) -> Callable[[], list[int]]:
        def build() -> list[int]:
            try:
                return fn(arg)
            except Exception as e:  # noqa: BLE001 — a template that refuses these messages
                raise APIError(400, f"{param}: could not build the prompt ({type(e).__name__}: {e})", param) from None
        return build

    def run_all(ids: list[int], max_tokens: int, body: Any) -> tuple[str, str, int, int]:
        text, last = [], None
        for ch in model.generate(ids, max_tokens, body.temperature, body.top_p, body.stops(), body.seed):
            text.append(ch.text)
            last = ch
        return "".join(text), last.finish_reason, last.prompt_tokens, last.completion_tokens

    def sse(ids: list[int], max_tokens: int, body: Any, frame: Callable[..., dict]) -> StreamingResponse:
        async def events():  # noqa: ANN202
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue = asyncio.Queue()
            cancel = threading.Event()

            def emit(item: Any) -> None:
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, item)
                except RuntimeError:  # the loop is gone (server stopping)
                    cancel.set()

            def work() -> None:
                try:
                    for ch in model.generate(ids, max_tokens, body.temperature, body.top_p, body.stops(), body.seed,
                                             cancelled=cancel.is_set):
                        emit(ch)
                except Exception as e:  # noqa: BLE001 — reported in the stream
                    emit(e)
                finally:
                    emit(None)

            job = worker.run(work)
            task = asyncio.ensure_future(job)
            try:
                first = frame(None)
                if first:
                    yield f"data: {json.dumps(first)}\n\n"
                while True:
                    item = await queue.get()
                    if item is None:
                        break
                    if isinstance(item, Exception):
                        counts["errors"] += 1
                        body_ = error_body(f"the model failed during generation ({type(item).__name__}: {item})",
                                           "server_error")
                        yield f"data: {json.dumps(body_)}\n\n"
                        break
                    if item.text or item.finish_reason:
                        yield f"data: {json.dumps(frame(item))}\n\n"
                    if item.finish_reason and body.stream_options and body.stream_options.include_usage:
                        yield f"data: {json.dumps(frame(item, usage_only=True))}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                cancel.set()
                await asyncio.shield(task)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        out = {"status": "ok", "model": name, "kind": model.kind, "runtime": model.runtime, **counts}
        if batcher is not None:
            out["batching"] = batcher.stats()
        return out

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "llmopt",
                                            "kind": model.kind, "runtime": model.runtime}]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest) -> Any:
        need("causal", "/v1/chat/completions")
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        ids = await on_model(prompt_of(model.chat_prompt, messages, "messages"))
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        max_tokens = budget(len(ids), body.limit(), param, "messages")
        cid, now = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        if body.stream:
            def frame(ch: Any, usage_only: bool = False) -> dict:
                base = {"id": cid, "object": "chat.completion.chunk", "created": now, "model": name}
                if usage_only:
                    return {**base, "choices": [], "usage": usage(ch.prompt_tokens, ch.completion_tokens)}
                if ch is None:
                    delta: dict[str, Any] = {"role": "assistant", "content": ""}
                else:
                    delta = {"content": ch.text} if ch.text else {}
                return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                             "finish_reason": ch.finish_reason if ch else None}]}
            return sse(ids, max_tokens, body, frame)
        text, finish, n_in, n_out = await on_model(run_all, ids, max_tokens, body)
        return {"id": cid, "object": "chat.completion", "created": now, "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                             "finish_reason": finish}],
                "usage": usage(n_in, n_out)}

    @app.post("/v1/completions")
    async def complete(body: CompletionRequest) -> Any:
        need("causal", "/v1/completions")
        prompt = body.text()
        ids = await on_model(prompt_of(model.text_prompt, prompt, "prompt"))
        max_tokens = budget(len(ids), body.limit(), "max_tokens", "prompt")
        cid, now = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        if body.stream:
            def frame(ch: Any, usage_only: bool = False) -> dict | None:
                base = {"id": cid, "object": "text_completion", "created": now, "model": name}
                if usage_only:
                    return {**base, "choices": [], "usage": usage(ch.prompt_tokens, ch.completion_tokens)}
                if ch is None:
                    return {**base, "choices": [{"index": 0, "text": prompt, "logprobs": None,
                                                 "finish_reason": None}]} if body.echo else None
                return {**base, "choices": [{"index": 0, "text": ch.text, "logprobs": None,
                                             "finish_reason": ch.finish_reason}]}
            return sse(ids, max_tokens, body, frame)
        text, finish, n_in, n_out = await on_model(run_all, ids, max_tokens, body)
        return {"id": cid, "object": "text_completion", "created": now, "model": name,
                "choices": [{"index": 0, "text": (prompt if body.echo else "") + text, "logprobs": None,
                             "finish_reason": finish}],
                "usage": usage(n_in, n_out)}

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest) -> Any:
        need("classifier", "/v1/classify")
        texts = body.texts()
        if len(texts) > opts.max_inputs:
            raise APIError(400, f"input: {len(texts)} texts; at most {opts.max_inputs} per request", "input")
        if batcher is not None:
            try:
                probs = await batcher.submit(texts)
            except APIError:
                raise
            except Exception as e:  # noqa: BLE001
                raise APIError(500, f"the model failed on this request ({type(e).__name__}: {e})",
                               type_="server_error") from None
        else:
            counts["predict_calls"] += 1
            probs = await on_model(model.predict_proba, texts)
        labels = model.labels
        data = [{"index": i, "label": labels[int(p.argmax())],
                 "probabilities": {lab: float(v) for lab, v in zip(labels, p)}} for i, p in enumerate(probs)]
        return {"object": "list", "model": name, "data": data}

    return app


# --- running it ------------------------------------------------------------------------------------------------------

def _load(model: Any, threads: int, allow_pickle: bool = False) -> Any:
    if isinstance(model, (str, Path)):
        from llmopt.serve.models import load_served

        return load_served(Path(model), threads=threads, allow_pickle=allow_pickle)
    return model


def start_in_thread(model: Any, threads: int = 1, port: int = 0, **opts: Any) -> tuple[str, Callable[[], None]]:
    """Serve `model` (a model path, or a loaded serve.models object) with uvicorn on 127.0.0.1 in a background thread
    (port 0: a free one); returns (base URL like http://127.0.0.1:PORT, stop). `opts` are ServeOptions fields,
    e.g. api_key=, fault="503:2", max_body_bytes=, batching=. For tests and benchmarks."""
    import uvicorn

    from llmopt.review.server import bind_loopback

    loaded = _load(model, threads)
    app = create_app(loaded, ServeOptions(**opts))
    sock = bind_loopback(port)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="llmopt-serve")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        sock.close()
        raise RuntimeError("llmopt serve: the server did not start within 30 s")

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        app.state.worker.close()
        if loaded is not model:
            loaded.close()

    return url, stop


def serve(model_path: Path, host: str = "127.0.0.1", port: int = 8000, threads: int = 1,
          allow_pickle: bool = False, why: str = "", **opts: Any) -> None:
    """Load the model and serve until Ctrl-C."""
    import uvicorn

    from llmopt.serve.models import log

    model = _load(model_path, threads, allow_pickle)
    app = create_app(model, ServeOptions(**opts))
    shown = f"[{host}]" if ":" in host else host
    log(f"{model.kind} {model_path} ({model.runtime}){f', {why}' if why else ''}")
    routes = "/v1/classify" if model.kind == "classifier" else "/v1/chat/completions, /v1/completions"
    log(f"http://{shown}:{port}/v1 — {routes}, /v1/models, /health"
        + ("; API key required" if opts.get("api_key") else "") + " (Ctrl-C stops)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        log(f"warning: listening on {host}, reachable from other machines"
            + ("" if opts.get("api_key") else " without an API key (--api-key-env)"))
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    finally:
        app.state.worker.close()
        model.close()
