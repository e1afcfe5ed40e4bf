"""`make demo` wall time on each decoding backend (issue #16: before/after the llama.cpp default).

    .venv/bin/python bench/demo_time.py            # the demo twice: --backend transformers, then auto (~16 min)
    .venv/bin/python bench/demo_time.py --smoke    # both on the demo's --smoke settings

Runs `python -m weaver.demo --backend B --out bench/.work/demo_time/B` for B = transformers (the default
before) and auto (the default now: llama.cpp on a CPU, the tuned run exported to GGUF once), each in its own
process, and times the whole command, its tuning stage (a fixed time budget, the same for both) and the rest
(evaluation of base and tuned, the GGUF exports included). Section "demo_time" of bench/RESULTS.md.
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


def run_demo(backend: str, smoke: bool) -> dict:
    out = WORK / backend
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "weaver.demo", "--backend", backend, "--out", str(out)]
    cmd += ["--smoke"] if smoke else []
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    tuned = re.search(r"tuned in ([0-9.]+) min", proc.stdout)
    report = json.loads((out / "eval" / "report.json").read_text())
    speed = report.get("speed", {})
    rouge = report["metrics"].get("rougeL", {})
    return {"backend": backend, "wall_s": wall, "tune_s": float(tuned.group(1)) * 60 if tuned else float("nan"),
            "decoded_on": {k: v.get("backend") for k, v in speed.items()} if isinstance(speed, dict) else {},
            "rouge_base": rouge.get("base"), "rouge_tuned": rouge.get("tuned"), "n": report.get("n")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="the demo's --smoke settings (2 steps, 4 test examples)")
    a = p.parse_args()
    load0 = os.getloadavg()[0]
    rows = [run_demo(b, a.smoke) for b in BACKENDS]
    before, after = rows
    lines = ["| --backend | whole demo | tuning | evaluation (+ exports) | ROUGE-L base -> tuned | decoded on |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        rest = r["wall_s"] - r["tune_s"]
        rl = (f"{r['rouge_base']:.2f} -> {r['rouge_tuned']:.2f}" if r["rouge_tuned"] is not None else "n/a")
        lines.append(f"| {r['backend']} | {r['wall_s'] / 60:.1f} min | {r['tune_s'] / 60:.1f} min | "
                     f"{rest / 60:.1f} min | {rl} | {json.dumps(r['decoded_on'])} |")
    eval_ratio = (before["wall_s"] - before["tune_s"]) / max(after["wall_s"] - after["tune_s"], 1e-9)
    command = "nice -n 0 .venv/bin/python bench/demo_time.py" + (" --smoke" if a.smoke else "")
    md = f"""## `make demo` wall time per decoding backend (`demo_time.py`)

Command: `{command}` (load average {load0:.1f} at start, {os.cpu_count()} cores; each demo in its own process, one
after the other). {"SMOKE RUN: 2 training steps, 4 test examples." if a.smoke else ""}

{chr(10).join(lines)}

Whole demo: {before['wall_s'] / 60:.1f} min on transformers (the default before) -> {after['wall_s'] / 60:.1f} min on
auto (the default now), {before['wall_s'] / after['wall_s']:.2f}x; the evaluation stage alone (base and tuned on the
held-out set, the GGUF exports included) {eval_ratio:.2f}x. Tuning has a fixed time budget
(`python -m weaver.demo --minutes`, 6 by default), so the demo cannot go below it whatever the backend; the
issue's goal of under 5 minutes for the whole demo is missed by that budget alone. ROUGE-L differs between the
two rows because the two runs are trained separately in a time budget (different step counts under
different load) and decoded on different numerics.

{SHARED_NOTE}
"""
    target = WORK / "RESULTS.md" if a.smoke and not os.environ.get("WEAVER_BENCH_RESULTS") else None
    print(md)
    print(f"section demo_time written to {write_section('demo_time', md, path=target)}")


if __name__ == "__main__":
    main()
