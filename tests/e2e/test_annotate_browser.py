"""The annotation page in a real browser: Debian's Chromium driven by Playwright."""

import os
import shutil
from pathlib import Path

import pytest

from rewardlab.serve.annotate import create_app
from rewardlab.serve.sources import open_source
from rewardlab.serve.store import VoteStore
from tests.helpers.serving import live_server, make_source

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
SCREENSHOTS = os.environ.get("REWARDLAB_SCREENSHOTS")  # a folder to save the page's screenshot in (docs/ for the README)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: apt-get install chromium (scripts/system-deps.sh does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def served(tmp_path):
    src = open_source(make_source(tmp_path / "src", prompts=3, images=3))
    store = VoteStore(f"sqlite:///{tmp_path / 'votes.db'}")
    store.add_pairs(src.pairs())
    with live_server(create_app(store, src, "tok", votes_per_pair=1)) as url:
        yield store, url


def _shown(page) -> tuple[int, str, str]:
    """(pair id, image shown left, image shown right) once the page is ready for a vote."""
    page.wait_for_function("pair && !busy && document.getElementById('task').dataset.pairId == String(pair.id)")
    pair = page.evaluate("pair")
    return pair["id"], pair["left"], pair["right"]


def test_vote_by_click_and_by_keyboard(browser, served, tmp_path):
    store, url = served
    page = browser.new_page(viewport={"width": 800, "height": 640})
    page.goto(f"{url}/#token=tok&annotator=alice")
    assert "token" not in page.url  # taken out of the address bar
    expected = []
    pid, left, right = _shown(page)
    assert page.inner_text("#prompt") == store.pair(pid).prompt
    page.click("#left")  # the left image itself
    expected.append((pid, left))
    page.wait_for_function(f"pair && pair.id !== {pid}")
    pid, left, right = _shown(page)
    page.keyboard.press("ArrowRight")
    expected.append((pid, right))
    page.wait_for_function(f"pair && pair.id !== {pid}")
    pid, left, right = _shown(page)
    page.keyboard.press("=")
    expected.append((pid, "tie"))
    page.wait_for_function(f"pair && pair.id !== {pid}")
    pid, *_ = _shown(page)
    page.click("#vote-right")
    page.wait_for_function(f"pair && pair.id !== {pid}")
    _shown(page)
    assert "4 of 9 votes" in page.inner_text("#progress")
    page.screenshot(path=str(Path(SCREENSHOTS or tmp_path) / "annotate.png"))
    votes = store.votes()
    assert [(v["pair_id"], v["choice"]) for v in votes[:3]] == expected
    assert {v["annotator"] for v in votes} == {"alice"} and len(votes) == 4
    page.close()


def test_a_wrong_token_shows_an_error_and_stores_nothing(browser, served):
    store, url = served
    page = browser.new_page()
    page.goto(f"{url}/#token=nope&annotator=mallory")
    page.wait_for_selector("#error:has-text('Wrong or missing token')")
    assert page.is_visible("#login") and not page.is_visible("#task")
    page.fill("#token", "tok")  # the right token from the form starts the task
    page.click("#login button")
    _shown(page)
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("document.getElementById('progress').textContent.includes('you: 1')")
    assert [v["annotator"] for v in store.votes()] == ["mallory"]
    page.close()


def test_every_pair_judged_shows_the_end(browser, tmp_path):
    src = open_source(make_source(tmp_path / "src", prompts=1, images=2))
    store = VoteStore(f"sqlite:///{tmp_path / 'votes.db'}")
    store.add_pairs(src.pairs())
    with live_server(create_app(store, src, "tok")) as url:
        page = browser.new_page()
        page.goto(f"{url}/#token=tok&annotator=bo")
        _shown(page)
        page.keyboard.press("ArrowLeft")
        page.wait_for_selector("#done", state="visible")
        page.close()
    assert len(store.votes()) == 1


def test_a_pair_whose_image_cannot_be_shown_is_skipped(browser, tmp_path):
    src = open_source(make_source(tmp_path / "src", prompts=1, images=3))  # 3 pairs; img2 in two of them
    (src.root / "p0" / "img2.png").write_bytes(b"not a png")
    store = VoteStore(f"sqlite:///{tmp_path / 'votes.db'}")
    store.add_pairs(src.pairs())
    with live_server(create_app(store, src, "tok")) as url:
        page = browser.new_page()
        page.goto(f"{url}/#token=tok&annotator=cy")
        pid, *_ = _shown(page)
        assert "img2" not in store.pair(pid).image_a + store.pair(pid).image_b
        page.keyboard.press("ArrowLeft")
        page.wait_for_selector("#done", state="visible")
        assert page.evaluate("skipped.length") == 2  # the two pairs with the broken image were passed by
        page.close()
    assert [v["pair_id"] for v in store.votes()] == [pid]
