"""`vamp serve` in a real browser: headless Chromium (playwright, Debian's /usr/bin/chromium) against the
server on a free loopback port with a tiny model — type with autocomplete, pick a style expert, generate,
read the image's PNG parameters back, see the routing chart change, drop the PNG to load its parameters.

VAMP_SERVE_SCREENSHOT=path saves a screenshot of the page (docs/images/serve.png is taken this way)."""
import io
import os
import socket
import time

import pytest
from PIL import Image

from test_generate_support import write_tiny_model
from vampdiffusion.generation import generate as G
from vampdiffusion.generation import serve as S

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, taesdxl_path):
    pytest.importorskip("gradio")
    from vampdiffusion.generation.serve_ui import build, launch
    root = tmp_path_factory.mktemp("serve")
    gen = G.load_generator(write_tiny_model(root / "model", taesdxl_path), device="cpu")
    page = build(gen, root / "out")
    port = free_port()
    launch(page, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/", gen
    page.close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium (.ci/run does it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def loopback_only(route):
    url = route.request.url
    if url.startswith(("http://127.0.0.1", "data:", "blob:")):
        route.continue_()
    else:  # nothing leaves this machine
        route.abort()


def set_number(page, elem_id, value):
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def pick(page, elem_id, option):
    page.locator(f"#{elem_id} input").first.click()
    page.locator(f'[role=option][aria-label="{option}"]').first.click()


def routing_gates(page):
    """{block: [(expert, gate)]} of the prompt branch in the routing chart."""
    rows = page.locator("#vamp-routing tr.vamp-style-block")
    out = {}
    for i in range(rows.count()):
        bars = rows.nth(i).locator("td").nth(1).locator(".vamp-bar")
        out[rows.nth(i).get_attribute("data-block")] = [
            (bars.nth(j).get_attribute("data-expert"), bars.nth(j).get_attribute("data-gate")) for j in range(bars.count())]
    return out


def generate_and_wait(page, mode):
    page.locator("#vamp-generate").click()
    page.wait_for_selector(f'#vamp-routing .vamp-routing[data-style="{mode}"]', timeout=30_000)
    page.wait_for_selector("#vamp-gallery img", timeout=30_000)


def test_generate_in_the_browser(server, browser, tmp_path):
    url, gen = server
    t0 = time.time()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.route("**/*", loopback_only)
    page.goto(url, wait_until="domcontentloaded")
    prompt = page.locator("#vamp-prompt textarea")
    prompt.wait_for(timeout=30_000)
    prompt.press_sequentially("1girl, lon", delay=30)                   # autocomplete from the vocabulary
    page.locator("#vamp-suggestions label", has_text="long_hair").click()
    page.wait_for_function("document.querySelector('#vamp-prompt textarea').value.includes('long_hair')")
    prompt.press_sequentially("mecha", delay=30)
    page.locator("#vamp-prompt-info .vamp-unknown", has_text="mecha").wait_for(timeout=10_000)
    prompt.fill("1girl, long_hair, masterpiece")
    prompt.press("End")
    set_number(page, "vamp-seed", 5)
    set_number(page, "vamp-steps", 2)
    generate_and_wait(page, "routed")
    routed = routing_gates(page)

    page.locator("#vamp-style-mode label", has_text="mix").click()     # pick style expert 2
    pick(page, "vamp-expert-a", S.style_choices(S.cluster_names(gen.cfg))[2])
    generate_and_wait(page, "forced")
    forced = routing_gates(page)
    assert forced and all(bars == [("2", "1.000")] for bars in forced.values())
    assert forced != routed

    src = page.locator("#vamp-gallery img").first.get_attribute("src")
    png = page.request.get(src if src.startswith("http") else url.rstrip("/") + src).body()
    params = G.parse_parameters(Image.open(io.BytesIO(png)).info["parameters"])
    assert params["prompt"] == "1girl, long_hair, masterpiece"
    assert (params["Seed"], params["Steps"], params["Style experts"], params["Quality tier"]) == ("5", "2", "2:1", "3")
    assert page.locator("#vamp-infotext textarea").input_value().startswith("1girl, long_hair, masterpiece\n")

    saved = tmp_path / "dropped.png"
    saved.write_bytes(png)
    prompt.fill("")
    page.locator("#vamp-png-drop input[type=file]").set_input_files(str(saved))   # parameters back in the form
    page.wait_for_function("document.querySelector('#vamp-prompt textarea').value.includes('masterpiece')",
                           timeout=15_000)
    page.locator("#vamp-prompt-info .vamp-quality", has_text="quality tier 3").wait_for(timeout=10_000)
    if os.environ.get("VAMP_SERVE_SCREENSHOT"):  # 256 colours: a UI screenshot stays sharp and small
        shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
        shot.quantize(256, method=Image.Quantize.MEDIANCUT).save(os.environ["VAMP_SERVE_SCREENSHOT"], optimize=True)
    page.close()
    assert time.time() - t0 < 60
