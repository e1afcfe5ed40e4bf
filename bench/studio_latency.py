"""The writer's studio in a real browser: press Write -> first token on screen, and -> the last draft done.

    .venv/bin/python bench/studio_latency.py                 # smollm2-135m-instruct (embedded), 20 requests
    .venv/bin/python bench/studio_latency.py --requests 5 --drafts 2 --threads 1
    .venv/bin/python bench/studio_latency.py --smoke         # tiny random model, 3 requests (CI)

`weaver serve` as the CLI builds it (create_app + uvicorn on 127.0.0.1, default transformers backend)
serves the page; headless Chromium (Debian's chromium + chromedriver, Selenium) opens it, picks the
headline task, pastes a news article and presses Write, `--requests` times. The times are measured in the
page itself with performance.now(): from the Write button's click event to the first draft text node
holding a character (a MutationObserver on the cards), and to the status line saying every draft is done.
The page weight is the sum of the bytes the browser fetched for the page (Resource Timing, uncompressed
body sizes), with the list of every URL it loaded: all must be on the server's own origin. Written to
bench/RESULTS.md, section studio_latency.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
ARTICLE = ("The city council approved a new budget on Tuesday that adds money for buses and bike lanes. The mayor "
           "said the plan would cut traffic in the centre within two years, while opposition members warned that "
           "fares could still rise next spring.")
PROBE = """
window.__probe = null;
const done = (t) => { window.__probe = t; };
const t = {click: null, first: null, last: null};
const cards = document.getElementById('candidates');
const observer = new MutationObserver(() => {
  if (t.click !== null && t.first === null && [...cards.querySelectorAll('.text')].some(x => x.textContent.length))
    t.first = performance.now();
});
observer.observe(cards, {subtree: true, childList: true, characterData: true});
const status = document.getElementById('status');
const statusObserver = new MutationObserver(() => {
  if (t.click !== null && t.last === null && status.textContent === W.t('status_done')) {
    t.last = performance.now(); observer.disconnect(); statusObserver.disconnect(); done(t);
  }
});
statusObserver.observe(status, {childList: true, characterData: true, subtree: true});
const button = document.getElementById('write');
button.addEventListener('click', () => { t.click = performance.now(); }, {capture: true, once: true});
button.click();
"""


def _tiny_model(out: Path) -> Path:
    from serve_load import _tiny_model as make

    return make(out)


def _browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    return driver


def _page_weight(driver, url: str) -> tuple[int, list[str]]:
    """Bytes of the page and every resource it loaded (decoded body sizes), and the URLs loaded."""
    entries = driver.execute_script(
        "return [performance.getEntriesByType('navigation')[0], ...performance.getEntriesByType('resource')]"
        ".map(e => [e.name, e.decodedBodySize])")
    page = [(name, size) for name, size in entries if "/v1/" not in name]
    return sum(size for _, size in page), [name for name, _ in entries]


def _ready(driver) -> None:
    from selenium.webdriver.support.ui import Select, WebDriverWait

    WebDriverWait(driver, 120).until(lambda d: len(Select(d.find_element("id", "task")).options) > 1)
    Select(driver.find_element("id", "task")).select_by_value("headline")
    field = WebDriverWait(driver, 30).until(lambda d: d.find_element("id", "field-input"))
    field.send_keys(ARTICLE)


def _press(driver, limit_s: float = 900) -> dict:
    """Press Write with the probe installed; the probe's times once every draft is done."""
    deadline = time.monotonic() + limit_s
    while driver.find_element("id", "write").get_attribute("disabled") and time.monotonic() < deadline:
        time.sleep(0.05)  # the previous press is still recording its drafts
    driver.execute_script(PROBE)
    while time.monotonic() < deadline:
        t = driver.execute_script("return window.__probe")
        if t:
            return t
        error = driver.find_element("id", "error").text
        if error:
            raise RuntimeError(f"the page shows an error: {error}")
        time.sleep(0.05)
    raise RuntimeError(f"no draft finished within {limit_s:g} s; status: {driver.find_element('id', 'status').text!r}")


def measure(url: str, requests: int, drafts: int, profile: Path) -> dict:
    driver = _browser(profile)
    try:
        driver.get(url + "/")
        _ready(driver)
        weight, loaded = _page_weight(driver, url)
        n = driver.find_element("id", "n")
        n.clear()
        n.send_keys(str(drafts))
        t = _press(driver)  # warm-up, not counted
        print(f"warm-up: last draft {(t['last'] - t['click']) / 1000:.3f} s", flush=True)
        first, last = [], []
        for _ in range(requests):
            t = _press(driver)
            first.append((t["first"] - t["click"]) / 1000)
            last.append((t["last"] - t["click"]) / 1000)
            print(f"first token {first[-1]:.3f} s, last draft {last[-1]:.3f} s", flush=True)
    finally:
        driver.quit()
    external = [u for u in loaded if not u.startswith(url)]
    return {"first": first, "last": last, "weight": weight, "loaded": loaded, "external": external}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--requests", type=int, default=None, help="measured presses of Write (default 20, smoke 3)")
    ap.add_argument("--drafts", type=int, default=3, help="drafts per request (the page's default: 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--smoke", action="store_true", help="tiny random model, 3 requests (CI)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from run import SHARED_NOTE, write_section
    from serve_load import _start

    from weaver.serve.settings import ServeSettings

    requests = args.requests or (3 if args.smoke else 20)
    with tempfile.TemporaryDirectory() as tmp:
        model = str(_tiny_model(Path(tmp) / "tiny")) if args.smoke else args.model
        settings = ServeSettings(model=model, threads=args.threads, studio_db=str(Path(tmp) / "studio.sqlite"))
        url, server, thread = _start(settings)
        try:
            t0 = time.perf_counter()
            r = measure(url, requests, args.drafts, Path(tmp) / "chromium")
            wall = time.perf_counter() - t0
        finally:
            server.should_exit = True
            thread.join(timeout=30)
    cmd = "python bench/studio_latency.py " + " ".join(argv if argv is not None else sys.argv[1:])
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    p50_first, p50_last = statistics.median(r["first"]), statistics.median(r["last"])
    lines = ["## The writer's studio: Write -> first token, -> last draft (`studio_latency.py`)", "",
             f"Command: `{cmd.strip()}` ({wall:.0f} s)", "",
             f"Model `{'tiny random (smoke)' if args.smoke else args.model}`, default backend (transformers, CPU), "
             f"torch threads {args.threads or 'default'}; headless Chromium on the same machine; headline task, "
             f"one news article, {args.drafts} drafts per press (the page's default), the task's own token limit, "
             f"{requests} presses after one warm-up. Load average at the end: {load}. The machine is shared with "
             "other agents' jobs, so absolute times are noisy. " + SHARED_NOTE, "",
             "| measure | p50 s | min s | max s |", "|---|---|---|---|",
             f"| Write -> first token on screen | {p50_first:.3f} | {min(r['first']):.3f} | {max(r['first']):.3f} |",
             f"| Write -> last draft done | {p50_last:.3f} | {min(r['last']):.3f} | {max(r['last']):.3f} |", "",
             f"Page weight: {r['weight']} bytes (index.html, CSS, JS; uncompressed) over "
             f"{len([u for u in r['loaded'] if '/v1/' not in u])} files; "
             f"{len(r['loaded'])} URLs loaded in all, external: {len(r['external'])}"
             + (f" ({', '.join(r['external'])})" if r["external"] else " (everything from the server itself; the "
                "page's Content-Security-Policy allows nothing else)") + "."]
    write_section("studio_latency", "\n".join(lines))
    print("\n".join(lines))
    return 1 if r["external"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
