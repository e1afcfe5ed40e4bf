"""One process vs 2 data-parallel (DDP) vs 2 sharded (FSDP) processes on the same cores and the same global batch.

    .venv/bin/python bench/train_scaleout.py                       # dialogsum preset, LoRA and full, 8 steps each
    .venv/bin/python bench/train_scaleout.py --methods lora --steps 4
    .venv/bin/python bench/train_scaleout.py --smoke               # tiny random model, LoRA, 2 steps (CI)

Every variant is `weaver tune PRESET` for --steps optimizer steps of the same 2 x batch_size examples each (the
preset's data and settings, no validation, no checkpoint but the last): `1 process` runs grad_accum 2 with
OMP_NUM_THREADS = the machine's cores; `DDP` and `FSDP` are `torchrun --nproc_per_node 2` with one thread each,
grad_accum 1 (`--train.distributed fsdp` for FSDP). Each process writes its own peak RSS (getrusage, the whole
process: import, model load, steps and the final save) when tune returns; run.json gives the target tokens/s
(over all processes, training time only) and metrics.jsonl the first losses (the same work, so nearly the same
losses: a check that the variants train the same thing). Section "train_scaleout" of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from run import SHARED_NOTE, write_section  # noqa: E402
from train_memory import smoke_preset  # noqa: E402

WORKER = """import json, os, sys
from weaver.config import load_config
from weaver.tuning.run import tune
from weaver.tuning.step import peak_rss_mb, rss_mb
run = tune(load_config(sys.argv[1], sys.argv[2:]))
rank = os.environ.get("RANK", "0")
(run / f"rss-rank{rank}.json").write_text(json.dumps({"peak_rss_mb": peak_rss_mb(), "rss_mb": rss_mb()}))
"""
VARIANTS = ("1 process", "DDP 2 processes", "FSDP 2 processes")
METHOD_ARGS = {"lora": [], "full": ["--train.method", "full", "--train.top_layers", "none"]}


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def run_variant(variant: str, method: str, a, work: Path) -> dict:
    out = work / f"{method}-{variant.split()[0].lower()}"
    args = [str(a.preset), "--train.max_steps", str(a.steps), "--train.eval_every", "0", "--train.save_every", "1000",
            "--train.max_minutes", "none", "--train.logging", "[]", "--train.resume", "never", "--data.dev", "none",
            "--data.test", "none", "--eval.after_tune", "false", "--train.out_dir", str(out), *METHOD_ARGS[method]]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TOKENIZERS_PARALLELISM": "false"}
    if variant == "1 process":
        cmd = [sys.executable, str(work / "worker.py"), *args, "--train.grad_accum", "2"]
        env["OMP_NUM_THREADS"] = str(os.cpu_count())
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", _port(),
               str(work / "worker.py"), *args, "--train.grad_accum", "1"]
        cmd += ["--train.distributed", "fsdp"] if variant.startswith("FSDP") else []
        env["OMP_NUM_THREADS"] = "1"
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{method} / {variant} failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-3000:]}")
    facts = json.loads((out / "run.json").read_text())
    per_rank = [json.loads(p.read_text()) for p in sorted(out.glob("rss-rank*.json"))]
    steps = [e for e in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "train_loss" in e]
    return {"target_tokens_per_s": facts["target_tokens_per_s"], "tokens_per_s": facts["tokens_per_s"],
            "peak_rss_mb": [r["peak_rss_mb"] for r in per_rank], "rank0_step_peak_mb": steps[-1]["peak_rss_mb"],
            "losses": [round(e["train_loss"], 3) for e in steps[:3]], "wall_s": round(wall, 1),
            "precision": facts["precision"], "cmd": " ".join(cmd[1:]).replace(str(ROOT) + "/", "")}


def table(results: dict) -> list[str]:
    lines = ["| method | variant | target tok/s | x 1 process | peak RSS per process MB | x 1 process | "
             "rank 0 peak by the last step MB | first losses | wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for method, rows in results.items():
        one = rows["1 process"]
        for variant, r in rows.items():
            peak = max(r["peak_rss_mb"])
            lines.append(f"| {method} | {variant} | {r['target_tokens_per_s']} | "
                         f"{r['target_tokens_per_s'] / max(one['target_tokens_per_s'], 1e-9):.2f} | "
                         f"{' / '.join(str(x) for x in r['peak_rss_mb'])} | {peak / max(one['peak_rss_mb']):.2f} | "
                         f"{r['rank0_step_peak_mb']} | {', '.join(map(str, r['losses']))} | {r['wall_s']} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", type=Path, default=ROOT / "configs" / "dialogsum-smollm2.yaml")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--methods", default="lora,full")
    p.add_argument("--smoke", action="store_true", help="tiny random model, 24 records, 2 steps (numbers mean nothing)")
    a = p.parse_args()
    work = BENCH / ".work" / ("train_scaleout-smoke" if a.smoke else "train_scaleout")
    work.mkdir(parents=True, exist_ok=True)
    (work / "worker.py").write_text(WORKER)
    if a.smoke:  # LoRA only: three launches keep `make bench-smoke` short (tests/tuning runs sharded full tuning)
        a.preset, a.steps, a.methods = smoke_preset(work, records=24), 2, "lora"
    t0, load0 = time.time(), os.getloadavg()
    results = {m: {v: run_variant(v, m, a, work) for v in VARIANTS} for m in a.methods.split(",")}
    load1 = os.getloadavg()
    argv = " ".join(sys.argv[1:])
    lines = [f"## Scale-out on one machine (`train_scaleout.py`): {a.preset.name}"
             + (" (SMOKE: tiny random model, the numbers mean nothing)" if a.smoke else ""), "",
             f"Command: `.venv/bin/python bench/train_scaleout.py{' ' + argv if argv else ''}` on "
             f"{time.strftime('%Y-%m-%d')} ({(time.time() - t0) / 60:.1f} min; load average (1/5/15 min) "
             f"{' / '.join(f'{x:.1f}' for x in load0)} at start, {' / '.join(f'{x:.1f}' for x in load1)} at the end, "
             f"on {os.cpu_count()} cores). {a.steps} optimizer steps of 2 x batch_size examples per variant: 1 process "
             f"with grad_accum 2 and {os.cpu_count()} threads; DDP and FSDP with 2 processes of one thread each. "
             f"Peak RSS is each process's whole life (load, steps, final save); precision "
             f"{next(iter(next(iter(results.values())).values()))['precision']}. {SHARED_NOTE}", "", *table(results),
             "", "Commands (" + next(iter(results)) + "; full fine-tuning adds `--train.method full --train.top_layers "
             "none`): " + "; ".join(f"`{r['cmd']}`" for r in next(iter(results.values())).values())]
    md = "\n".join(lines) + "\n"
    print(md)
    # --smoke run by hand (not by bench/run.py, which sets WEAVER_BENCH_RESULTS) never touches the committed results
    target = work / "RESULTS.md" if a.smoke and not os.environ.get("WEAVER_BENCH_RESULTS") else None
    print(f"section train_scaleout written to {write_section('train_scaleout', md, path=target)}")


if __name__ == "__main__":
    main()
