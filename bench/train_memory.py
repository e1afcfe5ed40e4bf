"""Training memory and speed of a preset under variants of the recipe: where a step's memory goes.

    .venv/bin/python bench/train_memory.py                                   # adgen-gemma3, 8 steps per variant
    .venv/bin/python bench/train_memory.py --preset configs/dialogsum-smollm2.yaml --steps 8
    .venv/bin/python bench/train_memory.py --threads 1                       # one intra-op thread per run
    .venv/bin/python bench/train_memory.py --smoke                           # tiny random model, 2 steps (CI)

Each variant is `weaver tune PRESET` in its own process for --steps optimizer steps (no validation, no
checkpoints), the preset's data and settings otherwise. From its run.json and metrics.jsonl (which log rss_mb
and peak_rss_mb at every step): target tokens/s, the process's peak RSS, the peak by the end of step 1, and the
resident size after the steps (what a step leaves behind), and the first losses (variants that only move
memory must give the same ones). Variants: default (the shipped recipe), logits-at-once (train.logit_chunk_mb 0,
the loss before chunking), nf4 (train.frozen_dtype nf4), mmapN (train.mmap_threshold_kb N: a fixed glibc threshold
of N KiB), jemalloc (Debian's libjemalloc2 preloaded, glibc's threshold left alone), no-thp (THP_MEM_ALLOC_ENABLE=0:
torch's tensors on normal pages). Section "train_memory" of bench/RESULTS.md
($WEAVER_BENCH_RESULTS) for the adgen-gemma3 preset, "train_memory-PRESET" for another; --smoke alone writes
bench/.work/train_memory-smoke/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from run import SHARED_NOTE, write_section  # noqa: E402

VARIANTS = {"default": [], "logits-at-once": ["--train.logit_chunk_mb", "0"], "nf4": ["--train.frozen_dtype", "nf4"],
            "jemalloc": ["--train.mmap_threshold_kb", "none"], "no-thp": []}
# Variants that differ by the environment: no-thp turns off the huge-page tensors `import weaver` asks torch for
ENV = {"no-thp": {"THP_MEM_ALLOC_ENABLE": "0"}}
# jemalloc: Debian's libjemalloc2 preloaded (apt-get install libjemalloc2)
PRELOAD = {"jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}
DEFAULT_VARIANTS = "default,logits-at-once,nf4"


def run_variant(name: str, a, work: Path) -> dict:
    out = work / name
    mmap = name.startswith("mmap") and name[4:].isdigit()
    extra = ["--train.mmap_threshold_kb", name[4:]] if mmap else VARIANTS[name]
    cmd = [sys.executable, "-m", "weaver.cli", "tune", str(a.preset), "--train.max_steps", str(a.steps),
           "--train.eval_every", "0", "--train.save_every", "1000", "--train.max_minutes", "none",
           "--train.logging", "[]", "--train.resume", "never", "--eval.after_tune", "false",
           "--train.out_dir", str(out), *extra]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(a.threads)} if a.threads else {})}
    env.update(ENV.get(name, {}))
    if name in PRELOAD:
        if not Path(PRELOAD[name]).exists():
            raise SystemExit(f"{name}: {PRELOAD[name]} is not installed (Debian: apt-get install libjemalloc2)")
        env["LD_PRELOAD"] = PRELOAD[name]
    res = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{name} failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-2000:]}")
    facts = json.loads((out / "run.json").read_text())
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [e for e in steps if "train_loss" in e]
    return {"target_tokens_per_s": facts["target_tokens_per_s"], "peak_rss_mb": facts["peak_rss_mb"],
            "peak_step1_mb": steps[0]["peak_rss_mb"], "rss_after_steps_mb": steps[-1].get("rss_mb"),
            "losses": [round(e["train_loss"], 4) for e in steps[:3]], "precision": facts["precision"],
            "frozen": facts.get("frozen_dtype"), "cmd": " ".join(cmd[2:]),
            "allocator": (f"{name} (preloaded)" if name in PRELOAD else facts.get("allocator", "-")).replace("|", "/")}


def smoke_preset(work: Path, records: int = 16) -> Path:
    """A preset on a 2-layer random Llama and `records` made-up records (also bench/train_scaleout.py's)."""
    from time_to_quality import tiny_model

    model = tiny_model(work / "tiny-model")
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "input": f"Report {i}: the river rose after rain in town {i}.",
                                        "output": f"River rose in town {i}."}) + "\n" for i in range(records)))
    preset = work / "smoke.yaml"
    preset.write_text(f"model:\n  name: {model}\ndata:\n  train: {data}\n  task: summarize\n  max_seq_len: 64\n"
                      "train:\n  batch_size: 4\n  top_layers: null\n  precision: fp32\n")
    return preset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", type=Path, default=ROOT / "configs" / "adgen-gemma3.yaml")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for each run (default: torch's)")
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma list of {', '.join(VARIANTS)}, mmapN")
    p.add_argument("--smoke", action="store_true", help="tiny random model, 16 records, 2 steps (numbers mean nothing)")
    a = p.parse_args()
    work = BENCH / ".work" / ("train_memory-smoke" if a.smoke else "train_memory")
    work.mkdir(parents=True, exist_ok=True)
    if a.smoke:
        a.preset, a.steps = smoke_preset(work), 2
    t0, load0 = time.time(), os.getloadavg()[0]
    results = {name: run_variant(name, a, work) for name in a.variants.split(",")}
    argv = " ".join(sys.argv[1:])
    lines = [f"## Training memory by variant (`train_memory.py`): {a.preset.name}"
             + (" (SMOKE: tiny random model, the numbers mean nothing)" if a.smoke else ""), "",
             f"Command: `.venv/bin/python bench/train_memory.py{' ' + argv if argv else ''}` on "
             f"{time.strftime('%Y-%m-%d')} ({(time.time() - t0) / 60:.1f} min, load average {load0:.1f} at start on "
             f"{os.cpu_count()} cores). {a.steps} optimizer steps per variant, the preset's batches, no validation."
             f"{f' OMP_NUM_THREADS={a.threads}.' if a.threads else ''} {SHARED_NOTE}", "",
             "| variant | target tok/s | peak RSS MB | peak by step 1 MB | RSS after the steps MB | first losses | "
             "precision | frozen base | allocator |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['target_tokens_per_s']} | {r['peak_rss_mb']} | {r['peak_step1_mb']} | "
                     f"{r['rss_after_steps_mb']} | {', '.join(map(str, r['losses']))} | {r['precision']} | "
                     f"{r['frozen']} | {r['allocator']} |")
    lines += ["", "Commands: " + "; ".join(f"`{r['cmd']}`" for r in results.values())]
    md = "\n".join(lines) + "\n"
    print(md)
    name = "train_memory" if a.smoke or a.preset.stem == "adgen-gemma3" else f"train_memory-{a.preset.stem}"
    target = work / "RESULTS.md" if a.smoke and not os.environ.get("WEAVER_BENCH_RESULTS") else None
    print(f"section {name} written to {write_section(name, md, target)}")


if __name__ == "__main__":
    main()
