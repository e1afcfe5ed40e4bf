"""Does tuning make SmolLM2 summarise dialogues better? `weaver eval` of a dialogsum run on 100 test dialogues.

    .venv/bin/python bench/eval_dialogsum.py --run runs/dialogsum-eval     # evaluate an existing run
    .venv/bin/python bench/eval_dialogsum.py                               # newest dialogsum run, else tune one
    .venv/bin/python bench/eval_dialogsum.py --smoke                       # tiny random model, seconds (CI)

Without a run it first tunes one: configs/dialogsum-smollm2.yaml, 16 steps of batch 8 (128 dialogues),
LoRA in the top 10 layers. Then `weaver eval` compares the run with its base model on the first --limit
dialogues of ../shared/data/dialogsum/test.jsonl (3 references each): greedy, repetition penalty 1.1,
48 new tokens (the PEERS.md scoring settings), paired bootstrap 95% CIs. Writes section eval_dialogsum
of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
TEST = ROOT.parent / "shared" / "data" / "dialogsum" / "test.jsonl"
TUNE = ["configs/dialogsum-smollm2.yaml", "--train.out_dir", "runs/dialogsum-eval", "--train.max_steps", "16",
        "--train.top_layers", "10", "--train.eval_every", "0", "--train.save_every", "4", "--data.limit_dev", "16",
        "--train.max_minutes", "60", "--train.logging", "[]"]


def newest_dialogsum_run() -> Path | None:
    runs = [p.parent for p in (ROOT / "runs").glob("*/run.json")
            if "dialogsum" in (p.parent / "config.yaml").read_text(errors="ignore")]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def tiny_run(tmp: Path) -> Path:
    """A run directory holding a tiny random Llama base and a random LoRA adapter (smoke mode)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from weaver.config import load_config, save_resolved

    torch.manual_seed(0)
    base = tmp / "tiny"
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(base)
    AutoTokenizer.from_pretrained(ROOT / "tests" / "fixtures" / "smollm2-tokenizer").save_pretrained(base)
    run = tmp / "run"
    save_resolved(load_config(overrides=["--model.name", str(base), "--data.task", "summarize"]), run)
    model = get_peft_model(LlamaForCausalLM.from_pretrained(base), LoraConfig(r=4, target_modules=["q_proj"]))
    model.save_pretrained(run / "adapter")
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="run directory (default: newest dialogsum run, else tune one)")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="rewrite the section from an existing report.json")
    args = ap.parse_args(argv)
    weaver = [sys.executable, "-m", "weaver.cli"]
    t0, load0 = time.time(), os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="eval-dialogsum-"))
    extra = ["--generate.max_new_tokens", "48", "--generate.repetition_penalty", "1.1", "--generate.temperature", "0"]
    if args.smoke:
        run, args.limit = tiny_run(tmp), 4
        extra = ["--generate.max_new_tokens", "4", "--eval.bootstrap", "100", "--eval.semantic", "false"]
    else:
        run = Path(args.run) if args.run else newest_dialogsum_run()
        if run is None:
            subprocess.run([*weaver, "tune", *TUNE], cwd=ROOT, check=True)
            run = ROOT / "runs" / "dialogsum-eval"
    out = tmp / "eval" if args.smoke else Path(run) / "eval-dialogsum"
    cmd = ["eval", "--model", str(run), "--data", str(TEST), "--task", "summarize", "--limit", str(args.limit),
           "--out", str(out), *extra]
    if not (args.reuse and (out / "report.json").is_file()):
        subprocess.run([*weaver, *cmd], cwd=ROOT, check=True)
    data = json.loads((out / "report.json").read_text())
    from weaver.eval.report import text_table

    run_facts = json.loads((Path(run) / "run.json").read_text()) if (Path(run) / "run.json").is_file() else {}
    train = {}
    if (Path(run) / "config.yaml").is_file():
        import yaml

        train = (yaml.safe_load((Path(run) / "config.yaml").read_text()) or {}).get("train", {})
    recipe = ", ".join(f"{k}={train.get(k)}" for k in ("method", "lora_r", "top_layers", "lr", "batch_size",
                                                       "max_steps") if k in train)
    lines = ["## Evaluation: dialogsum, tuned vs base", "",
             f"Command: `weaver {' '.join(cmd)}`" + ("" if args.run or args.smoke else
                                                     f" after `weaver tune {' '.join(TUNE)}`"), "",
             f"Run: {run} ({recipe}; {run_facts.get('steps', '?')} steps, {run_facts.get('wall_time_s', '?')} s, "
             f"stop: {run_facts.get('stop_reason', '?')}). Load average {load0:.1f} at start on "
             f"{os.cpu_count()} cores (a shared, busy machine: times are provisional). Took {time.time() - t0:.0f} s.",
             "", "```", text_table(data), "```", "",
             "Generation: " + "; ".join(f"{k} {v['tokens_per_s']} new tokens/s" for k, v in data["speed"].items()),
             ]
    from run import write_section

    write_section("eval_dialogsum", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
