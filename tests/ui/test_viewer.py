"""`netscope ui` in a real browser: the system's headless Chromium, driven by
Playwright, against the session's netscope server on loopback and the viewer
served in-process on a free port. Screenshots of each tab go to
$NETSCOPE_SCREENSHOTS (default: the test's tmp folder). The page must make
no request off this machine."""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest

from netscope.client import Client, NetscopeError

gradio = pytest.importorskip("gradio", reason="run scripts/setup.sh test (the ui extra)")
sync_api = pytest.importorskip("playwright.sync_api", reason="run scripts/setup.sh test (playwright)")

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium: run scripts/setup.sh test")

MODEL = "r18"
WAIT = 90_000  # ms: a CPU explanation on a busy shared machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("NETSCOPE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def job(tmp_path_factory, photo_files, server):
    """A real `netscope explain` output folder over three photos, with an overlay per image."""
    from netscope import cli

    images = tmp_path_factory.mktemp("job_images")
    for name in ("chelsea", "coffee", "astronaut"):
        shutil.copy(photo_files[name], images / photo_files[name].name)
    out = tmp_path_factory.mktemp("job") / "out"
    code = cli.main(["explain", "--server", server.address, "--model", MODEL, "--method", "grad_cam",
                     str(images), "--out", str(out)])
    assert code == 0
    return out, images


@pytest.fixture(scope="module")
def viewer_url(server, job):
    from netscope.ui.app import launch

    port = free_port()
    client = Client(server.address, timeout=120)
    client.wait_ready()
    app = launch(client, host="127.0.0.1", port=port, job=str(job[0]), images=str(job[1]), block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()
    client.close()


@pytest.fixture(scope="module")
def page(viewer_url):
    outside: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})

        def note(request):
            host = urlparse(request.url).hostname
            if request.url.startswith(("http", "ws")) and host not in ("127.0.0.1", "localhost"):
                outside.append(request.url)

        pg.on("request", note)
        pg.set_default_timeout(WAIT)
        pg.goto(viewer_url)
        pg.get_by_role("tab", name="Models").wait_for()
        yield pg
        browser.close()
    assert not outside, f"the page reached off this machine: {outside[:5]}"


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_models_tab_shows_the_summary_and_default_cam_layer(page, client, shots):
    info = client.model_info(MODEL)
    tab(page, "Models")
    totals = page.locator("#totals")
    totals.get_by_text(f"default CAM layer: {info.default_cam_layer}", exact=False).wait_for()
    page.get_by_text("Conv2d").first.wait_for()
    page.screenshot(path=str(shots / "models.png"), full_page=True)


def test_upload_an_image_and_see_its_top1_label(page, client, photo_files, shots):
    expected = client.predict(MODEL, photo_files["chelsea"], k=5)[0].top1
    tab(page, "One image")
    page.locator("#image input[type=file]").set_input_files(str(photo_files["chelsea"]))
    page.locator("#topk").get_by_text(f"{expected.label} ({expected.index})").first.wait_for()
    page.screenshot(path=str(shots / "one_image.png"), full_page=True)


def test_two_methods_give_two_overlays_with_values_under_the_cursor(page, shots):
    tab(page, "Why")
    page.locator("#methods").get_by_label("grad_cam_plus_plus", exact=True).check()
    page.locator("#methods").get_by_label("grad_cam", exact=True).check()
    page.locator("#explain").click()
    for method in ("grad_cam", "grad_cam_plus_plus"):
        page.locator(f"#maps figure[data-method='{method}'] img.ns-map").wait_for()
    img = page.locator("#maps figure[data-method='grad_cam'] img.ns-map")
    img.hover(position={"x": 150, "y": 150})
    readout = page.locator("#maps figure[data-method='grad_cam'] .ns-readout")
    assert readout.inner_text().startswith("x "), readout.inner_text()
    page.locator("#downloads").get_by_text("grad_cam_plus_plus", exact=False).first.wait_for()
    page.screenshot(path=str(shots / "why.png"), full_page=True)


def test_a_bad_option_shows_the_servers_message(page, client, photo_files, shots):
    with pytest.raises(NetscopeError) as want:
        client.explain(MODEL, photo_files["chelsea"], method="integrated_gradients", steps=0)
    tab(page, "Why")
    for name in ("grad_cam", "grad_cam_plus_plus"):
        page.locator("#methods").get_by_label(name, exact=True).uncheck()
    page.locator("#methods").get_by_label("integrated_gradients", exact=True).check()
    steps = page.locator("#opt-steps textarea, #opt-steps input").first
    steps.fill("0")
    page.locator("#explain").click()
    try:
        page.get_by_text(want.value.message[:60], exact=False).first.wait_for()
    finally:
        page.screenshot(path=str(shots / "error.png"))
    assert "Traceback" not in page.content()
    page.screenshot(path=str(shots / "error.png"))
    steps.fill("")
    page.locator("#methods").get_by_label("integrated_gradients", exact=True).uncheck()


def test_a_layers_feature_maps_open_and_enlarge(page, shots):
    tab(page, "What layers see")
    page.locator("#layer input").fill("layer1.0.conv1")
    page.get_by_role("option", name="layer1.0.conv1", exact=False).first.click()
    page.locator("#show-maps").click()
    tiles = page.locator("#feature-maps button.thumbnail-item, #feature-maps .thumbnail-item")
    tiles.first.wait_for()
    assert tiles.count() == 16
    page.get_by_text("channel ", exact=False).first.wait_for()
    page.locator("#kernels img").wait_for()
    page.screenshot(path=str(shots / "layers.png"), full_page=True)
    tiles.first.click()
    page.screenshot(path=str(shots / "layers_enlarged.png"))


def test_statistics_draws_the_gradient_flow(page, shots):
    tab(page, "Statistics")
    page.locator("#show-stats").click()
    page.locator("#flow img").wait_for()
    page.locator("#hist img").wait_for()
    page.screenshot(path=str(shots / "statistics.png"), full_page=True)


def test_a_job_folder_loads_and_sorts(page, job, shots):
    from netscope.ui import job_folder

    out, _ = job
    rows = job_folder.read(out).rows
    assert len(rows) == 3
    tab(page, "A batch job")
    page.locator("#open-job").click()
    table = page.locator("#job-table table.ns-job tbody tr")
    table.first.wait_for()
    assert table.count() == 3
    page.locator("#job-sort input").fill("score")
    page.get_by_role("option", name="score", exact=True).click()
    page.locator("#job-desc input").check()
    best = max(rows, key=lambda r: r["score"])["id"]
    page.wait_for_function(
        f"document.querySelector('#job-table tbody tr')?.dataset.id === {best!r}")
    page.locator("#job-table tbody tr").first.click()
    page.locator("#job-overlay img").wait_for()
    page.locator("#job-original img").wait_for()
    page.screenshot(path=str(shots / "job.png"), full_page=True)
