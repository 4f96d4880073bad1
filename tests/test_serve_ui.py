"""The web chat page in headless Chromium (Selenium + the system chromedriver), against the demo's default
responder (``pegs-ret`` on a tiny checkpoint: upload an image through the page, see it in the user's bubble,
get a reply with a sticker that loads) and the tool baseline (type a message, pick a sticker from the library
search, send, see the reply's sticker; then upload an image). Each saves a screenshot under ``artifacts/``.
Needs the Debian packages ``chromium`` and ``chromium-driver``; without them the test fails and says so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stickerconv.serve import ServerThread, ServeSettings, create_app

from helpers.llm_fakes import ScriptedBackend
from helpers.serve import RESPONDER_NAMES, VisionTap, make_responder, tiny_checkpoint, upload_bytes, upload_id

KEY = "ui-key"
REPO = Path(__file__).resolve().parents[1]
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
INSTALL_HINT = "the browser test needs headless Chromium: apt-get install chromium chromium-driver"


def _first(paths: tuple[str, ...], name: str) -> str:
    found = next((p for p in paths if Path(p).is_file()), None) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found ({', '.join(paths)}); {INSTALL_HINT}")
    return found


@pytest.fixture
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the browser test needs Selenium: pip install 'selenium>=4.20'")
    options = webdriver.ChromeOptions()
    options.binary_location = _first(CHROMIUM, "chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1000,800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=_first(CHROMEDRIVER, "chromedriver")), options=options)
    yield driver
    driver.quit()


def tool_answer(request) -> str:
    return json.dumps(
        {
            "text": "That sounds so frustrating, I'm here.",
            "tool": "send_sticker",
            "query": "emotion: Sadness, sad tears",
        }
    )


def open_chat(browser, server: ServerThread, model: str):
    """The page at ``server`` with the API key stored, once it shows it talks to ``model``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(server.url + "/")
    browser.execute_script("localStorage.setItem('stickerconv-api-key', arguments[0])", KEY)
    browser.refresh()
    wait.until(ec.text_to_be_present_in_element((By.ID, "model"), model))
    return wait


def loaded(browser, image) -> bool:
    """Whether an <img> finished loading a real image (a broken one has naturalWidth 0)."""
    return browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image)


def keep_screenshot(browser, tmp_path: Path, name: str) -> None:
    shot = tmp_path / name
    assert browser.save_screenshot(str(shot))
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copyfile(shot, artifacts / name)
    print(f"\nweb chat screenshot: {shot} (copied to {artifacts / name})")


def test_demo_responder_pegs_ret_with_an_upload(browser, small_index, tmp_path):
    """What ``stickerconv demo`` serves: PEGS-Ret. The image a user attaches reaches the model's eyes."""
    from selenium.webdriver.common.by import By

    responder = make_responder("pegs-ret", small_index, checkpoint=tiny_checkpoint(tmp_path / "pegs"))
    tap = VisionTap(responder)
    photo = tmp_path / "my sticker.jpg"
    photo.write_bytes(upload_bytes(small_index.library, 10, "JPEG"))
    settings = ServeSettings(api_key=KEY, uploads_dir=tmp_path / "uploads")
    with ServerThread(create_app(responder, small_index, settings)) as server:
        wait = open_chat(browser, server, "stickerconv-pegs-ret")
        browser.find_element(By.ID, "message").send_keys("I failed my exam again")
        browser.find_element(By.ID, "upload").send_keys(str(photo))
        wait.until(lambda d: d.find_element(By.ID, "attachment").is_displayed())
        browser.find_element(By.ID, "send").click()

        bubble = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant"))[0]
        shown = browser.find_element(By.CSS_SELECTOR, ".msg.user img.sticker")
        assert shown.get_attribute("src").startswith("data:image/jpeg;base64,") and loaded(browser, shown)
        assert "I failed my exam again" in browser.find_element(By.CSS_SELECTOR, ".msg.user p").text
        assert browser.find_element(By.ID, "status").text == ""
        for sticker in bubble.find_elements(By.CSS_SELECTOR, "img.sticker"):
            wait.until(lambda d, img=sticker: loaded(d, img))
        assert bubble.find_elements(By.CSS_SELECTOR, "img.sticker"), "the boosted model sends a sticker"
        kept = tmp_path / "uploads" / (upload_id(photo.read_bytes()) + ".jpg")
        assert kept.read_bytes() == photo.read_bytes() and tap.saw(kept)  # the model looked at the upload

        # the next turn sends the whole history again, the upload's data URI and the reply's sticker call with it
        browser.find_element(By.ID, "message").send_keys("thank you")
        browser.find_element(By.ID, "send").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant")) == 2)
        assert browser.find_element(By.ID, "status").text == ""
        assert len(tap.batches[-1]) == 1 and tap.saw(kept)  # the history's upload, seen again
        keep_screenshot(browser, tmp_path, "ui-screenshot-pegs-ret.png")


def test_chat_page_with_stickers(browser, small_index, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    backend = ScriptedBackend(default=tool_answer)
    app = create_app(make_responder("tool", small_index, backend=backend), small_index, ServeSettings(api_key=KEY))
    with ServerThread(app) as server:
        wait = open_chat(browser, server, "stickerconv-tool")

        browser.find_element(By.ID, "message").send_keys("I failed my exam again")
        browser.find_element(By.ID, "sticker-button").click()
        browser.find_element(By.ID, "sticker-search").send_keys("crying")
        wait.until(
            lambda d: (
                d.find_elements(By.CSS_SELECTOR, ".picker-item")
                and "cry" in d.find_element(By.CSS_SELECTOR, ".picker-item").get_attribute("title")
            )
        )
        picked = browser.find_element(By.CSS_SELECTOR, ".picker-item")
        picked_id = picked.get_attribute("data-sticker-id")
        picked.click()
        assert browser.find_element(By.ID, "attachment").is_displayed()
        browser.find_element(By.ID, "send").click()

        reply = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".msg.assistant img.sticker")))
        wait.until(lambda d: loaded(d, reply))
        user_sticker = browser.find_element(By.CSS_SELECTOR, ".msg.user img.sticker")
        assert user_sticker.get_attribute("src").endswith(f"/stickers/{picked_id}")
        assert browser.execute_script("return arguments[0].naturalWidth", user_sticker) > 0
        assert "frustrating" in browser.find_element(By.CSS_SELECTOR, ".msg.assistant p").text
        # the responder saw the picked sticker with the typed text
        picked_sticker = small_index.library.by_id()[picked_id]
        assert picked_sticker.description in backend.requests[-1].messages[-1].text
        assert "I failed my exam again" in backend.requests[-1].messages[-1].text

        # an uploaded image goes as a data URI; the history (with the reply's sticker call) goes back
        browser.find_element(By.ID, "upload").send_keys(str(small_index.library.image_path(small_index.stickers[0])))
        wait.until(lambda d: d.find_element(By.ID, "attachment").is_displayed())
        browser.find_element(By.ID, "message").send_keys("and this one")
        browser.find_element(By.ID, "send").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant img.sticker")) == 2)
        seen = backend.requests[-1].messages
        assert [m.role for m in seen[1:]] == ["user", "assistant", "user"]
        assert small_index.stickers[0].description in seen[-1].text  # the upload matched its library image
        assert "[sends a sticker" in seen[2].text  # the reply's sticker came back in the history
        assert browser.find_element(By.ID, "status").text == ""
        keep_screenshot(browser, tmp_path, "ui-screenshot.png")


@pytest.fixture(scope="module")
def pegs_checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("pegs-ui"))


@pytest.mark.parametrize("name", RESPONDER_NAMES)
def test_every_responder_takes_a_jpeg_and_a_png_through_the_page(name, browser, small_index, pegs_checkpoint, tmp_path):
    """A user's own JPEG, then PNG, attached on the page: each shows in the user's bubble, a reply comes,
    and the image reached the responder: the tool baseline as a described image, PEGS as pixels (the text
    baseline is blind to stickers by design)."""
    from selenium.webdriver.common.by import By

    backend = ScriptedBackend(default=tool_answer if name == "tool" else "I'm here with you.")
    painted = tmp_path / "painted" if name in ("pegs-gen", "pegs-rag") else None
    responder = make_responder(
        name,
        small_index,
        backend=None if name.startswith("pegs-") else backend,
        checkpoint=pegs_checkpoint if name.startswith("pegs-") else None,
        generated_dir=painted,
    )
    tap = VisionTap(responder) if name.startswith("pegs-") else None
    settings = ServeSettings(api_key=KEY, uploads_dir=tmp_path / "uploads", generated_dir=painted)
    with ServerThread(create_app(responder, small_index, settings)) as server:
        wait = open_chat(browser, server, f"stickerconv-{name}")
        for turn, (fmt, suffix, mime) in enumerate((("JPEG", ".jpg", "jpeg"), ("PNG", ".png", "png")), start=1):
            photo = tmp_path / f"mine-{turn}{suffix}"
            photo.write_bytes(upload_bytes(small_index.library, 20 + turn, fmt))
            browser.find_element(By.ID, "message").send_keys(f"look at this, number {turn}")
            browser.find_element(By.ID, "upload").send_keys(str(photo))
            wait.until(lambda d: d.find_element(By.ID, "attachment").is_displayed())
            browser.find_element(By.ID, "send").click()
            wait.until(lambda d, n=turn: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant")) == n)
            assert browser.find_element(By.ID, "status").text == ""
            shown = browser.find_elements(By.CSS_SELECTOR, ".msg.user img.sticker")[-1]
            assert shown.get_attribute("src").startswith(f"data:image/{mime};base64,") and loaded(browser, shown)
            reply = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1]
            said = " ".join(p.text for p in reply.find_elements(By.CSS_SELECTOR, "p")).strip()
            assert said or reply.find_elements(By.CSS_SELECTOR, "img.sticker")  # an untrained PEGS may only send one
            for sticker in reply.find_elements(By.CSS_SELECTOR, "img.sticker"):
                wait.until(lambda d, img=sticker: loaded(d, img))
            kept = tmp_path / "uploads" / (upload_id(photo.read_bytes()) + suffix)
            assert kept.read_bytes() == photo.read_bytes()
            if tap is not None:
                assert tap.saw(kept)
            elif name == "tool":
                assert "an image the library does not know" in backend.requests[-1].messages[-1].text
            else:  # the text baseline answers the words only, by design (method reference §7)
                assert backend.requests[-1].messages[-1].text == f"look at this, number {turn}"
