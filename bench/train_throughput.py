"""Training throughput: weaver's default recipe vs the plain Hugging Face recipe, same data, same wall time.

    .venv/bin/python bench/train_throughput.py                    # SmolLM2-135M, 300 dialogsum dialogues, 4 min each
    .venv/bin/python bench/train_throughput.py --minutes 2 --variants "weaver,weaver-top10,hf"
    .venv/bin/python bench/train_throughput.py --smoke            # tiny random model, a few seconds each (CI)
    .venv/bin/python bench/train_throughput.py --variants "weaver,weaver-bf16,weaver-bf16-frozen32,weaver-nf4,hf"

Contenders, each trained in its own process for the same wall-clock budget (imports and loading excluded):
- weaver: `weaver tune configs/dialogsum-smollm2.yaml` as shipped (only data, model folder, output and
  budget set); variants add overrides (weaver-top10: `--train.top_layers 10`).
- Allocator variants: weaver-mmap128 / weaver-mmap8192 (fixed glibc mmap thresholds, `--train.mmap_threshold_kb`),
  weaver-arena2 (MALLOC_ARENA_MAX=2),
  weaver-jemalloc / weaver-tcmalloc (Debian's libraries preloaded), weaver-threads1 (OMP_NUM_THREADS=1),
  weaver-nothp (THP_MEM_ALLOC_ENABLE=0: torch's tensors on normal pages, not the huge pages `import weaver` asks for).
- hf: transformers Trainer + peft LoRA r16 on all linear layers, fp32, padding to the longest in the batch
  (DataCollatorForSeq2Seq), the same prompts, batch 8, lr 3e-4 constant.
Figures: useful target tokens/s (supervised, non-padding reply tokens per second of training), ROUGE-L of
greedy summaries of the first 50 dev dialogues after the budget (weaver validates on dev[50:100], never
on the scored items), and peak RSS of the training process. Results go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from contenders import data as bench_data  # noqa: E402
from contenders import scoring, weaver_recipe  # noqa: E402
from run import SHARED_NOTE, write_section  # noqa: E402

VARIANTS = {"weaver": [], "weaver-top10": ["--train.top_layers", "10"], "weaver-fp32": ["--train.precision", "fp32"],
            "weaver-bf16": ["--train.precision", "bf16"],  # bf16 autocast, frozen base stored bf16 (frozen_dtype auto)
            "weaver-bf16-frozen32": ["--train.precision", "bf16", "--train.frozen_dtype", "float32"],
            "weaver-nf4": ["--train.frozen_dtype", "nf4"], "weaver-arena2": [],
            # the allocator: weaver keeps glibc's own mmap threshold and asks torch for huge pages; these compare
            "weaver-mmap128": ["--train.mmap_threshold_kb", "128"],
            "weaver-mmap8192": ["--train.mmap_threshold_kb", "8192"],
            "weaver-jemalloc": ["--train.mmap_threshold_kb", "none"],
            "weaver-tcmalloc": ["--train.mmap_threshold_kb", "none"],
            "weaver-threads1": [], "weaver-nothp": []}
# Variants that differ by the process environment (malloc settings and libraries, threads: read at process start).
# jemalloc and tcmalloc are Debian's libjemalloc2 / libtcmalloc-minimal4, preloaded (apt-get install ...).
LIB = Path("/usr/lib/x86_64-linux-gnu")
ENV = {"weaver-arena2": {"MALLOC_ARENA_MAX": "2"}, "weaver-threads1": {"OMP_NUM_THREADS": "1"},
       "weaver-nothp": {"THP_MEM_ALLOC_ENABLE": "0"},
       "weaver-jemalloc": {"LD_PRELOAD": str(LIB / "libjemalloc.so.2")},
       "weaver-tcmalloc": {"LD_PRELOAD": str(LIB / "libtcmalloc_minimal.so.4")}}
FULL = {"minutes": 4.0, "n_train": 300, "n_dev": 50, "max_new_tokens": 48, "gen_batch": 8, "max_words": 200}
SMOKE = {"minutes": 0.15, "n_train": 24, "n_dev": 4, "max_new_tokens": 8, "gen_batch": 4, "max_words": 40}


def hf_worker(model_dir: str, train_file: str, out: str, minutes: float) -> dict:
    """The plain recipe in this process: returns target tokens, training seconds and peak RSS."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from weaver.config import DataConfig
    from weaver.data.readers import read_records
    from weaver.data.tasks import render_prompt
    from weaver.data.tokenize import encode_example

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.pad_token or tok.eos_token
    cfg = DataConfig(task="summarize", max_seq_len=384)
    rows = [encode_example(tok, render_prompt(tok, r, cfg), r.output, 384) for r in read_records(train_file)]
    rows = [{**r, "attention_mask": [1] * len(r["input_ids"])} for r in rows]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.05,
                                             target_modules="all-linear"))
    pad = DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=-100)
    count = {"target": 0, "t0": None, "t1": None}

    def collate(batch):
        out = pad(batch)
        count["target"] += int((out["labels"][:, 1:] != -100).sum())
        return out

    class Budget(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            count["t0"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            count["t1"] = time.perf_counter()
            control.should_training_stop = count["t1"] - count["t0"] >= minutes * 60

    args = TrainingArguments(output_dir=out, per_device_train_batch_size=8, learning_rate=3e-4,
                             lr_scheduler_type="constant", num_train_epochs=100, save_strategy="no",
                             report_to=[], use_cpu=True, logging_steps=10, dataloader_num_workers=0, seed=0)
    Trainer(model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=[Budget()]).train()
    model.save_pretrained(Path(out) / "adapter")
    train_s = count["t1"] - count["t0"]
    # the collator may have prepared one batch more than was trained: it is counted (favours the plain recipe)
    return {"target_tokens": count["target"], "train_s": round(train_s, 1),
            "target_tokens_per_s": round(count["target"] / train_s, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _call(cmd: list[str], env: dict | None = None) -> None:
    res = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         env={**os.environ, **(env or {})})
    if res.returncode != 0:
        raise SystemExit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-2000:]}")


def run_weaver(name: str, ctx: dict) -> dict:
    out = ctx["work"] / name
    # epochs: as many as fit, so weaver trains for the whole budget like the plain recipe (its epochs=100)
    s = {"budget_min": ctx["s"]["minutes"], "save_steps": 1000, "epochs": 100,
         "extra": ["--train.resume", "never", *VARIANTS[name]]}
    if ctx["smoke"]:
        s["extra"] += ["--train.top_layers", "none", "--data.max_seq_len", "160", "--train.batch_size", "4"]
    cmd = weaver_recipe.command(ctx["preset"], ctx["model_dir"], ctx["files"]["train"], ctx["files"]["dev"],
                                ctx["files"]["dev"], out, s)
    preload = ENV.get(name, {}).get("LD_PRELOAD")
    if preload and not Path(preload).exists():
        raise SystemExit(f"variant {name} preloads {preload}, which is not installed (Debian: apt-get install "
                         "libjemalloc2 libtcmalloc-minimal4)")
    _call(cmd, ENV.get(name))
    facts = json.loads((out / "run.json").read_text())
    env = " ".join(f"{k}={v}" for k, v in ENV.get(name, {}).items())
    return {"target_tokens": facts["target_tokens"], "train_s": facts["train_time_s"],
            "target_tokens_per_s": facts["target_tokens_per_s"], "peak_rss_mb": facts["peak_rss_mb"],
            "steps": facts["steps"], "precision": facts["precision"], "frozen": facts.get("frozen_dtype", "-"),
            "allocator": (f"{preload.rsplit('/', 1)[-1]} (preloaded)" if preload else facts.get("allocator", "-")),
            "adapter": str(out / "adapter"), "cmd": (env + " " if env else "") + " ".join(cmd[3:]),
            **memory_phases(out / "metrics.jsonl")}


def memory_phases(metrics: Path) -> dict:
    """Where the memory went, from the run's own metrics.jsonl (rss_mb / peak_rss_mb on every event): resident
    after the first step, the largest resident size seen after a training step, and how much the process peak
    rose inside validations (the dev loss pass); the process peak by the end of step 1 (loading included)."""
    events = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [e for e in events if "train_loss" in e and "rss_mb" in e]
    if not steps:
        return {}
    rise, prev = 0.0, None
    for e in events:
        if prev is not None and "train_loss" not in e:  # a validation event: the peak growth since the step before
            rise += e["peak_rss_mb"] - prev
        prev = e.get("peak_rss_mb", prev)
    return {"peak_step1_mb": steps[0]["peak_rss_mb"], "rss_step1_mb": steps[0]["rss_mb"],
            "rss_steps_max_mb": max(e["rss_mb"] for e in steps),
            "rss_last_mb": steps[-1]["rss_mb"], "peak_rise_validation_mb": round(rise, 1)}


def run_hf(ctx: dict) -> dict:
    out = ctx["work"] / "hf"
    cmd = [sys.executable, __file__, "--hf-worker", json.dumps([str(ctx["model_dir"]), str(ctx["files"]["train"]),
                                                                 str(out), ctx["s"]["minutes"]])]
    _call(cmd, {"THP_MEM_ALLOC_ENABLE": "0"})  # torch's default pages: this process's `import weaver` set them
    return {**json.loads((out / "facts.json").read_text()), "adapter": str(out / "adapter")}


def markdown(results: dict, ctx: dict, argv: list[str]) -> str:
    s, hf = ctx["s"], results.get("hf")
    lines = ["## Training throughput (`train_throughput.py`)", "",
             f"Command: `python bench/train_throughput.py {' '.join(argv)}`".replace(" `", "`")
             + f" on {time.strftime('%Y-%m-%d')}, load average "
             f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}. {SHARED_NOTE}", "",
             f"{s['n_train']} dialogsum training dialogues (first {s['max_words']} words), {s['minutes']} min of "
             f"training each, ROUGE-L (best of refs) on the first {s['n_dev']} dev dialogues, greedy, "
             f"{s['max_new_tokens']} new tokens, repetition penalty 1.1." + (" SMOKE: tiny random model." if
                                                                             ctx["smoke"] else ""), "",
             "| contender | steps | target tok/s | x plain HF | ROUGE-L | peak RSS MB | precision | frozen base |"
             " peak by step 1 MB | RSS after step 1 / max after a step / last step MB | peak rise in validations MB |"
             " allocator |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        ratio = f"{r['target_tokens_per_s'] / hf['target_tokens_per_s']:.2f}" if hf else "-"
        phases = (f"{r['rss_step1_mb']} / {r['rss_steps_max_mb']} / {r['rss_last_mb']}" if "rss_step1_mb" in r
                  else "-")
        lines.append(f"| {name} | {r.get('steps', '-')} | {r['target_tokens_per_s']} | {ratio} | {r['rougeL']} | "
                     f"{r['peak_rss_mb']} | {r.get('precision', 'fp32')} | {r.get('frozen', 'float32')} | "
                     f"{r.get('peak_step1_mb', '-')} | {phases} | "
                     f"{r.get('peak_rise_validation_mb', '-')} | {r.get('allocator', '-')} |")
    lines += ["", "Base model ROUGE-L on the same items: " + str(ctx.get("base_rougeL", "-")),
              "", "weaver commands: " + "; ".join(f"`{r['cmd']}`" for r in results.values() if "cmd" in r)]
    return "\n".join(lines)


def setup(args) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    s = dict(SMOKE if args.smoke else FULL)
    if args.minutes:
        s["minutes"] = args.minutes
    work = Path(args.work or BENCH / ".work" / ("throughput-smoke" if args.smoke else "throughput")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = bench_data.load(ROOT.parent / "shared" / "data" / "dialogsum",
                           n_train=s["n_train"], n_dev=2 * s["n_dev"], n_test=1, max_words=s["max_words"])
    files = {"train": bench_data.write_jsonl(data["train"], work / "train.jsonl"),
             "dev": bench_data.write_jsonl(data["dev"][s["n_dev"]:], work / "dev.jsonl")}
    if args.smoke:
        from time_to_quality import tiny_model

        model_dir = tiny_model(work / "tiny-model")
    else:
        from weaver.models.loading import resolve

        model_dir = resolve("smollm2-135m-instruct").base_dir
    return {"s": s, "smoke": args.smoke, "work": work, "files": files, "model_dir": model_dir,
            "score_items": data["dev"][: s["n_dev"]], "preset": ROOT / "configs" / "dialogsum-smollm2.yaml"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--variants", default="weaver,hf", help=f"comma list of hf and {', '.join(VARIANTS)}")
    ap.add_argument("--work", default=None)
    ap.add_argument("--hf-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.hf_worker:
        model_dir, train, out, minutes = json.loads(args.hf_worker)
        facts = hf_worker(model_dir, train, out, minutes)
        Path(out, "facts.json").write_text(json.dumps(facts))
        return 0
    ctx = setup(args)
    results = {}
    for name in args.variants.split(","):
        print(f"train_throughput: {name} ...", flush=True)
        results[name] = run_hf(ctx) if name == "hf" else run_weaver(name, ctx)
    settings = {"max_new_tokens": ctx["s"]["max_new_tokens"], "repetition_penalty": 1.1,
                "gen_batch": ctx["s"]["gen_batch"]}
    for name, r in results.items():
        r["rougeL"] = scoring.evaluate(ctx["model_dir"], Path(r["adapter"]), ctx["score_items"], settings)["rougeL"]
        print(name, {k: v for k, v in r.items() if k != "cmd"}, flush=True)
    if not args.smoke:
        ctx["base_rougeL"] = scoring.evaluate(ctx["model_dir"], None, ctx["score_items"], settings)["rougeL"]
    write_section("train_throughput", markdown(results, ctx, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
