"""The feed explorer page (`/ui`) in headless Chromium against a real uvicorn server on 127.0.0.1.

The server runs in a thread of the test process over a seeded test service (so it reuses the
session's compiled model); the browser is Debian's chromium driven by Playwright.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from phoenix_recsys.serve.api import create_app
from phoenix_recsys.testing.net import free_port

CHROMIUM = "/usr/bin/chromium"
K = 5
TIMEOUT_MS = 60_000

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


@pytest.fixture
def make_server(service_factory) -> Iterator[object]:
    """`make_server(**settings)`: a uvicorn server on a free loopback port over a fresh seeded service;
    returns (url, service). Servers stop after the test."""
    import uvicorn

    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def make(**overrides: object) -> tuple[str, object]:
        service = service_factory(disabled_filters=("own_post",), **overrides)
        port = free_port()
        srv = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        running.append((srv, thread))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/healthz", timeout=1.0)
                return url, service
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("uvicorn did not start within 30 s")

    yield make
    for srv, thread in running:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def server(make_server) -> tuple[str, object]:
    """The default test server (writes need the key, reads are open)."""
    return make_server()


@pytest.fixture
def page() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            pg = browser.new_page()
            pg.set_default_timeout(TIMEOUT_MS)
            yield pg
        finally:
            browser.close()


def _active_user(service) -> int:
    return next(u for u in range(40) if len(service.user_model_history(u)) >= 3)


def _authors(page) -> list[int]:
    return [int(a) for a in page.locator("#feed li.item").evaluate_all("els => els.map(e => e.dataset.authorId)")]


def test_ui_redirect_and_static_files(server):
    url, _ = server
    r = httpx.get(url + "/ui", follow_redirects=False)
    assert r.status_code in (307, 308) and r.headers["location"].endswith("/ui/")
    for name, kind in (("", "text/html"), ("app.js", "javascript"), ("style.css", "text/css")):
        r = httpx.get(f"{url}/ui/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"], name


def test_page_shows_feed_and_block_removes_author(server, page, api_key):
    url, service = server
    user = _active_user(service)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(url + "/ui")
    page.wait_for_function("document.getElementById('health').textContent.includes('bundle')")
    page.fill("#user", str(user))
    page.fill("#k", str(K))
    page.click("#load")
    page.wait_for_function(f"document.querySelectorAll('#feed li.item').length === {K}")
    first = page.locator("#feed li.item").first
    # The explanation is on the page: source, probabilities, contributions and multipliers.
    assert first.locator(".badge").first.inner_text() in {"in_network", "out_of_network", "popular", "fresh"}
    assert first.locator("table.probs tr").count() == 3
    assert "div" in first.locator(".score").inner_text() and "oon" in first.locator(".score").inner_text()
    author = _authors(page)[0]

    # Without the key the write is refused, and the page says why.
    first.locator("button.block").click()
    page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "401" in page.inner_text("#status")
    assert author not in service.store.blocked_or_muted_authors(user)

    page.fill("#apikey", api_key)
    page.click("#savekey")
    assert page.evaluate("localStorage.getItem('phoenix-recsys.api-key')") == api_key

    # An engagement is recorded and the next feed follows it (an engaged post is not served again).
    history = len(service.user_model_history(user))
    post = int(page.locator("#feed li.item").first.get_attribute("data-post-id"))
    page.locator("#feed li.item").first.locator("button.engage").click()
    page.wait_for_function(f"document.getElementById('status').textContent.includes('sent favorite on post {post}')")
    assert len(service.user_model_history(user)) == history + 1
    posts = page.locator("#feed li.item").evaluate_all("els => els.map(e => Number(e.dataset.postId))")
    assert post not in posts and len(posts) == K
    assert page.locator("#feed li.item.fresh").count() >= 1  # what came in is highlighted

    author = _authors(page)[0]
    page.locator("#feed li.item").first.locator("button.block").click()
    page.wait_for_function(f"document.getElementById('status').textContent.includes('blocked author {author}')")
    assert author in service.store.blocked_or_muted_authors(user)
    assert author not in _authors(page)

    # A fresh load of the page (user and k come from the URL) still leaves the author out.
    page.reload()
    page.wait_for_function(f"document.querySelectorAll('#feed li.item').length === {K}")
    assert author not in _authors(page)
    assert errors == []


def test_protected_reads_work_with_the_pasted_key(make_server, page, api_key):
    url, service = make_server(public_reads=False)
    user = _active_user(service)
    page.goto(f"{url}/ui/?user={user}&k={K}")  # loads at once, and is refused without the key
    page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "401" in page.inner_text("#status") and page.locator("#feed li.item").count() == 0
    page.fill("#apikey", api_key)
    page.press("#apikey", "Enter")  # Enter saves the key, like the button
    page.click("#load")
    page.wait_for_function(f"document.querySelectorAll('#feed li.item').length === {K}")
    page.reload()  # the key stays in localStorage across loads
    page.wait_for_function(f"document.querySelectorAll('#feed li.item').length === {K}")
    # With the key the page lists the recently active users; picking one loads that user's feed.
    page.wait_for_function("document.querySelectorAll('#users button.pick').length > 0")
    listed = [int(u) for u in page.locator("#users button.pick").evaluate_all("els => els.map(e => e.dataset.userId)")]
    users, _ = service.store.recent_users(20)
    assert listed == users.tolist()
    other = next(u for u in listed if u != user)
    page.locator(f"#users button.pick[data-user-id='{other}']").click()
    page.wait_for_function(f"document.getElementById('summary').textContent.startsWith('user {other}')")
    assert page.input_value("#user") == str(other)
