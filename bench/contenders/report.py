"""The time-to-quality results: curves, time to the common target score, the plot and the RESULTS.md section."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

LABELS = {"weaver": "weaver (default recipe)", "hf_plain": "plain Hugging Face (Trainer + peft, fp32)",
          "llamafactory": "LLaMA-Factory 0.9.5"}


def default_system(model_dir: Path) -> str:
    """The system prompt the model's chat template adds when none is given ('' if it adds none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if not getattr(tok, "chat_template", None):  # a base model (Gemma-3-270M): the plain format has no system turn
        return ""
    text = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    m = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", text, re.S)
    return m.group(1) if m else ""


def command_line(argv: list[str] | None) -> str:
    """The exact command that produced the results."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join([".venv/bin/python bench/time_to_quality.py", *args])


def curves(state: dict) -> dict[str, list[tuple[float, float]]]:
    """(minutes since launch, ROUGE-L) per contender, starting from the base model's score at 0."""
    scores = state.get("scores", {})
    base = scores.get("base", {}).get("rougeL")
    out = {}
    for name, run in state["contenders"].items():
        pts = [(c["t_s"] / 60, scores[c["digest"]]["rougeL"]) for c in run.get("checkpoints", [])
               if "rougeL" in scores.get(c["digest"], {})]
        if pts:
            out[name] = ([(0.0, base)] if base is not None else []) + pts
    return out


def first_time(curve: list[tuple[float, float]], score: float) -> float | None:
    """The first time the curve reaches `score` (None if never)."""
    return next((t for t, s in curve if s >= score - 1e-9), None)


def summarize(state: dict) -> dict:
    """Final/best scores, the common target (the lowest best score among contenders) and times to reach it."""
    cs = curves(state)
    rows = {n: {"final": c[-1][1], "best": max(s for _, s in c), "last_min": c[-1][0]} for n, c in cs.items()}
    target = min((r["best"] for r in rows.values()), default=None)
    for name, row in rows.items():
        row["t_target"] = first_time(cs[name], target)
    goal = None
    if "weaver" in cs and "llamafactory" in cs:
        lf_final = rows["llamafactory"]["final"]
        t_lf, t_w = first_time(cs["llamafactory"], lf_final), first_time(cs["weaver"], lf_final)
        ratio = (t_w / t_lf) if (t_w is not None and t_lf) else None
        goal = {"lf_final": lf_final, "t_lf": t_lf, "t_weaver": t_w, "ratio": ratio}
    return {"curves": cs, "rows": rows, "target": target, "goal": goal}


def plot(state: dict, summary: dict, path: Path) -> Path | None:
    """ROUGE-L against wall-clock minutes for each contender, with the common target as a dashed line."""
    if not summary["curves"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, c in summary["curves"].items():
        ax.plot([t for t, _ in c], [s for _, s in c], marker="o", label=LABELS.get(name, name))
    if summary["target"] is not None:
        ax.axhline(summary["target"], ls="--", c="grey", lw=1, label=f"target {summary['target']:.1f}")
    ax.axvline(state["settings"]["budget_min"], ls=":", c="black", lw=1, label="budget")
    ax.set_xlabel("wall-clock minutes since launch (training only)")
    zh = state["settings"].get("lang") == "zh"
    ax.set_ylabel("ROUGE-L F1 (characters) on the test set" if zh else "ROUGE-L F1 on the test dialogues")
    n = state["settings"]["n_test"]
    title = state.get("title", "dialogsum").split(",")[0]
    ax.set_title(f"Time to quality: {title}, {n} test examples" + (" (SMOKE)" if state.get("smoke") else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _fmt(x, nd=1, unit=""):
    return "—" if x is None else f"{x:.{nd}f}{unit}"


def _data_line(state: dict) -> str:
    s = state["settings"]
    folder = {"adgen": "advertisegen", "lcsts": "lcsts"}[s["task"]]
    return (f"- Data: `../shared/data/{folder}` (its test split is kept aside): train = `random.seed(0)`, shuffle "
            f"train.jsonl, the first {s['n_train']}; weaver's own validation = the next {s['n_dev']} of that "
            f"shuffle; test = the first {s['n_test']} of dev.jsonl, one reference each. Prompt, for every contender "
            "and in scoring: Gemma-3-270M is a base model without a chat template, so the plain format weaver uses for "
            "one, `<bos>### Instruction:\\n` + instruction + `\\n\\n` + input + `\\n\\n### Response:\\n`, the "
            "reply then `<eos>` (LLaMA-Factory: the same format registered through its own `register_template` as "
            f"`{s.get('lf_template')}`, bench/contenders/lf_plain.py). ROUGE-L on characters is the target; "
            "jieba-word ROUGE-L beside it.")


def _setup(state: dict) -> list[str]:
    s = state["settings"]
    if s.get("lang") == "zh":
        model = ("a 2-layer random Llama with the SmolLM2 tokenizer (smoke)" if state.get("smoke") else
                 "the same safetensors folder converted from the optional Gemma-3-270M GGUF (make models-multilingual)")
        return [_data_line(state), f"- Model: {model}; LoRA r={s['lora_r']} for every contender.",
                *_setup_common(state)]
    return [
        f"- Data: `../shared/data/dialogsum`: train = `random.seed(0)`, shuffle, first {s['n_train']} of train.jsonl, "
        f"each dialogue cut to its first {s['max_words']} words; test = the first {s['n_test']} of test.jsonl "
        "(cut the same way), "
        "scored against its three human references; weaver's own validation uses the first "
        f"{s['n_dev']} of dev.jsonl. Prompt: the SmolLM2 chat template around "
        "`instruction + \"\\n\\n\" + dialogue` for every contender.",
        "- Model: " + ("a 2-layer random Llama with the SmolLM2 tokenizer (smoke)" if state.get("smoke") else
                       "the same safetensors folder converted from the embedded SmolLM2-135M-Instruct GGUF")
        + f"; LoRA r={s['lora_r']} for every contender.",
        *_setup_common(state),
    ]


def _setup_common(state: dict) -> list[str]:
    s = state["settings"]
    return [
        f"- Budget: {s['budget_min']} min of wall clock per contender from process launch (imports and model "
        "loading included); a checkpoint counts when its adapter file was written within the budget. Plain HF and "
        f"LLaMA-Factory: batch {s['batch_size']}, lr {s['lr']}, alpha {s['lora_alpha']}, dropout "
        f"{s['lora_dropout']}, all linear layers, {s['epochs']} epochs, a checkpoint every {s['save_steps']} steps"
        + (f", at most {s['max_steps']} steps" if s.get("max_steps") else "") + " (adapter-only checkpoints: "
        "`save_only_model`); weaver's checkpoints are its resumable ones (optimizer state included), on its clock.",
        f"- Scoring, after all training (not on any clock): adapter merged into the base, greedy, repetition "
        f"penalty {s['repetition_penalty']}, {s['max_new_tokens']} new tokens, weaver's generation engine; "
        f"{state['scorer']}; at most {s['max_evals']} checkpoints per contender, spread evenly in time.",
    ]


def _contender_lines(state: dict) -> list[str]:
    lines = ["### Contenders as run", ""]
    for name, run in state["contenders"].items():
        facts = (f", {run['wall_s']} s wall, peak RSS {run.get('peak_rss_gb', '?')} GB (sampled every 2 s), "
                 f"load average {run['load_at_start']} at launch"
                 + (f", other processes {run['other_cores']} cores" if run.get("other_cores") is not None else "")
                 if "wall_s" in run else "")
        notes = f"; {'; '.join(run['notes'])}" if run.get("notes") else ""
        lines.append(f"- **{LABELS.get(name, name)}**: {run['status']}{facts}{notes}")
        if run.get("cmd"):
            lines.append(f"  - command: `{run['cmd']}`")
        if name == "llamafactory" and state.get("lf_versions"):
            lines.append("  - its venv: " + ", ".join(f"{k} {v}" for k, v in state["lf_versions"].items()))
        if run.get("error"):
            lines += ["  - why there is no number:" if run["status"] != "ok" else "  - note:", "", "    ```",
                      *("    " + ln for ln in run["error"].splitlines()[-12:]), "    ```"]
    return lines


def _noise_note(state: dict) -> str:
    runs = [r for r in state["contenders"].values() if "wall_s" in r]
    other = [r["other_cores"] for r in runs if r.get("other_cores") is not None]
    if other:
        where = (f"Other processes used on average up to {max(other):.2f} of the {os.cpu_count()} cores while a "
                 "contender trained (whole-machine CPU time minus the contender's own): "
                 + ("the machine was SHARED, so absolute minutes are inflated and noisy." if max(other) > 0.25
                    else "the machine was quiet."))
    else:
        loads = [r["load_at_start"] for r in runs if "load_at_start" in r]
        where = (f"Load average at the launches: up to {max(loads):.1f} on {os.cpu_count()} cores (it includes the "
                 "previous contender's own load, which takes minutes to decay; other processes' CPU time was not "
                 "measured in this run)." if loads else "")
    return where + (" One run per contender (each takes tens of minutes): read the ratios within this run "
                    "rather than the absolute minutes.")


def markdown(state: dict, summary: dict, plot_rel: str | None) -> str:
    """The `time_to_quality` section of RESULTS.md."""
    rows, target = summary["rows"], summary["target"]
    base = state.get("scores", {}).get("base", {})
    zh = state["settings"].get("lang") == "zh"
    title = state.get("title", "dialogsum, SmolLM2-135M")
    lines = [f"## Time to quality: weaver vs plain Hugging Face vs LLaMA-Factory ({title})", "",
             f"Command: `{state['command']}`" + ("  (SMOKE: tiny model, proves the pipeline only)"
                                                  if state.get("smoke") else ""), "",
             _noise_note(state), "",
             *_setup(state), "",
             "| contender | status | checkpoints scored | final ROUGE-L" + (" (characters)" if zh else "")
             + " | best ROUGE-L | minutes to reach " f"{_fmt(target)} (the lowest best) | vs weaver |"
             + (" final ROUGE-L (jieba words) | peak RSS GB |" if zh else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|" if zh else ""),
             f"| base model (no tuning) | — | — | {_fmt(base.get('rougeL'))} | — | — | — |"
             + (f" {_fmt(base.get('rougeL_word'))} | — |" if zh else "")]
    t_w = rows.get("weaver", {}).get("t_target")
    for name, run in state["contenders"].items():
        row = rows.get(name)
        if row is None:
            lines.append(f"| {LABELS.get(name, name)} | {run['status']} | 0 | — | — | — | — |"
                         + (" — | — |" if zh else ""))
            continue
        n = len(summary["curves"][name]) - (1 if base else 0)
        vs = f"{row['t_target'] / t_w:.2f}x" if (t_w and row["t_target"] is not None) else "—"
        extra = ""
        if zh:
            last = [c for c in run.get("checkpoints", []) if "rougeL" in state.get("scores", {}).get(c["digest"], {})]
            word = state["scores"][last[-1]["digest"]].get("rougeL_word") if last else None
            extra = f" {_fmt(word)} | {_fmt(run.get('peak_rss_gb'), 2)} |"
        lines.append(f"| {LABELS.get(name, name)} | {run['status']} | {n} | {_fmt(row['final'])} | "
                     f"{_fmt(row['best'])} | {_fmt(row['t_target'], 2)} | {vs} |{extra}")
    goal = summary["goal"]
    lines.append("")
    if goal:
        g = state.get("goal_ratio", 0.5)
        verdict = ("never reached it within the budget" if goal["t_weaver"] is None else
                   f"reached it after {goal['t_weaver']:.2f} min vs LLaMA-Factory's {goal['t_lf']:.2f} min: "
                   f"**{goal['ratio']:.2f}x** its time (goal <= {g}x: {'met' if goal['ratio'] <= g else 'not met'})"
                   if goal["ratio"] is not None else "ratio undefined (LLaMA-Factory reached it at 0 min)")
        lines.append(f"Goal check: LLaMA-Factory's final ROUGE-L is {goal['lf_final']:.1f}; weaver {verdict}.")
    else:
        lines.append("Goal check (weaver vs LLaMA-Factory's final score): not available in this run "
                     "(one of the two has no scored checkpoint; see below).")
    if plot_rel:
        lines += ["", f"![ROUGE-L against wall-clock minutes]({plot_rel})"]
    lines += ["", *_contender_lines(state), "", "<details><summary>Every scored checkpoint</summary>", "",
              "| contender | minutes | step | ROUGE-1 | ROUGE-2 | ROUGE-L | scoring s |",
              "|---|---|---|---|---|---|---|"]
    scores = state.get("scores", {})
    for name, run in state["contenders"].items():
        for c in run.get("checkpoints", []):
            sc = scores.get(c["digest"])
            if sc:
                took = sc.get("gen_s", sc.get("error"))
                lines.append(f"| {name} | {c['t_s'] / 60:.2f} | {c.get('step') or '—'} | {_fmt(sc.get('rouge1'))} | "
                             f"{_fmt(sc.get('rouge2'))} | {_fmt(sc.get('rougeL'))} | {took} |")
    return "\n".join(lines + ["", "</details>"])


def publish(state: dict, plot_path: Path, write_section) -> None:
    """Rewrite the plot and the `time_to_quality` section from the current state (called after every step)."""
    from run import results_path

    summary = summarize(state)
    drawn = plot(state, summary, plot_path)
    rel = os.path.relpath(drawn, results_path().parent) if drawn else None
    write_section(state.get("section", "time_to_quality"), markdown(state, summary, rel))
