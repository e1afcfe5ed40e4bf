"""`make demo` / `make demo-zh` wall time on each decoding backend (issue #16: before/after the llama.cpp default).

    .venv/bin/python bench/demo_time.py                # `make demo` twice: --backend transformers, then auto (~16 min)
    .venv/bin/python bench/demo_time.py --lang zh      # `make demo-zh` (Gemma-3-270M, Chinese paper titles) twice
    .venv/bin/python bench/demo_time.py --smoke        # both on the demo's --smoke settings
    .venv/bin/python bench/demo_time.py --minutes 30   # a budget the 2 epochs fit in: both runs train the same steps
    .venv/bin/python bench/demo_time.py --lang zh --backends auto   # only what `make demo-zh` runs (~10 min)

Runs `python -m weaver.demo --lang L --backend B --out bench/.work/demo_time/L-B` for B = transformers (the
default before) and auto (the default now: llama.cpp on a CPU, the tuned run served as the base GGUF + a GGUF LoRA),
each in its own process, and times the whole command, its tuning stage (a fixed time budget, the same for both) and
the rest (evaluation of base and tuned, the GGUF exports included). The demo's budget is wall-clock: on a machine
that other work loads, the two runs may train different numbers of steps (the table says how many); `--minutes`
gives both a budget their epochs fit in, so both train the same steps (seeded: the same weights) and only the
decoding differs. Section "demo_time" (en) or "demo_time_zh" of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work" / "demo_time"
sys.path.insert(0, str(Path(__file__).parent))
from run import SHARED_NOTE, write_section  # noqa: E402

BACKENDS = ("transformers", "auto")


def run_demo(backend: str, smoke: bool, lang: str, minutes: float | None = None) -> dict:
    out = WORK / f"{lang}-{backend}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "weaver.demo", "--lang", lang, "--backend", backend, "--out", str(out)]
    cmd += ["--smoke"] if smoke else []
    cmd += ["--minutes", str(minutes)] if minutes is not None else []
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    print(proc.stdout[-3000:], flush=True)
    tuned = re.search(r"total [0-9.]+ min \(tuning ([0-9.]+), evaluation", proc.stdout)
    if tuned is None:
        sys.exit(f"{' '.join(cmd)} printed no 'total ... (tuning ..., evaluation ...)' line to time its stages")
    report = json.loads((out / "eval" / "report.json").read_text())
    speed = report.get("speed", {})
    rouge = report["metrics"].get("rougeL", {})
    return {"backend": backend, "wall_s": wall, "tune_s": float(tuned.group(1)) * 60,
            "decoded_on": {k: v.get("backend") for k, v in speed.items()} if isinstance(speed, dict) else {},
            "rouge_base": rouge.get("base"), "rouge_tuned": rouge.get("tuned"),
            "steps": json.loads((out / "run.json").read_text()).get("steps")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="the demo's --smoke settings (2 steps, 4 test examples)")
    p.add_argument("--lang", default="en", choices=("en", "zh"), help="en: `make demo`; zh: `make demo-zh`")
    p.add_argument("--minutes", type=float, default=None,
                   help="the demo's training budget (default: the demo's own); one the epochs fit in makes both runs "
                        "train the same steps")
    p.add_argument("--backends", default=",".join(BACKENDS),
                   help="comma-separated, from: transformers, auto (`auto` alone times the demo as `make` runs it)")
    a = p.parse_args()
    backends = [b for b in a.backends.split(",") if b]
    if not backends or set(backends) - set(BACKENDS):
        p.error(f"--backends: choose from {', '.join(BACKENDS)}, got {a.backends!r}")
    load0 = os.getloadavg()[0]
    rows = [run_demo(b, a.smoke, a.lang, a.minutes) for b in backends]
    lines = ["| --backend | whole demo | tuning | steps | evaluation (+ exports) | ROUGE-L base -> tuned "
             "| decoded on |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        rest = r["wall_s"] - r["tune_s"]
        rl = (f"{r['rouge_base']:.2f} -> {r['rouge_tuned']:.2f}" if r["rouge_tuned"] is not None else "n/a")
        lines.append(f"| {r['backend']} | {r['wall_s'] / 60:.1f} min | {r['tune_s'] / 60:.1f} min | {r['steps']} | "
                     f"{rest / 60:.1f} min | {rl} | {json.dumps(r['decoded_on'])} |")
    command = ".venv/bin/python bench/demo_time.py" + (" --smoke" if a.smoke else "") + \
        (" --lang zh" if a.lang == "zh" else "") + (f" --minutes {a.minutes:g}" if a.minutes is not None else "") + \
        (f" --backends {','.join(backends)}" if backends != list(BACKENDS) else "")
    make, budget, goal = ("make demo", 6, 5) if a.lang == "en" else ("make demo-zh", 5, 10)
    budget_line = (f"Tuning has a fixed time budget (`python -m weaver.demo --minutes`, {budget} by default"
                   f"{f'; {a.minutes:g} here' if a.minutes is not None else ''}), so the demo cannot go below it, or "
                   f"below the time its steps take, whatever the backend (goal: under {goal} minutes for the whole "
                   "demo).")
    if len(rows) == 2:
        compared = _compared(rows, budget_line)
    else:
        r = rows[0]
        compared = (f"Whole demo on --backend {r['backend']}: {r['wall_s'] / 60:.1f} min "
                    f"({'under' if r['wall_s'] < goal * 60 else 'NOT under'} the {goal}-minute goal). {budget_line}")
    md = f"""## `{make}` wall time per decoding backend (`demo_time.py`)

Command: `{command}` (load average {load0:.1f} at start, {os.cpu_count()} cores; each demo in its own process, one
after the other). {"SMOKE RUN: 2 training steps, 4 test examples." if a.smoke else ""}

{chr(10).join(lines)}

{compared}

{SHARED_NOTE}
"""
    target = WORK / "RESULTS.md" if a.smoke and not os.environ.get("WEAVER_BENCH_RESULTS") else None
    print(md)
    section = "demo_time" if a.lang == "en" else "demo_time_zh"
    print(f"section {section} written to {write_section(section, md, path=target)}")


def _compared(rows: list[dict], budget_line: str) -> str:
    """The paragraph comparing transformers (the default before) with auto (the default now)."""
    before, after = (next(r for r in rows if r["backend"] == b) for b in BACKENDS)
    eval_ratio = (before["wall_s"] - before["tune_s"]) / max(after["wall_s"] - after["tune_s"], 1e-9)
    same_steps = ("Both runs trained the same steps (seeded: the same weights), so ROUGE-L differs by the decoding "
                  "numerics alone (llama.cpp's q8_0 export vs transformers fp32)." if before["steps"] == after["steps"]
                  else "The two runs trained different numbers of steps in the wall-clock budget (other work loaded "
                       "the machine), so their ROUGE-L is not comparable; rerun with --minutes 30.")
    return f"""Whole demo: {before['wall_s'] / 60:.1f} min on transformers (the default before) -> \
{after['wall_s'] / 60:.1f} min on auto (the default now), {before['wall_s'] / after['wall_s']:.2f}x; the evaluation \
stage alone (base and tuned on the held-out set, the GGUF exports included) {eval_ratio:.2f}x. {budget_line} \
{same_steps}"""


if __name__ == "__main__":
    main()
