"""Screenshots of the writer's studio, one per view, taken while really using it: docs/studio/*.png.

    .venv/bin/python bench/studio_screens.py --adapter news=runs/headline   # embedded model + a tuned run
    .venv/bin/python bench/studio_screens.py                                 # embedded model only (no blind)
    .venv/bin/python bench/studio_screens.py --smoke                         # tiny random model -> bench/plots

The server is built as `weaver serve` builds it (the support route on an index of the FAQ in
tests/apps/fixtures); headless Chromium at 1280 px wide writes drafts (choosing and editing one), runs a
blind compare when an adapter is served, processes two news articles (XSum test, first two, when
/work/shared/data is there), writes ad copy, answers a support message and opens a cited passage, lists the
history, and shows the Write view in Chinese. Every text on the screenshots is what the model wrote.
--smoke writes to the bench plots folder, never to docs/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
XSUM = ROOT.parent / "shared" / "data" / "news_summ_xsum" / "test.jsonl"
FALLBACK = ["The city council approved a new budget on Tuesday that adds money for buses and bike lanes. The mayor "
            "said the plan would cut traffic in the centre within two years.",
            "Heavy rain closed every school in Leeds on Monday. The council said buses would stop at noon and asked "
            "parents to collect their children early."]
QUESTION = "I forgot my Gmail password and lost the phone number tied to it"


def _articles() -> list[str]:
    if XSUM.is_file():
        rows = [json.loads(x) for x in XSUM.read_text(encoding="utf-8").splitlines()[:2]]
        return [r["input"][:900] for r in rows]
    return FALLBACK


def _wait(driver, condition, seconds: float = 600):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.2).until(condition)


def _set(driver, element_id: str, value: str) -> None:
    el = driver.find_element("id", element_id)
    el.clear()
    el.send_keys(value)


def _shot(driver, out: Path, name: str) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_script("document.activeElement && document.activeElement.blur()")
    driver.set_window_size(1280, max(800, min(2400, height + 140)))
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.3)
    driver.save_screenshot(str(out / f"{name}.png"))
    print(f"wrote {out / name}.png", flush=True)
    driver.set_window_size(1280, 900)


def _write(driver, model: str, task: str, text: str, n: int, blind: bool) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "model")).select_by_value(model)
    Select(driver.find_element("id", "task")).select_by_value(task)
    _set(driver, "field-input", text)
    _set(driver, "n", str(n))
    box = driver.find_element("id", "blind")
    if box.is_selected() != blind:
        box.click()
    driver.find_element("id", "write").click()
    _wait(driver, lambda d: not d.find_element("id", "write").get_attribute("disabled")
          and "writing" not in d.find_element("id", "candidates").text)


def take(url: str, out: Path, tuned: str | None, base: str, task: str) -> None:
    from selenium.webdriver.common.keys import Keys
    from studio_latency import _browser

    with tempfile.TemporaryDirectory() as profile:
        d = _browser(Path(profile))
        try:
            d.get(url + "/")
            _wait(d, lambda d: len(d.find_elements("css selector", "#model option")) >= 1)
            article = _articles()[0]
            _write(d, tuned or base, task, article, 3, False)
            cards = d.find_elements("css selector", "#candidates .candidate")
            cards[0].find_element("css selector", ".choose").click()
            text = cards[0].find_element("css selector", ".text")
            text.click()
            text.send_keys(Keys.CONTROL, Keys.END)
            text.send_keys(" (edited)")
            d.find_element("id", "field-input").click()
            _wait(d, lambda d: "saved" in cards[0].text, 30)
            _shot(d, out, "write")
            if tuned:
                _write(d, tuned, task, article, 4, True)
                d.find_elements("css selector", "#candidates .choose")[1].click()
                _shot(d, out, "blind")
            d.find_element("id", "tab-newsroom").click()
            _set(d, "news-paste", "\n---\n".join(_articles()))
            _set(d, "news-n", "2")
            d.find_element("id", "news-run").click()
            _wait(d, lambda d: len(d.find_elements("css selector", "#news-results .news")) == 2)
            _shot(d, out, "newsroom")
            d.find_element("id", "tab-adcopy").click()
            _set(d, "ad-product", "merino wool hiking socks")
            _set(d, "ad-audience", "weekend hikers")
            _set(d, "ad-tone", "warm, friendly")
            _set(d, "ad-keywords", "merino, warm, blister-free")
            _set(d, "ad-n", "3")
            d.find_element("id", "ad-run").click()
            _wait(d, lambda d: d.find_elements("css selector", "#ad-results .candidate"))
            d.find_element("css selector", "#ad-results .choose").click()
            _shot(d, out, "adcopy")
            d.find_element("id", "tab-support").click()
            _set(d, "sup-question", QUESTION)
            d.find_element("id", "sup-run").click()
            _wait(d, lambda d: d.find_element("id", "sup-result").is_displayed())
            links = d.find_elements("css selector", "#sup-citations a.citation")
            if links:
                links[0].click()
            _shot(d, out, "support")
            if links:
                d.find_element("css selector", "#passage button").click()
            d.find_element("id", "tab-history").click()
            _wait(d, lambda d: d.find_elements("css selector", "#history-list .history-item"))
            _shot(d, out, "history")
            d.find_element("id", "tab-write").click()
            d.find_element("id", "lang").click()
            _shot(d, out, "write-zh")
        finally:
            d.quit()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--adapter", default=None, metavar="NAME=RUN", help="a tuned run served beside the base")
    ap.add_argument("--task", default="headline", help="task of the Write and blind screenshots")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="folder for the PNGs (default docs/studio; smoke: bench plots)")
    ap.add_argument("--smoke", action="store_true", help="tiny random model, to the bench plots folder (CI)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from run import plots_dir
    from serve_load import _start, _tiny_model

    from weaver.apps.retrieval import build_index
    from weaver.cli.serve import parse_adapters
    from weaver.generate.rows import base_id
    from weaver.serve.settings import ServeSettings

    out = Path(args.out) if args.out else (plots_dir() / "studio" if args.smoke else ROOT / "docs" / "studio")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = str(_tiny_model(Path(tmp) / "tiny")) if args.smoke else args.model
        adapters = parse_adapters([args.adapter] if args.adapter else [])
        build_index(ROOT / "tests" / "apps" / "fixtures" / "support_faq.jsonl", Path(tmp) / "kb.sqlite")
        settings = ServeSettings(model=model, adapters=adapters, threads=args.threads, max_n=8,
                                 studio_db=str(Path(tmp) / "studio.sqlite"), support_index=str(Path(tmp) / "kb.sqlite"))
        url, server, thread = _start(settings)
        try:
            take(url, out, next(iter(adapters), None), base_id(model), args.task)
        finally:
            server.should_exit = True
            thread.join(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
