"""The app in a real browser: ``streamlit run app.py`` on a free localhost port, driven by
Playwright with Debian's Chromium (never a downloaded browser). Every page is visited; the
test waits for its plots, checks that no exception box is shown, and saves a screenshot
to the folder it prints ($LATENTVIZ_SCREENSHOTS, or a temporary folder)."""
from __future__ import annotations

import importlib.util
import io
import os
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
# (url path, screenshot name, how many figures (charts, image grids) the page must show
# at least)
PAGES = [("", "home", 0), ("Train", "train", 0), ("Latent_space", "latent_space", 1),
         ("Samples", "samples", 1), ("TreeVAE", "treevae", 1), ("Compare", "compare", 2),
         ("Encode", "encode", 0)]

# Tall, because Streamlit scrolls its own main container: a full-page screenshot is the viewport.
VIEW = {"width": 1400, "height": 2600}

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} missing (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def server(tiny_checkpoints, tmp_path_factory):
    from latentviz.bench import app_server

    env = {"LATENTVIZ_CHECKPOINTS": str(Path(next(iter(tiny_checkpoints.values()))).parent),
           "LATENTVIZ_RUNS": str(tmp_path_factory.mktemp("runs"))}
    with app_server(env) as (_, url, _, _):
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("LATENTVIZ_SCREENSHOTS") or tmp_path_factory.mktemp("screens"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots in {folder}")
    return folder


# Not running: Streamlit marks its root with the script's state and shows a running icon.
RUNNING = ("() => { const a = document.querySelector('[data-testid=\"stApp\"]');"
           " return !!a && !['running', 'rerunRequested', 'initial']"
           ".includes(a.getAttribute('data-test-script-state'))"
           " && !document.querySelector('[data-testid=\"stStatusWidgetRunningIcon\"]'); }")
SNAPSHOT = ("() => document.body.innerText.length + ':' +"
            " document.querySelectorAll('.js-plotly-plot .main-svg, img').length")


FIGURES = ".js-plotly-plot, [data-lv=grid]"   # Plotly charts and image grids


def settle(page, n_plots: int, timeout: float = 90_000) -> None:
    """Wait until the script has finished, the page shows its figures (Plotly charts,
    drawn, and image grids, their images loaded) and stops changing."""
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=timeout)
    page.wait_for_function(RUNNING, timeout=timeout)
    if n_plots:
        page.wait_for_function(
            "n => { const p = [...document.querySelectorAll('.js-plotly-plot')];"
            " const g = [...document.querySelectorAll('[data-lv=grid]')];"
            " return p.length + g.length >= n && p.every(e => e.querySelector('.main-svg'))"
            " && g.every(e => [...e.querySelectorAll('img')].every(i => i.complete)); }",
            arg=n_plots, timeout=timeout)
    # Fragments and Plotly draw after the main run: wait for three equal looks in a row.
    seen, deadline = [], time.time() + timeout / 1000
    while time.time() < deadline:
        seen.append(page.evaluate(SNAPSHOT) if page.evaluate(RUNNING) else None)
        if len(seen) >= 3 and seen[-1] is not None and seen[-1] == seen[-2] == seen[-3]:
            return
        page.wait_for_timeout(500)


def no_exception(page, what: str) -> None:
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, f"{what}: exception shown: {boxes.first.inner_text()[:800]}"


def png(shape=(40, 40)) -> bytes:
    from PIL import Image

    a = np.zeros(shape, np.uint8)
    a[8:32, 18:23] = 255  # a "1"
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_every_page_renders_without_exceptions(server, browser, shots, tiny_checkpoints):
    page = browser.new_page(viewport=VIEW)
    for path, name, n_plots in PAGES:
        if name == "treevae" and "treevae" not in tiny_checkpoints:
            n_plots = 0  # the page explains that there is no TreeVAE checkpoint
        page.goto(f"{server}/{path}")
        settle(page, n_plots)
        no_exception(page, name)
        assert page.locator(FIGURES).count() >= n_plots, name
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    page.close()


def current_checkpoint(page) -> str:
    """The name the sidebar's checkpoint picker shows."""
    shown = page.locator('[data-testid="stSidebar"] input[role="combobox"]').first.input_value()
    return shown.split(" · ")[0]    # "name · collapsed" for a collapsed model


def pick_checkpoint(page, name: str) -> None:
    page.locator('[data-testid="stSidebar"] input[role="combobox"]').first.click()
    page.keyboard.type(name)
    page.keyboard.press("Enter")
    settle(page, 0)


def go(page, link: str) -> None:
    """Click a page's link in the sidebar's navigation."""
    page.locator('[data-testid="stSidebarNav"]').get_by_text(link, exact=True).click()
    page.wait_for_timeout(500)
    settle(page, 0)


NAV = ["Train", "Latent space", "Samples", "TreeVAE", "Compare", "Encode your image", "Home"]


def test_image_grids_fit_a_narrow_page_and_keep_their_images_square(server, browser, shots,
                                                                    tiny_checkpoints):
    """At 820 px with the sidebar open (a main column of about 490 px), a grid of ten 56 px
    columns and long row labels is wider than the page: it shrinks, every image stays
    square and inside the main column, and the grid is as tall as its rows (a fixed-size
    Plotly image shrank inside a fixed height and left blank bands)."""
    page = browser.new_page(viewport={"width": 820, "height": 1400})
    page.goto(f"{server}/Samples?checkpoint={Path(tiny_checkpoints['kmeans']).stem}")
    settle(page, 1)
    main = page.locator('[data-testid="stMainBlockContainer"]').bounding_box()
    grid = page.locator("[data-lv=grid]").first
    box = grid.bounding_box()
    assert box["x"] >= main["x"] - 1 and box["x"] + box["width"] <= main["x"] + main["width"] + 1
    images = grid.locator("img").all()
    sizes = [i.bounding_box() for i in images]
    assert all(abs(b["width"] - b["height"]) <= 1 for b in sizes), "8 x 8 images stay square"
    assert all(b["x"] + b["width"] <= main["x"] + main["width"] + 1 for b in sizes)
    rows = int(grid.get_attribute("data-rows"))
    labels = grid.locator("[data-lv=row-label]").all()
    tallest = [max(sizes[0]["height"], lab.bounding_box()["height"]) for lab in labels]
    assert len(tallest) == rows and box["height"] <= sum(tallest) + 2 * rows + 4, \
        "no blank band: the grid is its rows"
    page.screenshot(path=str(shots / "samples_820.png"))
    page.close()


def test_the_chosen_checkpoint_stays_put_across_pages_links_and_training(
        server, browser, shots, tiny_checkpoints):
    """The journey that lost the model: pick a non-default checkpoint, move through every
    page by the sidebar and by Home's links, train a model and move on. The page never
    asks a host other than the app's own."""
    page = browser.new_page(viewport=VIEW)
    outside = []
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith(server) and not r.url.startswith("data:") else None)
    page.goto(server)
    settle(page, 0)
    name = Path(tiny_checkpoints["kmeans"]).stem
    assert current_checkpoint(page) != name, "pick something other than the default"
    pick_checkpoint(page, name)
    for link in NAV:
        go(page, link)
        no_exception(page, link)
        assert current_checkpoint(page) == name, f"{link} shows another checkpoint"
        assert f"checkpoint={name}" in page.url
    for link in page.locator('[data-testid="stPageLink"] a').all()[:3]:
        link.click()
        page.wait_for_timeout(500)
        settle(page, 0)
        assert current_checkpoint(page) == name, f"Home's link to {page.url} lost the model"
        go(page, "Home")
    go(page, "Train")
    fill(page, "epochs", "3")
    fill(page, "Checkpoint name", "journey-run")
    page.get_by_role("button", name="Train", exact=True).click()
    page.wait_for_function("() => document.body.innerText.includes('Finished after')",
                           timeout=120_000)
    settle(page, 0)
    assert current_checkpoint(page) == "journey-run"
    for link in ("Latent space", "Samples", "Compare"):
        go(page, link)
        no_exception(page, link)
        assert current_checkpoint(page) == "journey-run", f"{link} forgot the new model"
    page.screenshot(path=str(shots / "journey_compare.png"))
    assert not outside, f"requests to other hosts: {sorted(set(outside))[:5]}"
    page.close()


def test_a_bookmark_opened_first_on_a_fresh_server_gets_the_whole_app(
        browser, tiny_checkpoints, tmp_path):
    """A page's URL, the first request a server gets: the same app as from Home (its
    navigation with Home, the wide layout), on the checkpoint the link names."""
    from latentviz.bench import app_server

    name = Path(tiny_checkpoints["kmeans"]).stem
    env = {"LATENTVIZ_CHECKPOINTS": str(Path(tiny_checkpoints["kmeans"]).parent),
           "LATENTVIZ_RUNS": str(tmp_path / "runs")}
    with app_server(env) as (_, url, _, _):
        page = browser.new_page(viewport=VIEW)
        page.goto(f"{url}/Latent_space?checkpoint={name}")
        settle(page, 1)
        nav = page.locator('[data-testid="stSidebarNav"]').inner_text().split("\n")
        assert "Home" in nav and "app" not in nav, nav
        assert page.locator('[data-testid="stMain"] h1').inner_text() == "Latent space"
        assert current_checkpoint(page) == name
        width = page.locator('[data-testid="stMainBlockContainer"]').bounding_box()["width"]
        assert width > 900, f"narrow layout ({width:.0f} px of {VIEW['width']})"
        page.goto(f"{url}/Samples?checkpoint=no-such-model")
        settle(page, 1)
        no_exception(page, "an unknown checkpoint in the URL")
        assert current_checkpoint(page) != "no-such-model"
        page.close()


def test_box_selection_shows_the_selected_images(server, browser, shots):
    page = browser.new_page(viewport=VIEW)
    page.goto(f"{server}/Latent_space")
    settle(page, 1)
    drag = page.locator(".js-plotly-plot .nsewdrag").first
    box = drag.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.05, box["y"] + box["height"] * 0.05)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6, steps=12)
    page.mouse.up()
    page.wait_for_function("() => /Selection: [1-9][0-9]* images/.test(document.body.innerText)",
                           timeout=60_000)
    settle(page, 3)  # the scatter, the two image grids
    no_exception(page, "latent space after selection")
    page.screenshot(path=str(shots / "latent_space_selection.png"), full_page=True)
    before = page.locator("h3", has_text="Selection:").inner_text()
    colour = page.get_by_label("Colour by", exact=True)       # recolouring keeps it
    colour.click()
    page.keyboard.type("k-means cluster")
    page.keyboard.press("Enter")
    page.wait_for_timeout(500)
    settle(page, 3)
    assert colour.input_value() == "k-means cluster"
    assert page.locator("h3", has_text="Selection:").inner_text() == before
    page.close()


def test_compare_exports_the_maps(server, browser):
    """A PNG through kaleido where it is installed (it drives the same chromium), else
    the interactive HTML file the page offers instead."""
    page = browser.new_page(viewport=VIEW)
    page.goto(f"{server}/Compare")
    settle(page, 2)
    png = importlib.util.find_spec("kaleido") is not None
    label = "Download the maps (PNG)" if png else "Download the maps (interactive HTML)"
    with page.expect_download(timeout=120_000) as info:
        page.get_by_role("button", name=label).click()
    data = Path(info.value.path()).read_bytes()
    if png:
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    else:
        assert b"<html>" in data[:100] and b"plotly" in data
    page.close()


def test_upload_on_encode_page(server, browser, shots):
    page = browser.new_page(viewport=VIEW)
    page.goto(f"{server}/Encode")
    settle(page, 0)
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
        files=[{"name": "one.png", "mimeType": "image/png", "buffer": png()}])
    page.wait_for_function("() => document.body.innerText.includes('On the latent map')",
                           timeout=60_000)
    settle(page, 2)
    no_exception(page, "encode after upload")
    page.screenshot(path=str(shots / "encode_upload.png"), full_page=True)
    page.close()


def fill(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    settle(page, 0)


def test_training_leaves_other_sessions_responsive(server, browser, shots):
    trainer = browser.new_page(viewport=VIEW)
    trainer.goto(f"{server}/Train")
    settle(trainer, 0)
    fill(trainer, "hidden", "32")
    fill(trainer, "epochs", "500")              # far longer than the test waits
    fill(trainer, "Checkpoint name", "browser-run")
    trainer.get_by_role("button", name="Train", exact=True).click()
    stop = trainer.get_by_role("button", name="Stop after this epoch")
    stop.wait_for(timeout=60_000)
    trainer.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length > 0",
                              timeout=90_000)
    trainer.wait_for_timeout(2000)              # a few polls of the live curves
    trainer.screenshot(path=str(shots / "train_running.png"))

    other = browser.new_page(viewport=VIEW)      # a second browser session
    t0 = time.time()
    other.goto(server)
    settle(other, 0)
    took = time.time() - t0
    assert stop.count() == 1, "training ended before the second session was served"
    assert took < 30, f"a second session waited {took:.0f} s while another trained"
    no_exception(other, "home while training")

    stop.click()
    trainer.wait_for_function("() => document.body.innerText.includes('Stopped early after')",
                              timeout=120_000)
    settle(trainer, 1)
    no_exception(trainer, "train after the run")
    trainer.screenshot(path=str(shots / "train_stopped.png"))
    other.goto(server)          # a new session: the new checkpoint (yours) is the default pick
    settle(other, 0)
    assert "· yours" in other.inner_text('[data-testid="stSidebar"]')
    trainer.close()
    other.close()


@pytest.mark.skipif(importlib.util.find_spec("streamlit_drawable_canvas") is None,
                    reason="drawing needs streamlit-drawable-canvas")
def test_draw_on_encode_page(server, browser, shots):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = browser.new_page(viewport=VIEW)
    page.goto(f"{server}/Encode")
    settle(page, 0)
    page.get_by_text("Draw one", exact=True).click()
    canvas = page.locator("canvas.upper-canvas").first
    canvas.wait_for(timeout=60_000)
    settle(page, 0)        # the canvas restores its (empty) history after mounting
    box = canvas.bounding_box()
    x, top = box["x"] + box["width"] / 2, box["y"]
    done = "() => document.body.innerText.includes('On the latent map')"
    for attempt in range(3):   # a stroke made while a slow machine still mounts is wiped
        page.mouse.move(x, top + box["height"] * (0.2 + 0.05 * attempt))
        page.mouse.down()
        page.mouse.move(x, top + box["height"] * 0.8, steps=15)   # a "1"
        page.mouse.up()
        try:
            page.wait_for_function(done, timeout=30_000)
            break
        except PlaywrightTimeout:
            settle(page, 0)
    else:
        pytest.fail("the drawing never reached the app; the page shows: "
                    + page.inner_text('[data-testid="stMain"]')[:600])
    settle(page, 2)
    no_exception(page, "encode after drawing")
    page.screenshot(path=str(shots / "encode_drawing.png"))
    page.close()
