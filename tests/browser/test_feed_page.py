"""The feed page (/feed/) in a real browser: Debian's headless Chromium driven by Playwright
(``executable_path``: no browser download), against the BUILT bento the session serves
(``e2e_service``, tests/conftest.py). It clicks through a user's feed, a like, "see fewer like
this", similar posts, a new user from two categories and a text search; every list on the page
is checked against the service's own JSON answer. Skipped, with the reason, when the Chromium
binary or Playwright is missing (``make test`` installs both when it can)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import bearer

CHROMIUM = os.environ.get("SOCIALREC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# this closed network refuses Chromium's own background connections: none are made
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
K = 10


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (a fresh profile: Playwright's launch makes a new user-data dir)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"no Chromium binary at {CHROMIUM} (Debian's chromium package: make test "
            "installs it with apt-get when it runs as root or with sudo)"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def card_ids(page, section: str = "#feed") -> list[int]:
    return [
        int(x)
        for x in page.locator(f"{section} .card").evaluate_all(
            "cards => cards.map(c => c.dataset.post)"
        )
    ]


def recommended(client, user_id: int, categories: list[int] | None = None) -> dict:
    body = {"user_id": user_id, "k": K, **({"categories": categories} if categories else {})}
    r = client.post("/recommend", json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_a_person_clicks_through_the_feed_page(browser, e2e_service, e2e_warehouse, tmp_path):
    posts, users = e2e_warehouse
    base = str(e2e_service.base_url).rstrip("/")
    user_id = int(users["user_id"].iloc[9])  # an active user other tests leave alone
    context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 1600})
    page = context.new_page()
    page.set_default_timeout(20_000)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    try:
        # --- pick a known user: their feed as cards, as /recommend answers it --------------
        page.goto("/feed/")
        assert page.locator("#pick-user").is_visible()
        assert page.locator(".known-user").count() > 0  # the most active users, offered
        page.fill("#pick-user input[name=user_id]", str(user_id))
        page.click("#pick-user button")
        page.wait_for_selector("#feed .card")
        answer = recommended(e2e_service, user_id)
        assert card_ids(page) == [it["post_id"] for it in answer["items"]]
        assert len(card_ids(page)) == K
        descriptions = dict(zip(posts["post_id"], posts["description"], strict=True))
        first = page.locator("#feed .card").first
        want = str(descriptions[answer["items"][0]["post_id"]]).strip()[:40]
        assert want and want in first.locator(".desc").inner_text()
        meta = first.locator(".meta").inner_text()
        assert re.search(r"score \d\.\d{3}", meta) and "creator" in meta
        assert re.search(r"\b(text|image|video|link)\b", meta)
        assert re.search(r"(\d+ (d|h|min) old|just now)", meta), meta
        for item, card in zip(answer["items"], page.locator("#feed .card").all(), strict=True):
            texts = [r["text"] for r in item.get("reasons") or []]  # tolerated when absent
            assert card.locator(".reasons li").all_inner_texts() == texts

        # --- like the first card: the next page comes without it -------------------------
        liked = card_ids(page)[0]
        first.locator("button[data-action=like]").click()
        page.wait_for_function(
            f"document.getElementById('status').textContent.includes('post {liked} recorded')"
        )
        after = card_ids(page)
        assert liked not in after and len(after) == K
        assert after == [it["post_id"] for it in recommended(e2e_service, user_id)["items"]]

        # --- see fewer like this: a DISLIKE and the creator blocked ----------------------
        card = page.locator("#feed .card").first
        post_id, creator = int(card.get_attribute("data-post")), card.get_attribute("data-creator")
        card.locator("button[data-action=fewer]").click()
        page.wait_for_function(
            f"document.getElementById('status').textContent.includes('post {post_id} recorded')"
        )
        assert post_id not in card_ids(page)
        assert page.locator(f"#feed .card[data-creator='{creator}']").count() == 0
        e2e_service.post(  # leave the session's shared user as other tests expect it
            "/blocks",
            json={"user_id": user_id, "creator_ids": [int(creator)], "blocked": False},
            headers=bearer(),
        ).raise_for_status()

        # --- similar posts of a card -----------------------------------------------------
        origin = card_ids(page)[0]
        page.locator("#feed .card").first.locator("a.similar").click()
        page.wait_for_selector("#similar .card")
        similar = e2e_service.post("/similar", json={"post_id": origin, "k": K}).json()
        assert card_ids(page, "#similar") == [it["post_id"] for it in similar["items"]]

        # --- a new user from two categories ----------------------------------------------
        page.goto("/feed/")
        boxes = page.locator("#new-user input[type=checkbox]")
        assert boxes.count() >= 2
        chosen = [int(boxes.nth(i).get_attribute("value")) for i in (0, 1)]
        names = [page.locator("#new-user label.cat").nth(i).inner_text().strip() for i in (0, 1)]
        boxes.nth(0).check()
        boxes.nth(1).check()
        page.click("#new-user button")
        page.wait_for_selector("#feed .card")
        new_user = int(page.locator("#feed").get_attribute("data-user"))
        assert new_user not in set(users["user_id"])
        heading = page.locator("#feed h2").inner_text()
        assert all(name in heading for name in names), heading
        answer = recommended(e2e_service, new_user, chosen)
        assert card_ids(page) == [it["post_id"] for it in answer["items"]]

        # --- search by a word --------------------------------------------------------------
        word = max(str(descriptions[card_ids(page)[0]]).split(), key=len).strip(".,!?#").lower()
        page.fill("#search input[name=q]", word)
        page.click("#search button")
        page.wait_for_selector("#results .card")
        found = e2e_service.post("/search", json={"query": word, "k": K, "user_id": new_user})
        assert card_ids(page, "#results") == [it["post_id"] for it in found.json()["items"]]
        texts = page.locator("#results .card .desc").all_inner_texts()
        assert any(word in t.lower() for t in texts), (word, texts)
        assert page.locator("#feed .card").count() == K  # the new user's feed stays

        page.screenshot(path=str(tmp_path / "feed.png"), full_page=True)
        assert (tmp_path / "feed.png").stat().st_size > 0
        assert problems == []  # no script error on the page
    finally:
        context.close()
