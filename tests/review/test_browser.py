"""The review page in a real browser (Playwright driving Debian's chromium, headless)."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; it is in the `test` extra)")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: `apt-get install chromium` (make test does it when run as root)")
    return sync_playwright


def test_keyboard_review_survives_a_reload(session, tmp_path):
    from llmopt.review.server import BackgroundServer
    from tests.review.conftest import XSS

    sync_playwright = _browser_or_skip()
    dialogs: list[str] = []
    with BackgroundServer(session) as srv, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(srv.url)
            page.wait_for_selector(".card.current")
            assert page.inner_text("#progress") == f"0 of {len(session.items)} reviewed"
            first = page.get_attribute(".card.current", "data-id")
            assert first == session.items[0].id  # the top-ranked label error

            page.keyboard.press("a")  # accept
            page.wait_for_selector(f'.card[data-id="{first}"] .decision')
            second = page.get_attribute(".card.current", "data-id")
            assert second != first
            page.keyboard.press("1")  # relabel as the first label
            page.wait_for_selector(f'.card[data-id="{second}"] .decision')
            assert "relabel → negative" in page.inner_text(f'.card[data-id="{second}"] .decision')

            # the <script>/onerror payload in a prediction is shown as text and never runs
            xss_card = page.locator(".card .text", has_text="window.__xss = 1")
            assert xss_card.count() == 1 and xss_card.inner_text() == XSS
            assert page.evaluate("window.__xss") is None

            # two fast key presses: two different items, in order, and no false "another tab" notice
            third = page.get_attribute(".card.current", "data-id")
            page.keyboard.press("a")
            page.keyboard.press("x")
            page.wait_for_selector(f'.card[data-id="{third}"] .decision')
            fourth = page.get_attribute(f'.card[data-id="{third}"] + .card', "data-id")
            page.wait_for_selector(f'.card[data-id="{fourth}"] .decision.reject')
            assert not page.is_visible("#toast")

            page.select_option("#f-kind", "draft")
            page.wait_for_selector('.card.current[data-id$="draft.smollm.1"], .card.current[data-id$="draft.0"]')
            draft = page.get_attribute(".card.current", "data-id")
            page.keyboard.press("e")
            page.wait_for_selector("#editor")
            page.fill("#editor", "Edited by a person <b>bold?</b>")
            page.keyboard.press("Control+Enter")
            page.wait_for_selector(f'.card[data-id="{draft}"] .decision')
            assert page.inner_text("#progress") == f"5 of {len(session.items)} reviewed"

            page.reload()  # everything comes back from the server; the draft filter from localStorage
            page.wait_for_selector(f'.card[data-id="{draft}"] .decision')
            assert page.input_value("#f-kind") == "draft"
            assert page.inner_text(f'.card[data-id="{draft}"] .text') == "Edited by a person <b>bold?</b>"
            page.select_option("#f-kind", "")
            page.wait_for_selector(f'.card[data-id="{first}"] .decision')
            assert "accept" in page.inner_text(f'.card[data-id="{first}"] .decision')
            assert "relabel → negative" in page.inner_text(f'.card[data-id="{second}"] .decision')
            assert page.inner_text("#progress") == f"5 of {len(session.items)} reviewed"
            # resumes at the first item not yet reviewed
            cur = page.get_attribute(".card.current", "data-id")
            assert cur not in (first, second, third, fourth, draft)
            shot = tmp_path / "review.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
    latest = session.store.latest()
    assert {k: v["action"] for k, v in latest.items()} == {first: "accept", second: "relabel", third: "accept",
                                                           fourth: "reject", draft: "edit"}
    assert len(session.store.history()) == 5  # no item decided twice by the fast keys
    assert latest[second]["label"] == "negative" and latest[draft]["text"] == "Edited by a person <b>bold?</b>"
    assert not dialogs
