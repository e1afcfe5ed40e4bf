"""Does tuning make SmolLM2's dialogue summaries more faithful? Base vs tuned grounding on dialogsum test.

    .venv/bin/python bench/faithfulness.py                          # newest dialogsum run, else tune one (5 min)
    .venv/bin/python bench/faithfulness.py --run runs/dialogsum-5min --limit 100
    .venv/bin/python bench/faithfulness.py --smoke                  # tiny random model, seconds (CI)

Without a run it first tunes one: configs/dialogsum-smollm2.yaml for 5 minutes (LoRA in the top 10 blocks,
no dev evaluation). Then `weaver eval` compares the run with its base model on the first --limit dialogues of
../shared/data/dialogsum/test.jsonl on the llama.cpp backend (the fastest here; q8_0 GGUF export), greedy,
repetition penalty 1.1, 48 new tokens, with grounding on. From its predictions.jsonl this script scores,
per example and for base, tuned and the first human reference (what the detector says of a human summary):

- faithfulness: the share of summary sentences supported by the dialogue (weaver.eval.explain at its
  calibrated threshold; an empty summary supports nothing: 0);
- invented: the share of summary sentences naming a number, date or name that the dialogue lacks;

once with MiniLM + lexical support (what `weaver eval` reports; checked equal to its report.json) and once
lexical only, with paired bootstrap 95% CIs (weaver.eval.stats) of tuned - base and reference - tuned.
Writes section `faithfulness` of bench/RESULTS.md (smoke runs: bench/.work/smoke/RESULTS.md via bench/run.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from eval_dialogsum import TEST, newest_dialogsum_run, tiny_run  # noqa: E402

TUNE = ["configs/dialogsum-smollm2.yaml", "--train.out_dir", "runs/dialogsum-faithfulness", "--train.max_minutes",
        "5", "--train.eval_every", "0", "--train.save_every", "20", "--train.logging", "[]", "--fresh"]
DECODING = ["--generate.max_new_tokens", "48", "--generate.repetition_penalty", "1.1", "--generate.temperature", "0"]
SYSTEMS = ("base", "tuned", "reference")
WEAVER = [sys.executable, "-c", "import sys; from weaver.cli import main; sys.exit(main(sys.argv[1:]))"]
MODES = {"MiniLM + lexical": True, "lexical only": False}


def score_predictions(preds: list[dict], use_embeddings: bool) -> dict[str, dict[str, list[float]]]:
    """Per-example faithfulness and invented shares (0-100) of base, tuned and the first reference.

    Returns:
        system -> {"faithfulness": [...], "invented": [...], "sentences": [...], "entities": [...]}.
    """
    from weaver.eval.explain import explain

    out: dict[str, dict[str, list]] = {s: {"faithfulness": [], "invented": [], "sentences": [], "entities": []}
                                       for s in SYSTEMS}
    for p in preds:
        texts = {"base": p["base"], "tuned": p["tuned"], "reference": p["references"][0]}
        for system, text in texts.items():
            ex = explain(p["input"], text, lang="en", use_embeddings=use_embeddings)
            row = out[system]
            row["faithfulness"].append(100.0 * (ex.faithfulness or 0.0))
            row["invented"].append(100.0 * (ex.invented_share or 0.0))
            row["sentences"].append(len(ex.sentences))
            row["entities"].extend(e for s in ex.sentences for e in s.unsupported_entities)
    return out


def _ci(a: list[float], b: list[float], n: int) -> str:
    from weaver.eval.stats import paired_bootstrap

    ci = paired_bootstrap(a, b, n_resamples=n, seed=0)
    star = " *" if ci.significant else ""
    return f"{ci.delta:+.1f} [{ci.low:+.1f}, {ci.high:+.1f}]{star}"


def table(scores: dict[str, dict], n_resamples: int) -> list[str]:
    """Markdown rows: per support mode and metric, the three systems and the two paired differences."""
    lines = ["| support | metric | base | tuned | reference | tuned - base [95% CI] | reference - tuned [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    for mode, per in scores.items():
        for metric, label in (("faithfulness", "supported sentences %"), ("invented", "sentences w/ invented "
                                                                                      "names/numbers %")):
            vals = {s: per[s][metric] for s in SYSTEMS}
            mean = {s: sum(v) / len(v) for s, v in vals.items()}
            lines.append(f"| {mode} | {label} | {mean['base']:.1f} | {mean['tuned']:.1f} | {mean['reference']:.1f} | "
                         f"{_ci(vals['base'], vals['tuned'], n_resamples)} | "
                         f"{_ci(vals['tuned'], vals['reference'], n_resamples)} |")
    return lines


def check_against_report(scores: dict[str, dict], report: dict) -> str:
    """A sentence saying whether the MiniLM-mode means equal `weaver eval`'s faithfulness/invented rows."""
    rows = []
    for metric in ("faithfulness", "invented"):
        entry = report["metrics"].get(metric)
        if entry is None:
            return "`weaver eval` reported no grounding rows (eval.grounding off?)."
        for system in ("base", "tuned"):
            vals = scores[system][metric]
            rows.append(abs(sum(vals) / len(vals) - entry[system]) < 0.01)
    return ("The MiniLM + lexical rows equal the faithfulness rows of `weaver eval`'s report.json." if all(rows) else
            "WARNING: the MiniLM + lexical rows differ from `weaver eval`'s report.json (embedding model missing?).")


def evaluate_run(run: Path, out: Path, limit: int, backend: str, extra: list[str], reuse: bool) -> list[str]:
    """Run `weaver eval` (unless --reuse finds its report) and return the command's arguments."""
    cmd = ["eval", "--model", str(run), "--data", str(TEST), "--task", "summarize", "--limit", str(limit),
           "--out", str(out), "--generate.backend", backend, "--eval.grounding", "true", *extra]
    if not (reuse and (out / "report.json").is_file()):
        subprocess.run([*WEAVER, *cmd], cwd=ROOT, check=True)
    return cmd


def _frequent(entities: list[str], k: int = 6) -> str:
    common = Counter(entities).most_common(k)
    return ", ".join(f"{e} ({c})" for e, c in common) or "none"


def run_facts(run: Path) -> str:
    """One sentence on how the run was tuned (run.json and config.yaml), for the section."""
    facts = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    train = {}
    if (run / "config.yaml").is_file():
        import yaml

        train = (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("train", {})
    recipe = ", ".join(f"{k}={train[k]}" for k in ("method", "lora_r", "top_layers", "lr", "batch_size",
                                                   "max_minutes") if k in train)
    return (f"Run: {run.name} ({recipe}): {facts.get('steps', '?')} optimizer steps of {facts.get('total_steps', '?')}"
            f" in {facts.get('train_time_s', '?')} s of training, stop: {facts.get('stop_reason', '?')}.")


def section(cmd: list[str], tuned_by: str, script_args: list[str], data: dict, scores: dict, n_resamples: int,
            took: float, load: tuple[float, float], run: Path) -> str:
    per = scores["MiniLM + lexical"]
    sent = {s: sum(per[s]["sentences"]) / len(per[s]["sentences"]) for s in SYSTEMS}
    rl = data["metrics"].get("rougeL", {})
    lines = ["## Faithfulness: base vs tuned on dialogsum (`faithfulness.py`)", "",
             f"Command: `weaver {' '.join(cmd)}`" + (f" after `weaver tune {tuned_by}`" if tuned_by else ""),
             f"(both run by `python bench/faithfulness.py {' '.join(script_args)}`, which then scores the "
             "report's predictions.jsonl).", "", run_facts(run), "",
             f"{data['n']} dialogsum test dialogues; decoding {data['decoding']['max_new_tokens']} new tokens, "
             f"greedy, repetition penalty {data['decoding']['repetition_penalty']}, backend "
             f"{data['config']['generate']['backend']}. Reference = the first of the three human summaries, "
             "scored by the same detector (its faithfulness is what the detector gives a human summary; its "
             "misses are the detector's false positives, bench section explain_calibration). "
             "Faithfulness per example = share of its sentences above the calibrated support threshold "
             "(weaver.eval.explain.THRESHOLDS); invented = share of its sentences with a number/date/name the "
             f"dialogue lacks. Paired bootstrap, {n_resamples} resamples; * = the CI excludes 0.", "",
             *table(scores, n_resamples), "",
             f"Sentences per summary: base {sent['base']:.2f}, tuned {sent['tuned']:.2f}, reference "
             f"{sent['reference']:.2f}. ROUGE-L (for context, from the same report): base {rl.get('base')}, tuned "
             f"{rl.get('tuned')}.", "",
             "Most frequent invented entities: " + "; ".join(f"{s}: {_frequent(per[s]['entities'])}"
                                                              for s in SYSTEMS) + ".", "",
             check_against_report(per, data), "",
             f"Took {took:.0f} s ({'tune + ' if tuned_by else ''}eval + scoring), machine shared with other agents "
             "(load average "
             f"{load[0]:.1f} at start, {load[1]:.1f} at end, {os.cpu_count()} cores): the quality figures are "
             "unaffected by load, the time is not a speed figure."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="run directory (default: newest dialogsum run, else tune one)")
    ap.add_argument("--limit", type=int, default=100, help="test dialogues (default 100)")
    ap.add_argument("--backend", default=None, help="generation backend (default llamacpp; smoke: transformers)")
    ap.add_argument("--smoke", action="store_true", help="tiny random model on 4 dialogues")
    ap.add_argument("--reuse", action="store_true", help="rescore an existing report instead of generating")
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args(argv)
    t0, load0 = time.time(), os.getloadavg()[0]
    tuned_by = ""
    extra = [*DECODING, "--eval.perplexity", "false"]
    if args.smoke:  # never over the committed results
        os.environ.setdefault("WEAVER_BENCH_RESULTS", str(BENCH / ".work" / "smoke" / "RESULTS.md"))
        tmp = Path(tempfile.mkdtemp(prefix="faithfulness-"))
        run, args.limit, backend = tiny_run(tmp), 4, args.backend or "transformers"
        extra = ["--generate.max_new_tokens", "8", "--eval.bootstrap", "100", "--eval.semantic", "false",
                 "--eval.perplexity", "false"]
        args.bootstrap, out = 100, tmp / "eval"
    else:
        backend = args.backend or "llamacpp"
        run = Path(args.run) if args.run else newest_dialogsum_run()
        if run is None:
            subprocess.run([*WEAVER, "tune", *TUNE], cwd=ROOT, check=True)
            run, tuned_by = ROOT / "runs" / "dialogsum-faithfulness", " ".join(TUNE)
        out = Path(run) / f"eval-faithfulness-{backend}-{args.limit}"
    cmd = evaluate_run(Path(run), out, args.limit, backend, extra, args.reuse)
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    scores = {mode: score_predictions(preds, emb) for mode, emb in MODES.items()}
    from run import write_section

    script_args = sys.argv[1:] if argv is None else argv
    text = section(cmd, tuned_by, script_args, data, scores, args.bootstrap, time.time() - t0,
                   (load0, os.getloadavg()[0]), Path(run))
    write_section("faithfulness", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
