"""The review web server: a FastAPI app over one run directory's review items and decision store (no
`from __future__ import annotations` here: FastAPI reads the route annotations at runtime).

Safety: uvicorn binds 127.0.0.1 only; every request carries the random token (the page's first load has it in the
URL and gets it back as an HttpOnly SameSite=Strict cookie for its script; the API takes the X-Review-Token
header); state changes are POSTs with the header, a JSON body and no foreign Origin / Sec-Fetch-Site; the only
files served are the page's two files from this package (item text travels as JSON and the page puts it into the
DOM with textContent, so markup in the data is shown as text); an unknown item id is a 404.
"""


import secrets
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llmopt.review.sources import ItemSource, ReviewItem, RunView, collect, default_sources
from llmopt.review.store import ACTIONS, DecisionStore, summarize

COOKIE = "llmopt_review"
MAX_TEXT = 100_000


class ReviewInputError(ValueError):
    """A decision the API refuses: `status` is the HTTP code (404 unknown item, 422 bad field)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ReviewSession:
    """The items of one run directory, its label set and its decision store (run_dir/review/)."""

    def __init__(self, run_dir: Path, reviewer: str = "reviewer", sources: list[ItemSource] | None = None,
                 train_stage: str | None = None, method: str = "tfidf", folds: int = 5,
                 seed: int | None = None) -> None:
        from llmopt.fsutil import read_json

        self.run_dir = Path(run_dir).resolve()
        self.run = RunView(self.run_dir, train_stage)
        if seed is None:
            manifest = self.run_dir / "manifest.json"
            seed = int(read_json(manifest).get("seed") or 0) if manifest.is_file() else 0
        self.items: list[ReviewItem] = collect(self.run, sources if sources is not None
                                               else default_sources(method, folds, seed))
        self.by_id = {it.id: it for it in self.items}
        self.labels = self.run.labels()
        self.reviewer = reviewer
        self.dir = self.run_dir / "review"
        self.store = DecisionStore(self.dir / "decisions.sqlite")
        self._summary_lock = threading.Lock()

    def decide(self, item_id: str, action: str, reviewer: str | None = None, label: str | None = None,
               text: str | None = None, base: int | None = None) -> dict[str, Any]:
        """Validate and store one decision (committed before this returns), then refresh summary.json."""
        item = self.by_id.get(item_id)
        if item is None:
            raise ReviewInputError(404, f"unknown item id {item_id!r}")
        if action not in ACTIONS:
            raise ReviewInputError(422, f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        if action == "relabel":
            if not isinstance(label, str) or (self.labels and label not in self.labels):
                raise ReviewInputError(422, f"relabel needs `label`, one of {self.labels}")
            text = None
        elif action == "edit":
            if not isinstance(text, str) or not text.strip():
                raise ReviewInputError(422, "edit needs a non-empty `text`")
            if len(text) > MAX_TEXT:
                raise ReviewInputError(422, f"text is {len(text):,} characters; at most {MAX_TEXT:,}")
            if label is not None and self.labels and label not in self.labels:
                raise ReviewInputError(422, f"label {label!r} is not one of {self.labels}")
        else:
            label, text = None, None
        who = (reviewer or self.reviewer).strip()[:100] or self.reviewer
        d = self.store.add(item_id, item.kind, action, who, label=label, text=text, base=base)
        self.write_summary()
        return d

    def summary(self) -> dict[str, Any]:
        return summarize(self.items, self.store.latest(), len(self.store.history()))

    def write_summary(self) -> dict[str, Any]:
        """run_dir/review/summary.json: what the report shows (items, reviewed, what changed)."""
        from llmopt.fsutil import atomic_write_json, read_json

        with self._summary_lock:
            s = self.summary()
            old = self.dir / "summary.json"
            if old.is_file():
                prev = read_json(old)
                if "export" in prev:
                    s["export"] = prev["export"]
            atomic_write_json(old, s)
            return s

    def view(self, it: ReviewItem, latest: dict[str, dict]) -> dict[str, Any]:
        d = latest.get(it.id)
        return {**it.public(), "decision": {k: d[k] for k in ("seq", "action", "label", "text", "reviewer", "at")}
                if d else None}


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: str = Field(max_length=500)
    action: str = Field(max_length=20)
    label: str | None = Field(None, max_length=500)
    text: str | None = None
    reviewer: str | None = Field(None, max_length=100)
    base: int | None = Field(None, ge=0)


def _page_file(name: str) -> bytes:
    return (resources.files("llmopt.review") / "page" / name).read_bytes()


_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def create_app(session: ReviewSession, token: str) -> Any:
    """The FastAPI app; every route needs `token` (see the module docstring)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    def _ok(given: str | None) -> bool:
        return bool(given) and secrets.compare_digest(given.encode(), token.encode())

    @app.middleware("http")
    async def guard(request: Request, call_next):  # noqa: ANN202
        header = request.headers.get("x-review-token")
        if request.method in ("GET", "HEAD"):
            allowed = _ok(header) or _ok(request.query_params.get("token")) or _ok(request.cookies.get(COOKIE))
        else:  # a change: the header only (a cookie or URL would let another site's form or link act)
            allowed = _ok(header)
        if not allowed:
            resp: Any = JSONResponse({"detail": "missing or wrong token: open the URL `llmopt review` printed"},
                                     status_code=403)
        elif request.method not in ("GET", "HEAD") and not _same_origin(request):
            resp = JSONResponse({"detail": "cross-origin request refused"}, status_code=403)
        elif request.method == "POST" and not request.headers.get("content-type", "").startswith("application/json"):
            resp = JSONResponse({"detail": "send JSON (Content-Type: application/json)"}, status_code=415)
        else:
            resp = await call_next(request)
        resp.headers["Content-Security-Policy"] = _CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Frame-Options"] = "DENY"
        return resp

    @app.get("/")
    def page(request: Request) -> Response:
        resp = Response(_page_file("index.html"), media_type="text/html; charset=utf-8")
        if _ok(request.query_params.get("token")):
            resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return resp

    @app.get("/page.js")
    def script() -> Response:
        return Response(_page_file("page.js"), media_type="text/javascript; charset=utf-8")

    @app.get("/api/meta")
    def meta() -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for it in session.items:
            kinds[it.kind] = kinds.get(it.kind, 0) + 1
        return {"run_dir": session.run_dir.name, "labels": session.labels, "kinds": kinds,
                "reviewer": session.reviewer, "actions": list(ACTIONS), "summary": session.summary()}

    @app.get("/api/items")
    def items(kind: str = "", label: str = "", status: str = "all", offset: int = 0, limit: int = 100) -> Any:
        if status not in ("all", "todo", "done"):
            return JSONResponse({"detail": "status: all, todo or done"}, status_code=422)
        latest = session.store.latest()
        picked = [it for it in session.items if (not kind or it.kind == kind)
                  and (not label or it.given_label == label or it.model_label == label)
                  and (status == "all" or (status == "done") == (it.id in latest))]
        offset, limit = max(0, offset), min(max(1, limit), 500)
        first_todo = next((i for i, it in enumerate(picked) if it.id not in latest), None)
        return {"total": len(picked), "offset": offset, "first_todo": first_todo,
                "reviewed": sum(1 for it in picked if it.id in latest),
                "items": [session.view(it, latest) for it in picked[offset:offset + limit]]}

    @app.get("/api/items/{item_id}")
    def item(item_id: str) -> Any:
        it = session.by_id.get(item_id)
        if it is None:
            return JSONResponse({"detail": f"unknown item id {item_id!r}"}, status_code=404)
        return {**session.view(it, session.store.latest()), "history": session.store.history(item_id)}

    @app.post("/api/decisions")
    def decide(body: DecisionIn) -> Any:
        try:
            d = session.decide(body.item_id, body.action, body.reviewer, body.label, body.text, body.base)
        except ReviewInputError as e:
            return JSONResponse({"detail": str(e)}, status_code=e.status)
        return {**d, "progress": {"items": len(session.items), "reviewed": len(session.store.latest())}}

    return app


def _same_origin(request: Any) -> bool:
    """Origin (when the client sends one) is this server, and Sec-Fetch-Site is not cross-site."""
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
        return False
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def bind_loopback(port: int = 0):  # noqa: ANN201 — socket.socket
    """A listening socket on 127.0.0.1 (port 0: a free one)."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock


class BackgroundServer:
    """uvicorn on 127.0.0.1 in a thread (tests, benchmarks): `with BackgroundServer(session) as srv: srv.url`."""

    def __init__(self, session: ReviewSession, token: str | None = None, port: int = 0) -> None:
        self.session, self.token = session, token or secrets.token_urlsafe(24)
        self.sock = bind_loopback(port)
        self.port = self.sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/?token={self.token}"

    def __enter__(self) -> "BackgroundServer":
        import time

        import uvicorn

        cfg = uvicorn.Config(create_app(self.session, self.token), log_level="warning", access_log=False,
                             lifespan="off")
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def serve(session: ReviewSession, port: int = 0, open_browser: bool = False) -> None:
    """Serve until Ctrl-C, printing the URL with its token."""
    import uvicorn

    token = secrets.token_urlsafe(24)
    sock = bind_loopback(port)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/?token={token}"
    s = session.summary()
    kinds = ", ".join(f"{k} {v['items']}" for k, v in s["by_kind"].items()) or "none"
    print(f"review: {s['items']} items ({kinds}), "
          f"{s['reviewed']} reviewed; decisions in {session.store.path}")
    print(f"open: {url}\n(Ctrl-C stops; every decision is already saved)", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    cfg = uvicorn.Config(create_app(session, token), log_level="warning", access_log=False, lifespan="off")
    try:
        uvicorn.Server(cfg).run(sockets=[sock])
    finally:
        sock.close()
