"""The review API: token, same-origin POSTs, every action, 4xx on bad input, concurrency, restart, export."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from llmopt.review.server import BackgroundServer, ReviewSession, create_app  # noqa: E402
from tests.review.conftest import FLIPPED, XSS  # noqa: E402

TOKEN = "t0ken-for-tests"
H = {"X-Review-Token": TOKEN}


@pytest.fixture
def client(session):
    return TestClient(create_app(session, TOKEN))


def post(client, **body):
    return client.post("/api/decisions", json=body, headers=H)


def test_every_request_needs_the_token(client):
    for path in ("/", "/page.js", "/api/meta", "/api/items", "/api/items/data.train.3"):
        assert client.get(path).status_code == 403
        assert client.get(path, headers={"X-Review-Token": "wrong"}).status_code == 403
    page = client.get(f"/?token={TOKEN}")
    assert page.status_code == 200 and "llmopt review" in page.text
    assert "HttpOnly" in page.headers["set-cookie"] and "SameSite=strict" in page.headers["set-cookie"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/page.js").status_code == 200  # the cookie the page load set
    js = client.get("/page.js").text
    assert not any(sink in js for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write"))
    # a change is refused with the cookie alone, or the token in the URL: it needs the header
    assert client.post("/api/decisions", json={"item_id": "data.train.3", "action": "accept"}).status_code == 403
    assert client.post(f"/api/decisions?token={TOKEN}",
                       json={"item_id": "data.train.3", "action": "accept"}).status_code == 403


def test_cross_origin_and_non_json_changes_are_refused(client, session):
    body = {"item_id": "data.train.3", "action": "accept"}
    assert client.post("/api/decisions", json=body, headers={**H, "Origin": "http://evil.example"}).status_code == 403
    assert client.post("/api/decisions", json=body, headers={**H, "Sec-Fetch-Site": "cross-site"}).status_code == 403
    form = client.post("/api/decisions", content="item_id=data.train.3&action=accept",
                       headers={**H, "Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    assert client.get("/api/decisions", headers=H).status_code == 405
    assert session.store.history() == []
    ok = client.post("/api/decisions", json=body, headers={**H, "Origin": "http://testserver"})
    assert ok.status_code == 200


def test_no_file_outside_the_run_dir_is_served(client, review_run):
    secret = review_run.parent / "secret.txt"
    secret.write_text("top secret")
    for path in ("/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/api/items/..%2F..%2Fetc%2Fpasswd",
                 "/page/../../../secret.txt", "/manifest.json", "/stages/00-data/artifacts/train.jsonl",
                 "/review/decisions.sqlite"):
        r = client.get(path, headers=H)
        assert r.status_code == 404, path
        assert "root:" not in r.text and "top secret" not in r.text


def test_items_list_filters_and_escaped_text(client):
    all_items = client.get("/api/items", headers=H).json()
    kinds = {it["kind"] for it in all_items["items"]}
    assert kinds == {"label_error", "prediction", "label_conflict", "augmented", "draft"}
    assert all_items["total"] == len(all_items["items"]) and all_items["first_todo"] == 0
    errs = client.get("/api/items?kind=label_error", headers=H).json()["items"]
    assert sorted(it["row"] for it in errs) == sorted(FLIPPED)  # the flipped rows and nothing else
    neg = client.get("/api/items?label=negative", headers=H).json()["items"]
    assert neg and all("negative" in (it["given_label"], it["model_label"]) for it in neg)
    assert client.get("/api/items?status=maybe", headers=H).status_code == 422
    xss = next(it for it in all_items["items"] if it["text"] == XSS)  # JSON carries it verbatim, the page escapes
    assert xss["kind"] == "prediction"
    preds = {it["row"]: it for it in all_items["items"] if it["kind"] == "prediction"}
    assert preds[2]["context"]["models_wrong"] == "2 of 2" and preds[5]["context"]["models_wrong"] == "1 of 2"
    assert preds[2]["score"] > preds[5]["score"]  # both models wrong: shown first
    assert preds[5]["context"]["model"] == "finetune" and set(preds[5]["context"]["predictions"]) == {
        "finetune", "tfidf"}
    page = client.get("/", headers=H).text
    assert "window.__xss" not in page  # item text never goes into the HTML the server sends


def test_every_action_is_stored_with_time_and_reviewer(client, session):
    r = post(client, item_id="data.train.3", action="accept", reviewer="ann")
    assert r.status_code == 200 and r.json()["previous"] is None
    assert post(client, item_id="data.train.10", action="relabel", label="positive").status_code == 200
    assert post(client, item_id="augment.aug.2", action="reject").status_code == 200
    assert post(client, item_id="prompt.draft.0", action="edit", text="This film was great.").status_code == 200
    latest = session.store.latest()
    assert latest["data.train.3"]["reviewer"] == "ann" and latest["data.train.3"]["at"]
    assert latest["data.train.10"]["label"] == "positive"
    assert latest["augment.aug.2"]["action"] == "reject"
    assert latest["prompt.draft.0"]["text"] == "This film was great."
    assert latest["data.train.10"]["reviewer"] == "tester"  # the session's default
    listed = {it["id"]: it for it in client.get("/api/items?status=done", headers=H).json()["items"]}
    assert set(listed) == set(latest)
    assert listed["data.train.10"]["decision"]["action"] == "relabel"
    assert client.get("/api/items?status=todo", headers=H).json()["total"] == len(session.items) - 4
    summary = json.loads((session.dir / "summary.json").read_text())
    assert summary["reviewed"] == 4 and summary["labels_changed"] == 1 and summary["texts_edited"] == 1
    assert summary["rejected"] == 1 and summary["by_kind"]["label_error"] == {"items": 3, "reviewed": 2}
    one = client.get("/api/items/data.train.10", headers=H).json()
    assert one["decision"]["label"] == "positive" and len(one["history"]) == 1


@pytest.mark.parametrize("body,status", [
    ({"item_id": "no.such.item", "action": "accept"}, 404),
    ({"item_id": "../../etc/passwd", "action": "accept"}, 404),
    ({"item_id": "data.train.3", "action": "delete"}, 422),
    ({"item_id": "data.train.3", "action": "relabel"}, 422),
    ({"item_id": "data.train.3", "action": "relabel", "label": "neutral"}, 422),
    ({"item_id": "prompt.draft.0", "action": "edit", "text": "   "}, 422),
    ({"item_id": "prompt.draft.0", "action": "edit", "text": "x" * 100_001}, 422),
    ({"item_id": "data.train.3", "action": "accept", "sneaky": 1}, 422),
    ({"item_id": "data.train.3", "action": "accept", "base": -1}, 422),
    ({"action": "accept"}, 422),
])
def test_bad_decisions_are_4xx_and_store_nothing(client, session, body, status):
    r = post(client, **body)
    assert r.status_code == status, r.text
    assert session.store.history() == []
    assert client.get("/api/items/no.such.item", headers=H).status_code == 404
    bad = client.post("/api/decisions", content="{not json", headers={**H, "Content-Type": "application/json"})
    assert bad.status_code == 422


def test_concurrent_decisions_on_one_item_are_all_kept(session):
    import httpx

    with BackgroundServer(session, token=TOKEN) as srv:
        results, errors = [], []

        def worker(k: int) -> None:
            try:
                with httpx.Client(base_url=srv.base, headers=H) as c:
                    r = c.post("/api/decisions", json={"item_id": "data.train.17", "action": "relabel",
                                                       "label": ["negative", "positive"][k % 2],
                                                       "reviewer": f"tab{k}", "base": 0})
                    results.append(r)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors and all(r.status_code == 200 for r in results)
    hist = session.store.history("data.train.17")
    assert len(hist) == 16 and {h["reviewer"] for h in hist} == {f"tab{k}" for k in range(16)}
    assert sum(1 for r in results if not r.json()["conflict"]) == 1  # every later tab is told it overrode one
    latest = session.store.latest()["data.train.17"]
    assert latest["seq"] == max(h["seq"] for h in hist)


def test_restart_in_the_middle_of_a_session_loses_nothing(review_run):
    import httpx

    s1 = ReviewSession(review_run, reviewer="ann")
    with BackgroundServer(s1, token=TOKEN) as srv:
        with httpx.Client(base_url=srv.base, headers=H) as c:
            assert c.post("/api/decisions", json={"item_id": "data.train.3", "action": "relabel",
                                                  "label": "negative"}).status_code == 200
            assert c.post("/api/decisions", json={"item_id": "augment.aug.1", "action": "accept"}).status_code == 200
    s2 = ReviewSession(review_run, reviewer="ann")  # a new process would do the same: read the store
    with BackgroundServer(s2, token="another") as srv:
        with httpx.Client(base_url=srv.base, headers={"X-Review-Token": "another"}) as c:
            done = c.get("/api/items?status=done").json()
            assert {it["id"] for it in done["items"]} == {"data.train.3", "augment.aug.1"}
            first = c.get("/api/items").json()["first_todo"]
            assert c.get("/api/items").json()["items"][first]["decision"] is None  # resumes at an undecided item
            assert c.post("/api/decisions", json={"item_id": "prompt.draft.0", "action": "edit",
                                                  "text": "Fixed."}).status_code == 200
    assert len(ReviewSession(review_run).store.history()) == 3


def test_a_killed_server_process_keeps_every_answered_decision(review_run):
    """`llmopt review` in a subprocess, SIGKILLed after answering; a new one sees every decision."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    import httpx

    def start() -> tuple[subprocess.Popen, str, str]:
        p = subprocess.Popen([sys.executable, "-m", "llmopt.cli", "review", str(review_run), "--labelcheck", "none"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 120
        for line in p.stdout:
            m = re.search(r"open: (http://127\.0\.0\.1:\d+)/\?token=(\S+)", line)
            if m:
                return p, m.group(1), m.group(2)
            assert time.monotonic() < deadline
        raise AssertionError(f"no URL printed; exit {p.wait()}")

    p, base, token = start()
    try:
        with httpx.Client(base_url=base, headers={"X-Review-Token": token}) as c:
            for _ in range(50):  # the socket is bound before the URL is printed; uvicorn may still be starting
                try:
                    c.get("/api/meta")
                    break
                except httpx.ConnectError:
                    time.sleep(0.1)
            assert c.get("/api/items").status_code == 200
            for iid in ("evaluate.pred.2", "evaluate.pred.5", "curate.label_conflict.0"):
                assert c.post("/api/decisions", json={"item_id": iid, "action": "accept"}).status_code == 200
            assert c.get("/", headers={"X-Review-Token": "nope"}).status_code == 403
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    p, base, token = start()
    try:
        with httpx.Client(base_url=base, headers={"X-Review-Token": token}) as c:
            for _ in range(50):
                try:
                    done = c.get("/api/items?status=done").json()
                    break
                except httpx.ConnectError:
                    time.sleep(0.1)
            assert {it["id"] for it in done["items"]} == {"evaluate.pred.2", "evaluate.pred.5",
                                                          "curate.label_conflict.0"}
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=20)


def test_export_is_a_data_source_and_the_report_shows_the_review(client, session, review_run, tmp_path):
    from llmopt.review.export import export
    from llmopt.stages.data import DataConfig, load_splits

    assert post(client, item_id="data.train.3", action="relabel", label="negative").status_code == 200
    assert post(client, item_id="data.train.10", action="reject").status_code == 200
    assert post(client, item_id="data.train.17", action="edit", text="a dull plot", label="negative").status_code == 200
    assert post(client, item_id="evaluate.draft.smollm.1", action="edit", text="negative").status_code == 200
    assert post(client, item_id="prompt.draft.0", action="edit", text="This film was great.").status_code == 200
    assert post(client, item_id="evaluate.pred.2", action="accept").status_code == 200
    out = tmp_path / "export"
    c = export(session, out)
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    source = [json.loads(line) for line in
              (review_run / "stages/00-data/artifacts/train.jsonl").read_text().splitlines()]
    assert len(train) == len(source) - 1 == c["train_rows"] and c["train_dropped"] == 1 and c["train_changed"] == 2
    by_row = {r["provenance"]["row"]: r for r in train}
    assert 10 not in by_row
    assert by_row[3]["label"] == "negative" and by_row[3]["provenance"]["label_before"] == source[3]["label"]
    assert by_row[17]["text"] == "a dull plot" and by_row[17]["provenance"]["text_before"] == source[17]["text"]
    assert by_row[0] == {"text": source[0]["text"], "label": source[0]["label"],
                         "provenance": {"stage": "data", "row": 0}}
    sft = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    assert {(r["prompt"], r["response"]) for r in sft} == {
        ("Write a one-line review of a good film.", "This film was great."),
        (source and json.loads((review_run / "stages/04-evaluate/artifacts/predictions/smollm.jsonl")
                               .read_text().splitlines()[1])["text"], "negative")}
    reviewed = [json.loads(line) for line in (out / "reviewed.jsonl").read_text().splitlines()]
    assert len(reviewed) == 5 and {r["provenance"]["split"] for r in reviewed} >= {"train", "test"}
    # the data stage reads it (extra keys ignored)
    cfg = DataConfig(id="data", source={"train": str(out / "train.jsonl"), "dev": str(out / "dev.jsonl"),
                                        "test": str(out / "test.jsonl")}, length_tokenizer=None)
    splits, _ = load_splits(cfg, 0)
    assert len(splits["train"]) == len(train) and splits["train"][3].label == "negative"
    # the report shows what the review changed
    from llmopt.report.render import build_report

    for done in review_run.glob("stages/*/DONE"):  # the fixture's stages have no metrics for their sections
        done.unlink()
    build_report(review_run)
    md = (review_run / "report" / "report.md").read_text()
    assert "## Human review" in md and "6 of 18 review items decided" in md
    assert "1 labels changed, 3 texts edited, 1 rejected" in md and "Exported to" in md


def test_cli_export_and_bad_folds(review_run, capsys):
    from llmopt.cli import main

    assert main(["review", str(review_run), "--export", "--labelcheck", "none"]) == 0
    out = capsys.readouterr().out
    assert "0 of 15 items reviewed" in out and (review_run / "review/export/train.jsonl").is_file()
    assert main(["review", str(review_run), "--folds", "1"]) == 2
