"""The dev-mode ``GET /live`` page (read_api/live_page.py) in a real browser: the command API, the
projector and the query API run as processes in dev mode; a follower opens the page in headless
Chromium (Debian's ``chromium``, driven by Playwright), votes and views go through the command
API, and the page's numbers follow within seconds; deleting the story shows "ended".
Outside dev mode there is no such page (404).

Without Playwright or a chromium executable the browser test skips with the reason (under
CI=true a skip fails the run: tests/conftest.py). ``make install`` installs Debian's chromium
when it runs as root.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.conftest import skip_backend
from tests.e2e.read_side import ReadSide, cleanup, launch

pytestmark = pytest.mark.timeout(120)

S = "/api/v1/stories"
POLL = {"sticker_type": "poll", "poll": {"question": "Tea?", "options": [{"text": "yes"}, {"text": "no"}]}}
UPDATE_MS = 10_000  # longest wait for the page to show a change


@pytest.fixture(scope="module")
def dev_side(tmp_path_factory: pytest.TempPathFactory, mongodb_url: str, redis_url: str) -> Iterator[ReadSide]:
    """The read side's three processes with STORIES_DEV_MODE=true (the shared ``read_side`` is not)."""
    side = launch(tmp_path_factory.mktemp("live-page"), mongodb_url, redis_url, dev_mode="true")
    try:
        yield side
    finally:
        side.stop()
        cleanup(side)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium: the machine's executable, driven by Playwright (no browser download)."""
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        skip_backend("playwright", f"the Python package is not installed ({e}); `make install` installs it")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        skip_backend(
            "chromium",
            "no chromium executable on PATH; `make install` as root installs Debian's "
            "package, or `apt-get install chromium`",
        )
    with sync_playwright() as p:
        try:
            instance = p.chromium.launch(executable_path=executable, args=["--no-sandbox"], headless=True)
        except PlaywrightError as e:
            skip_backend("chromium", f"{executable} does not start: {str(e).strip()[:1000]}")
        try:
            yield instance
        finally:
            instance.close()


def test_live_page_follows_a_poll(dev_side: ReadSide, browser: Any, uid) -> None:
    from playwright.sync_api import expect

    owner, follower, carol = uid("owner"), uid("follower"), uid("carol")
    dev_side.follow(follower, owner)
    dev_side.follow(carol, owner)
    story, at = dev_side.story(owner, privacy="followers", stickers=[POLL])
    dev_side.read(f"{S}/{story}", follower, at)  # projected: the stream opens on it (not a 404)

    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    query = urlencode({"story": story, "token": dev_side.token(follower)})
    page.goto(f"http://127.0.0.1:{dev_side.query_port}/live?{query}")

    status, views = page.locator("#status"), page.locator("#views")
    row = lambda i: page.locator(f'#polls section[data-sticker="0"] tr[data-option="{i}"]')  # noqa: E731
    expect(status).to_have_text("live", timeout=UPDATE_MS)
    expect(views).to_have_text("0")
    expect(row(0).locator("td.text")).to_have_text("yes")
    expect(row(0).locator("td.votes")).to_have_text("0")
    expect(row(1).locator("td.percentage")).to_have_text("0.0%")

    dev_side.interact(carol, story, sticker_index=0, option_index=1)
    expect(row(1).locator("td.votes")).to_have_text("1", timeout=UPDATE_MS)
    expect(row(1).locator("td.percentage")).to_have_text("100.0%")
    expect(row(0).locator("td.percentage")).to_have_text("0.0%")
    expect(page.locator('#polls section[data-sticker="0"] h2')).to_have_text("Tea? (1 votes)")

    dev_side.interact(follower, story, sticker_index=0, option_index=0)
    dev_side.view(carol, story)
    expect(row(0).locator("td.votes")).to_have_text("1", timeout=UPDATE_MS)
    expect(row(0).locator("td.percentage")).to_have_text("50.0%")
    expect(row(1).locator("td.percentage")).to_have_text("50.0%")
    expect(views).to_have_text("1", timeout=UPDATE_MS)
    expect(status).to_have_text("live")

    dev_side.write("DELETE", f"{S}/{story}", owner, expect=204)
    expect(status).to_have_text("ended", timeout=UPDATE_MS)
    assert errors == [], errors


def test_live_page_with_a_bad_token_says_closed(dev_side: ReadSide, browser: Any, uid) -> None:
    from playwright.sync_api import expect

    owner = uid("owner")
    story, at = dev_side.story(owner, privacy="public", stickers=[POLL])
    dev_side.read(f"{S}/{story}", owner, at)
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{dev_side.query_port}/live?" + urlencode({"story": story, "token": "not-a-jwt"}))
    expect(page.locator("#status")).to_have_text("closed (check the story id and the token)", timeout=UPDATE_MS)


def test_live_page_is_dev_mode_only(dev_side: ReadSide) -> None:
    on = dev_side.query("/live")
    assert on.status == 200 and on.header("content-type").startswith("text/html"), on
    assert b"EventSource" in on.raw
    paths = dev_side.query("/openapi.json").body["paths"]
    assert "/live" not in paths  # a developer's tool, not part of the contract


async def test_no_live_page_outside_dev_mode(aiohttp_client, read_side_settings) -> None:
    from read_api.app import create_app

    assert read_side_settings.dev_mode is False
    client = await aiohttp_client(create_app(read_side_settings))
    resp = await client.get("/live")
    assert resp.status == 404, await resp.text()
    assert (await client.get("/health")).status == 200
