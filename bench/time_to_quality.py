"""Time-to-quality: how fast does each tool turn SmolLM2-135M into a good dialogue summariser on this machine?

    .venv/bin/python bench/time_to_quality.py                # full: 3 contenders x 20 min, then scoring
    .venv/bin/python bench/time_to_quality.py --smoke        # tiny random model, a few steps, < 1 min
    .venv/bin/python bench/time_to_quality.py --contenders llamafactory --max-steps 3 --n-test 10
    .venv/bin/python bench/time_to_quality.py --resume       # keep finished training runs and scores
    .venv/bin/python bench/time_to_quality.py --task adgen   # Chinese ad copy on Gemma-3-270M (also: --task lcsts)
    .venv/bin/python bench/time_to_quality.py --task lcsts --smoke --contenders weaver,hf_plain

Contenders (bench/contenders/): weaver's default recipe (`weaver tune` with the shipped dialogsum preset),
a plain Hugging Face recipe (Trainer + peft LoRA, fp32) and LLaMA-Factory 0.9.5 in its own venv. They get
the same data (bench/contenders/data.py), the same base model folder, LoRA rank 16 and the same wall-clock
budget counted from process launch; a checkpoint counts when its adapter file was written within the
budget. After all training, every kept checkpoint is scored the same way (bench/contenders/scoring.py);
scoring time is not on any training clock. The section `time_to_quality` of RESULTS.md and the plot
plots/time_to_quality.png are rewritten after every step, so a long run shows partial results.
`--task adgen|lcsts` (bench/contenders/tasks.py) runs the same race on a Chinese set with the multilingual
Gemma-3-270M and the task's preset (configs/adgen-gemma3.yaml, configs/lcsts-gemma3.yaml); LLaMA-Factory gets
the same examples as its alpaca dataset with its `gemma3` template; scoring reports ROUGE on characters (the
target) and on jieba words; results go to the sections time_to_quality_adgen / _lcsts and their plots.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from contenders import data as bdata  # noqa: E402
from contenders import hf_plain, llamafactory, report, scoring, weaver_recipe  # noqa: E402
from contenders.tasks import DATA_ROOT, TASKS, load_zh  # noqa: E402
from run import plots_dir, write_section  # noqa: E402

CONTENDERS = ("weaver", "hf_plain", "llamafactory")
FULL = {"budget_min": 20.0, "epochs": 2.0, "save_steps": 5, "n_train": 300, "n_dev": 50, "n_test": 100,
        "batch_size": 8, "lr": 3e-4, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "max_seq_len": 512,
        "max_new_tokens": 48, "repetition_penalty": 1.1, "gen_batch": 8, "max_evals": 8, "seed": 0,
        "max_steps": None, "grace_s": 60.0, "max_words": 200}
SMOKE = {**FULL, "budget_min": 1.5, "save_steps": 1, "max_steps": 2, "n_train": 8, "n_dev": 2, "n_test": 2,
         "batch_size": 4, "max_new_tokens": 8, "max_evals": 2, "grace_s": 10.0, "max_words": 40, "max_seq_len": 160}
DATA_DIR = DATA_ROOT / "dialogsum"
TOKENIZER_DIR = ROOT / "tests" / "fixtures" / "smollm2-tokenizer"


def tiny_model(path: Path) -> Path:
    """A 2-layer random Llama with the real SmolLM2 tokenizer (as tests/conftest.py builds), saved once."""
    if (path / "config.json").is_file():
        return path
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(path)
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(path)
    return path


def child_env(work: Path) -> dict[str, str]:
    """Environment for every contender: offline, quiet, caches inside the work folder."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               DISABLE_VERSION_CHECK="1", HF_DATASETS_CACHE=str(work / "hf-datasets"), WANDB_DISABLED="true")
    # torch's default pages for the peers: `import weaver` in this process asked for huge pages (weaver's own child
    # asks again when it imports weaver)
    env.pop("THP_MEM_ALLOC_ENABLE", None)
    return env


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of every process in a process group (from /proc)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # fields after the command name: state, ppid, pgrp, ..., rss at index 21
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total


def _watch_rss(pgid: int, done: threading.Event, peak: list[int]) -> None:
    while not done.wait(2.0):
        peak[0] = max(peak[0], group_rss_bytes(pgid))


def launch(cmd: list[str], log: Path, budget_s: float, grace_s: float, env: dict) -> dict:
    """Run a training command; stop its process group at budget + grace.

    Returns:
        t0 (launch time), rc, wall_s, stopped_at_budget, peak_rss_gb (the group's, sampled every 2 s).
    """
    busy0, kids0 = _busy_cpu_s(), _children_cpu_s()
    with open(log, "w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        done, peak = threading.Event(), [0]
        watcher = threading.Thread(target=_watch_rss, args=(proc.pid, done, peak), daemon=True)
        watcher.start()
        stopped = False
        try:
            rc = proc.wait(timeout=budget_s + grace_s)
        except subprocess.TimeoutExpired:
            stopped = True
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                rc = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
        done.set()
        watcher.join()
    wall = time.time() - t0
    other = None
    if busy0 is not None:  # CPU the rest of the machine used meanwhile, in cores (contender's own CPU taken out)
        other = round(max(0.0, (_busy_cpu_s() - busy0) - (_children_cpu_s() - kids0)) / max(wall, 1e-6), 2)
    return {"t0": t0, "rc": rc, "wall_s": round(wall, 1), "stopped_at_budget": stopped,
            "peak_rss_gb": round(peak[0] / 2**30, 2), "other_cores": other}


def _busy_cpu_s() -> float | None:
    """Seconds of non-idle CPU time of the whole machine since boot (/proc/stat), None off Linux."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class SkipContender(Exception):
    """A contender deliberately not run (the message says why)."""


def build(name: str, ctx: dict) -> tuple[list[str], list[str]]:
    """The command that trains contender `name`, and notes for the results. Raises when it cannot run."""
    s, out, files = ctx["s"], ctx["work"] / name, ctx["files"]
    if name == "weaver":
        preset = ctx["preset"] or weaver_recipe.find_preset()
        note = f"preset `{os.path.relpath(preset, ROOT)}`" if preset else \
            "no summarisation preset in configs/, so weaver's built-in defaults (weaver.config) with task summarize"
        preset = Path(preset or weaver_recipe.defaults_preset(ctx["work"] / "weaver-defaults.yaml"))
        spec = {**s, "extra": ctx["weaver_extra"] + (weaver_recipe.smoke_overrides(preset) if ctx["smoke"] else [])}
        cmd = weaver_recipe.command(preset, ctx["model_dir"], files["train"], files["dev"], files["test"], out, spec)
        return cmd, [note]
    if name == "hf_plain":
        cmd = [sys.executable, hf_plain.__file__, "--model", str(ctx["model_dir"]), "--train", str(files["train"]),
               "--out", str(out), "--epochs", str(s["epochs"]), "--lr", str(s["lr"]), "--batch-size",
               str(s["batch_size"]), "--save-steps", str(s["save_steps"]), "--max-seq-len", str(s["max_seq_len"]),
               "--lora-r", str(s["lora_r"]), "--seed", str(s["seed"])]
        return cmd + (["--max-steps", str(s["max_steps"])] if s["max_steps"] else []), []
    if ctx["smoke"]:
        raise SkipContender("skipped in smoke mode (its venv install takes minutes)")
    python = llamafactory.ensure_venv(ctx["lf_venv"], log=lambda m: print(f"ttq: {m}", flush=True))
    ctx["lf_versions"] = llamafactory.venv_versions(python)
    system = ctx["system_prompt"]
    llamafactory.write_dataset(ctx["data"]["train"], ctx["work"] / "lf-data", system)
    cfg = llamafactory.write_config(ctx["work"] / "lf-train.yaml", ctx["model_dir"], ctx["work"] / "lf-data", out, s)
    return llamafactory.command(python, cfg, s["lf_template"]), [llamafactory.STUB_NOTE]


def _step(path: str) -> int | None:
    for part in (Path(path).name, Path(path).parent.name):
        m = re.search(r"(\d+)$", part)
        if m:
            return int(m.group(1))
    return None


def train(name: str, ctx: dict) -> dict:
    """Train one contender under the budget and list its in-budget checkpoints."""
    s, out = ctx["s"], ctx["work"] / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    try:
        cmd, notes = build(name, ctx)
    except SkipContender as exc:
        return {"status": "skipped", "error": str(exc), "checkpoints": []}
    except Exception as exc:  # any failure to set a contender up is reported, with its error, instead of a number
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "checkpoints": []}
    budget_s = s["budget_min"] * 60
    load = os.getloadavg()[0]
    log_file = ctx["work"] / f"{name}-train.log"  # beside the run folder: weaver tune refuses foreign files in it
    res = launch(cmd, log_file, budget_s, s["grace_s"], ctx["env"])
    kept, late = scoring.find_checkpoints(out, res["t0"], budget_s)
    for c in kept:
        c["step"] = _step(c["path"])
    ok = res["rc"] == 0 or res["stopped_at_budget"]
    tail = log_file.read_text(errors="replace").strip().splitlines()[-12:]
    if isinstance(res["rc"], int) and res["rc"] < 0 and not res["stopped_at_budget"]:
        why = " (SIGKILL: most likely the kernel's out-of-memory killer)" if res["rc"] == -9 else ""
        tail.append(f"[the process was killed by signal {-res['rc']}{why}]")
    return {"status": "ok" if ok and kept else "failed", "cmd": " ".join(cmd), "notes": notes, **res,
            "load_at_start": round(load, 2), "checkpoints": kept, "late_checkpoints": len(late),
            "error": None if ok and kept else ("no checkpoint within the budget; " if ok else "") + "\n".join(tail)}


def score_all(state: dict, ctx: dict, save) -> None:
    """Score the base model and every kept checkpoint (cached by adapter digest, so --resume skips them)."""
    cache = state.setdefault("scores", {})
    jobs = [("base", None)] + [(c["digest"], c["path"]) for r in state["contenders"].values()
                               for c in scoring.pick(r.get("checkpoints", []), ctx["s"]["max_evals"])]
    for key, path in jobs:
        if key in cache:
            continue
        try:
            res = scoring.evaluate(ctx["model_dir"], Path(path) if path else None, ctx["data"]["test"], ctx["s"])
        except Exception as exc:  # a half-written checkpoint (stopped mid-save) is reported, not fatal
            res = {"error": f"{type(exc).__name__}: {exc}"}
        cache[key] = res
        print(f"ttq: scored {path or 'base model'}: {res.get('rougeL', res.get('error'))}", flush=True)
        save()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Time-to-quality benchmark: weaver vs plain HF vs LLaMA-Factory.")
    ap.add_argument("--smoke", action="store_true", help="tiny random model, a few steps, no LLaMA-Factory")
    ap.add_argument("--task", default="dialogsum", choices=sorted(TASKS),
                    help="dialogsum (English, SmolLM2) or a Chinese set on Gemma-3-270M: adgen, lcsts")
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help=f"comma-separated subset of {CONTENDERS}")
    ap.add_argument("--resume", action="store_true", help="reuse finished training runs and scores in --work")
    ap.add_argument("--work", default=None, help="work folder (default bench/.work/ttq or bench/.work/ttq-smoke)")
    ap.add_argument("--preset", default=None, help="weaver preset (default: the task's, configs/*dialogsum*.yaml)")
    ap.add_argument("--weaver-extra", default="", help="extra `--section.key value` overrides for weaver tune")
    for key in ("budget_min", "epochs", "save_steps", "n_train", "n_test", "max_evals", "max_steps"):
        ap.add_argument("--" + key.replace("_", "-"), type=float if key in ("budget_min", "epochs") else int)
    args = ap.parse_args(argv)
    task = TASKS[args.task]
    s = {**(SMOKE if args.smoke else {**FULL, **task["overrides"]}), "lang": task["lang"],
         "lf_template": task["lf_template"], "task": args.task}
    s.update({k: v for k, v in vars(args).items() if k in s and v is not None})
    names = [n for n in args.contenders.split(",") if n]
    if set(names) - set(CONTENDERS):
        print(f"ttq: unknown contender(s) {sorted(set(names) - set(CONTENDERS))}; choose from {CONTENDERS}")
        return 2
    suffix = "" if args.task == "dialogsum" else f"-{args.task}"
    work = Path(args.work or BENCH / ".work" / (f"ttq{suffix}-smoke" if args.smoke else f"ttq{suffix}")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data_dir = DATA_ROOT / task["data"]
    if not data_dir.is_dir():
        write_section(task["section"], f"## Time to quality ({task['title']})\n\nNot run: {data_dir} is not present.")
        print(f"ttq: {data_dir} not found; nothing measured")
        return 0 if args.smoke else 1
    data = (bdata.load(data_dir, s["n_train"], s["n_dev"], s["n_test"], s["max_words"]) if task["lang"] == "en"
            else load_zh(data_dir, s["n_train"], s["n_dev"], s["n_test"]))
    ctx = {"s": s, "smoke": args.smoke, "work": work, "preset": args.preset or task["preset"],
           "lf_venv": BENCH / ".work" / "lf-venv", "weaver_extra": args.weaver_extra.split(), "env": child_env(work),
           "lf_versions": {}, "data": data}
    if args.smoke:
        ctx["model_dir"] = tiny_model(work / "tiny-model")
    else:
        from weaver.models.loading import resolve

        ctx["model_dir"] = resolve(task["model"]).base_dir
    ctx["system_prompt"] = report.default_system(ctx["model_dir"])
    ctx["files"] = {k: bdata.write_jsonl(ctx["data"][k], work / "data" / f"{k}.jsonl")
                    for k in ("train", "dev", "test")}
    state_path = work / "state.json"
    state = json.loads(state_path.read_text()) if args.resume and state_path.is_file() else {}
    scoring_keys = ("n_test", "max_new_tokens", "repetition_penalty", "max_words", "lang")
    if any(state.get("settings", {}).get(k) != s[k] for k in scoring_keys):
        state.pop("scores", None)  # scored under other settings: score again
    state.update(settings=s, smoke=args.smoke, command=report.command_line(argv),
                 scorer=scoring.scorer_name(task["lang"]), section=task["section"], title=task["title"],
                 goal_ratio=task["goal"])
    state.setdefault("contenders", {})

    def save() -> None:
        state["lf_versions"] = ctx["lf_versions"] or state.get("lf_versions", {})
        state_path.write_text(json.dumps(state, indent=1))
        report.publish(state, plots_dir() / f"time_to_quality{suffix.replace('-', '_')}.png", write_section)

    for name in names:
        done = state["contenders"].get(name)
        if args.resume and done and done["status"] in ("ok", "skipped"):
            continue
        print(f"ttq: training {name} (budget {s['budget_min']} min)", flush=True)
        state["contenders"][name] = train(name, ctx)
        print(f"ttq: {name}: {state['contenders'][name]['status']}, "
              f"{len(state['contenders'][name]['checkpoints'])} checkpoints", flush=True)
        save()
    score_all(state, ctx, save)
    save()
    print(f"ttq: done; section {task['section']} written, state in {state_path}")
    return 0 if all(state["contenders"][n]["status"] in ("ok", "skipped") for n in names) else 1


if __name__ == "__main__":
    raise SystemExit(main())
