"""Label-scarce tuning (issue #20's "Measured"): do self-trained examples, or actively selected labels, help
when only M labelled examples exist?

    nice -n 10 .venv/bin/python bench/label_scarce.py                 # dialogsum + support replies, SmolLM2-135M
    nice -n 10 .venv/bin/python bench/label_scarce.py --tasks support # one task
    .venv/bin/python bench/label_scarce.py --smoke                    # tiny random Llama, 2 steps per run (~1 min)

--concurrent-select ranks the active-selection pool in a second process (one thread) while run M tunes and synth
writes (select needs only the base model): the task's wall time drops by about the select time; the reported
seconds of each phase then include the contention. --resume continues a stopped invocation in the same --work
folder: finished runs (their seconds are not known again) and select's list (with its seconds) are reused, synth
continues where it stopped (its seconds are this invocation's part).

Per task (its preset: configs/dialogsum-smollm2.yaml, configs/support-smollm2.yaml), with the same step budget
(--steps) for every run:
1. M = --m labelled examples, a seeded sample of the training file: run "M" (LoRA from the base model).
2. Self-training: run M writes outputs for N = --n other training inputs (their labels discarded) with
   `weaver data synth` (weaver.tuning.synth, default filters); run "M+synth" trains on the M real examples plus
   the kept synthetic ones (data.synthetic, weight 1).
3. Active selection: the base model ranks a pool of --pool other training inputs (`weaver data select`); the
   top M get their real references (a person labelling them): run "M active", against run M (M random).
4. `evaluate()` of M+synth against M and of M active against M on the first --limit test records (greedy, paired
   bootstrap 95% CIs). The section "label_scarce" of bench/RESULTS.md ($WEAVER_BENCH_RESULTS) is rewritten;
   --smoke alone writes bench/.work/label_scarce/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work" / "label_scarce"
sys.path.insert(0, str(Path(__file__).parent))
from dpo import flags, talky_tiny_model  # noqa: E402
from run import SHARED_NOTE, write_section  # noqa: E402

TASKS = {"dialogsum": ROOT / "configs" / "dialogsum-smollm2.yaml", "support": ROOT / "configs" / "support-smollm2.yaml"}
DEFAULTS = {"m": 50, "n": 500, "pool": 500, "steps": 60, "limit": 100}


def run_overrides(a, name: str, train: Path, out: str, synthetic: Path | None = None) -> dict:
    values = {"data.train": str(train), "data.split": "[1.0, 0.0, 0.0]", "data.limit_train": "none",
              "data.synthetic": str(synthetic) if synthetic else "none", "train.out_dir": str(WORK / name / out),
              "train.logging": "[]", "train.resume": "never", "train.max_steps": a.steps, "train.max_minutes": "none",
              "train.epochs": 1000, "generate.max_new_tokens": a.max_new_tokens}
    if a.smoke:
        values.update({"model.name": str(talky_tiny_model()), "train.top_layers": "none", "train.eval_every": 0,
                       "data.limit_dev": 4, "data.max_seq_len": 256, "train.gradient_checkpointing": False})
    return values


def write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": r.id, "instruction": r.instruction, "input": r.input,
                                        "output": r.output, "meta": r.meta}, ensure_ascii=False) + "\n"
                            for r in records), encoding="utf-8")
    return path


def run_select(a, base_cfg, candidates, backend: str) -> list[dict]:
    from weaver.generate.engine import load_generator
    from weaver.models.loading import load_model
    from weaver.tuning.select import select_inputs

    base_spec = base_cfg.model.name
    gen = load_generator(base_spec, backend=backend, batch_size=8)[0]
    return select_inputs(candidates, gen, load_model(base_spec), base_cfg.data, a.m, k=a.k,
                         max_new_tokens=a.max_new_tokens)


def select_process(a, name: str, preset: str, ids: list[str], backend: str, work: str) -> None:
    """--concurrent-select: `run_select` in its own process (one torch thread), written to WORK/name/picked.json."""
    global WORK
    WORK = Path(work)
    import torch

    from weaver.config import load_config
    from weaver.data.readers import read_records

    torch.set_num_threads(1)
    base_cfg = load_config(Path(preset), flags({"model.name": str(talky_tiny_model())} if a.smoke else {}))
    by_id = {r.id: r for r in read_records(base_cfg.data.train)}
    t0 = time.perf_counter()
    picked = run_select(a, base_cfg, [by_id[i] for i in ids], backend)
    save_picked(WORK / name / "picked.json", picked, time.perf_counter() - t0)


def save_picked(path: Path, picked: list[dict], seconds: float) -> None:
    path.write_text(json.dumps({"picked": picked, "seconds": seconds}, ensure_ascii=False), encoding="utf-8")


def load_picked(path: Path) -> tuple[list[dict], float]:
    saved = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(saved, list):  # written by the first --concurrent-select version: the list, then {"seconds"}
        return saved[:-1], saved[-1]["seconds"]
    return saved["picked"], saved["seconds"]


def finished_run(a, run_dir: Path) -> Path | None:
    """--resume: a run folder an earlier (stopped) invocation finished, else None (then it is tuned again)."""
    return run_dir if a.resume and (run_dir / "adapter" / "adapter_model.safetensors").is_file() else None


def one_task(a, name: str, preset: Path) -> dict:
    """The four runs and two evaluations of one task; returns what the section reports."""
    from weaver.config import load_config
    from weaver.data.readers import read_records
    from weaver.eval.runner import evaluate
    from weaver.tuning.run import tune
    from weaver.tuning.synth import synthesize
    from weaver.tuning.synth_filters import SynthSettings

    if not a.resume:
        shutil.rmtree(WORK / name, ignore_errors=True)
    base_cfg = load_config(preset, flags({"model.name": str(talky_tiny_model())} if a.smoke else {}))
    test_inputs = {r.input for r in read_records(base_cfg.data.test)}
    pool = [r for r in read_records(base_cfg.data.train) if r.input not in test_inputs]
    random.Random(0).shuffle(pool)
    labelled, rest = pool[: a.m], pool[a.m :]
    unlabelled, candidates = rest[: a.n], rest[: a.pool]
    t = {}
    files = {"labelled": write_jsonl(WORK / name / "labelled.jsonl", labelled),
             "unlabelled": write_jsonl(WORK / name / "unlabelled.jsonl", unlabelled)}
    backend = "transformers" if a.smoke else "auto"  # `weaver data synth/select`'s default: llama.cpp on a CPU
    selecting, picked_file = None, WORK / name / "picked.json"  # picked_file exists only when resumed
    if a.concurrent_select and not picked_file.is_file():  # a second process ranks while run M tunes and synth writes
        selecting = multiprocessing.get_context("spawn").Process(
            target=select_process, args=(a, name, str(preset), [r.id for r in candidates], backend, str(WORK)))
        selecting.start()
    t0 = time.perf_counter()
    run_m = finished_run(a, WORK / name / "m")
    if run_m is None:
        run_m = tune(load_config(preset, flags(run_overrides(a, name, files["labelled"], "m"))))
        t["tune_m"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    synth_out = WORK / name / "synth.jsonl"
    loose = {"min_logprob": -100.0, "min_agreement": 0.0, "keep_truncated": True, "max_new_tokens": a.max_new_tokens}
    settings = SynthSettings(k=a.k, **(loose if a.smoke else {}))  # a random model passes nothing
    summary = synthesize(str(run_m), files["unlabelled"], synth_out, base_cfg.data, settings, backend=backend,
                         batch_size=8)
    t["synth"] = time.perf_counter() - t0
    if not summary["kept"]:
        raise SystemExit(f"{name}: synth kept no example of {len(unlabelled)} (see {synth_out}): nothing to compare")
    run_ms = finished_run(a, WORK / name / "m_synth") or tune(
        load_config(preset, flags(run_overrides(a, name, files["labelled"], "m_synth", synth_out))))

    if selecting is not None:
        selecting.join()
        if selecting.exitcode != 0:
            raise SystemExit(f"{name}: the select process failed (exit {selecting.exitcode})")
    if not picked_file.is_file():
        t0 = time.perf_counter()
        save_picked(picked_file, run_select(a, base_cfg, candidates, backend), time.perf_counter() - t0)
    picked, t["select"] = load_picked(picked_file)
    by_id = {r.id: r for r in candidates}
    files["active"] = write_jsonl(WORK / name / "active.jsonl", [by_id[p["id"]] for p in picked])  # "labelled"
    run_active = finished_run(a, WORK / name / "m_active") or tune(
        load_config(preset, flags(run_overrides(a, name, files["active"], "m_active"))))

    reports = {}
    for label, run in (("synth", run_ms), ("active", run_active)):
        cfg = load_config(run / "config.yaml", flags({
            "model.name": str(run), "eval.base": str(run_m), "data.test": base_cfg.data.test, "eval.limit": a.limit,
            "eval.out_dir": str(WORK / name / f"eval_{label}"), "generate.max_new_tokens": a.max_new_tokens,
            **({"eval.semantic": False} if a.smoke else {})}))
        reports[label] = evaluate(cfg)
    return {"summary": summary, "reports": reports, "seconds": t}


def main() -> None:
    global WORK
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny random Llama, 2 steps per run, a few examples")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--m", type=int, default=50, help="labelled examples")
    p.add_argument("--n", type=int, default=500, help="unlabelled inputs given to synth (fewer if the file ends)")
    p.add_argument("--pool", type=int, default=500, help="unlabelled inputs that select ranks")
    p.add_argument("--steps", type=int, default=60, help="optimizer steps of every run (the same budget)")
    p.add_argument("--limit", type=int, default=100, help="held-out test records scored")
    p.add_argument("--k", type=int, default=4, help="samples per input (synth and select)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--work", default=None, help=f"working folder (default {WORK.relative_to(ROOT)}): two runs side by "
                                                "side need two")
    p.add_argument("--resume", action="store_true",
                   help="keep the working folder: reuse finished runs and select's list; synth continues where it "
                        "stopped")
    p.add_argument("--concurrent-select", action="store_true",
                   help="rank the active-selection pool in a second process while run M tunes and synth writes")
    a = p.parse_args()
    if a.work:
        WORK = Path(a.work).resolve()
    if a.smoke:
        a.tasks, a.m, a.n, a.pool, a.steps, a.limit, a.k, a.max_new_tokens = ["dialogsum"], 6, 6, 8, 2, 4, 2, 8
    dialogsum = ROOT.parent / "shared" / "data" / "dialogsum" / "train.jsonl"
    if "dialogsum" in a.tasks and not dialogsum.is_file():
        if a.smoke:
            print(f"bench/label_scarce.py --smoke: skipped, dialogsum is not in {dialogsum.parent}")
            return
        sys.exit(f"bench/label_scarce.py needs dialogsum in {dialogsum.parent} (or --tasks support)")
    os.chdir(ROOT)  # the presets' data paths are relative to the checkout
    t0, load0 = time.time(), os.getloadavg()[0]
    results = {}
    for name in a.tasks:  # the section is rewritten after each task: a long run that stops keeps what finished
        results[name] = one_task(a, name, TASKS[name])
        write(a, results, time.time() - t0, load0)


def _secs(seconds: dict, phase: str) -> str:
    return f"{seconds[phase]:.0f} s" if phase in seconds else "finished by an earlier invocation (--resume)"


def _verdict(report, metric: str = "rougeL") -> str:
    m = report.metrics.get(metric)
    if not m:
        return f"{metric}: not measured"
    return (f"{metric} {m['base']:.2f} -> {m['tuned']:.2f}, delta {m['delta']:+.2f} "
            f"(95% CI [{m['low']:+.2f}, {m['high']:+.2f}])")


def write(a, results: dict, wall: float, load0: float) -> None:
    from weaver.tuning.synth import summary_text

    command = "nice -n 10 .venv/bin/python bench/label_scarce.py" + (" --smoke" if a.smoke else "")
    if not a.smoke:
        command += "".join(f" --{k} {getattr(a, k)}" for k, v in DEFAULTS.items() if getattr(a, k) != v)
        command += f" --tasks {' '.join(a.tasks)}" if a.tasks != list(TASKS) else ""
        command += " --concurrent-select" if a.concurrent_select else ""
        command += " --resume" if a.resume else ""
    missing = [t for t in a.tasks if t not in results]
    parts = [f"""## Label-scarce tuning (`label_scarce.py`): self-training and active selection, SmolLM2-135M

Command: `{command}` ({wall / 60:.1f} min in all; machine shared with other agents, load average {load0:.1f} at
start on {os.cpu_count()} cores). {"SMOKE RUN on a tiny random Llama: the numbers mean nothing." if a.smoke else ""}

Every run: the task's preset (LoRA), {a.steps} optimizer steps (the same budget), from the base model. "M": {a.m}
labelled examples (a seeded sample of the training file). "M+synth": the same plus what `weaver data synth`
(default filters, K={a.k}, backend auto as the CLI: llama.cpp decodes, transformers scores; written by run M)
kept of {a.n} other training inputs, their labels discarded.
"M active": the {a.m} inputs `weaver data select` (base model, K={a.k}) picked from {a.pool} others, with their
real references. Scored on the first {a.limit} test records, greedy, {a.max_new_tokens} new tokens; deltas are
against run M (paired bootstrap 95% CIs). Gains are reported whatever their sign.
{f"Not finished when this section was written: {', '.join(missing)}." if missing else ""}
"""]
    for name, r in results.items():
        s = r["seconds"]
        parts.append(f"""### {name}

Synthesis ({_secs(s, 'synth')}; tune M {_secs(s, 'tune_m')}; select {_secs(s, 'select')}):

```
{summary_text(r['summary'])}
```

M+synth vs M:

```
{r['reports']['synth'].table()}
```

M active vs M random:

```
{r['reports']['active'].table()}
```

Verdict ({name}): self-training {_verdict(r['reports']['synth'])}; active selection
{_verdict(r['reports']['active'])}.
""")
    parts.append(SHARED_NOTE + "\n")
    md = "\n".join(parts)
    target = WORK / "RESULTS.md" if a.smoke and not os.environ.get("WEAVER_BENCH_RESULTS") else None
    print(md)
    print(f"section label_scarce written to {write_section('label_scarce', md, path=target)}")


if __name__ == "__main__":
    main()
