"""Find the adapters a contender saved, time-stamp them, and score each one the same way.

Every contender is scored identically: the base model folder, the adapter merged into it
(`merge_and_unload`), weaver's generation engine with greedy decoding, repetition penalty 1.1 and
48 new tokens, the prompt rendered by `weaver.data.chat.render_messages`, and ROUGE from
`weaver.eval.metrics.rouge` (best over the three dialogsum references; rouge-score with stemming). A Chinese
task (settings lang "zh") is scored on characters (rouge1/2/L) and on jieba words (rouge1_word/...), both with
weaver's tokenizers.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

ADAPTER_FILE = "adapter_model.safetensors"
# weaver's resumable checkpoints (weaver.tuning.checkpoint) hold the trainable tensors, not a peft folder.
WEAVER_FILE, WEAVER_STATE = "trainable.safetensors", "state.json"


def scorer_name(lang: str = "en") -> str:
    """Which ROUGE code scores the predictions."""
    if lang == "zh":
        return ("weaver.eval.metrics.rouge: ROUGE F1 on characters (each CJK character a token, punctuation dropped) "
                "and on jieba words (rows `(jieba words)`), rouge-score")
    try:
        from weaver.eval.metrics import rouge  # noqa: F401

        return "weaver.eval.metrics.rouge (rouge-score F1 with stemming, best of the references)"
    except ImportError:
        return "rouge-score F1 with stemming, best of the references (weaver.eval.metrics is not available)"


def rouge_scores(preds: list[str], refs_list: list[list[str]], lang: str = "en") -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 x100 over examples, each the best over its references (zh: characters, plus
    the same on jieba words as rouge1_word, rouge2_word, rougeL_word)."""
    keys = ("rouge1", "rouge2", "rougeL")
    if lang == "zh":
        from weaver.eval.metrics import rouge

        n = max(1, len(preds))
        char, word = rouge(preds, refs_list, "zh", "char"), rouge(preds, refs_list, "zh", "word")
        return {**{k: round(sum(p[k] for p in char) / n, 2) for k in keys},
                **{f"{k}_word": round(sum(p[k] for p in word) / n, 2) for k in keys}}
    try:
        from weaver.eval.metrics import rouge

        per = rouge(preds, refs_list, "en")
    except ImportError:
        from rouge_score import rouge_scorer

        sc = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
        per = []
        for pred, refs in zip(preds, refs_list):
            best = {k: max(100 * sc.score(r, pred)[k].fmeasure for r in refs) for k in ("rouge1", "rouge2", "rougeL")}
            per.append(best)
    n = max(1, len(per))
    return {k: round(sum(p[k] for p in per) / n, 2) for k in ("rouge1", "rouge2", "rougeL")}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def find_checkpoints(out_dir: Path, t0: float, budget_s: float) -> tuple[list[dict], list[dict]]:
    """Adapters saved under out_dir, with their time since launch (the weights file's mtime - t0).

    An adapter is a peft folder (adapter_config.json + adapter_model.safetensors) or one of weaver's
    resumable checkpoints (checkpoints/step-N/ with trainable.safetensors + state.json).

    Identical adapters (a `best/` copy of a checkpoint) count once, at their earliest time.
    Returns:
        (kept, late): kept are within the budget, sorted by time; late were written after it.
    """
    seen: dict[str, dict] = {}
    found = [f for f in Path(out_dir).rglob(ADAPTER_FILE) if (f.parent / "adapter_config.json").is_file()]
    found += [f for f in Path(out_dir).rglob(WEAVER_FILE) if (f.parent / WEAVER_STATE).is_file()]
    for f in found:
        entry = {"path": str(f.parent), "t_s": round(f.stat().st_mtime - t0, 1), "digest": _digest(f)}
        old = seen.get(entry["digest"])
        if old is None or entry["t_s"] < old["t_s"]:
            seen[entry["digest"]] = entry
    ordered = sorted(seen.values(), key=lambda e: e["t_s"])
    return [e for e in ordered if e["t_s"] <= budget_s], [e for e in ordered if e["t_s"] > budget_s]


def pick(checkpoints: list[dict], limit: int) -> list[dict]:
    """At most `limit` checkpoints, evenly spread in time, always including the last one."""
    if limit <= 0 or len(checkpoints) <= limit:
        return list(checkpoints)
    if limit == 1:
        return [checkpoints[-1]]
    n = len(checkpoints) - 1
    idx = sorted({round(i * n / (limit - 1)) for i in range(limit)})
    return [checkpoints[i] for i in idx]


def load_adapter(model, folder: Path):
    """The base model with the folder's adapter merged in (a peft folder or a weaver checkpoint).

    A weaver checkpoint's tensors are loaded by weaver's own `load_checkpoint` into the peft model
    described by the run's adapter/ (or best/) config, so names and shapes are checked.
    Raises:
        FileNotFoundError: a weaver checkpoint whose run has no adapter config yet.
        RuntimeError: the checkpoint does not match that adapter.
    """
    from peft import PeftModel

    if (folder / "adapter_config.json").is_file():
        return PeftModel.from_pretrained(model, folder).merge_and_unload()
    from weaver.tuning.checkpoint import load_checkpoint

    run_dir = folder.parent.parent
    cfg_dir = next((d for d in (run_dir / "adapter", run_dir / "best") if (d / "adapter_config.json").is_file()), None)
    if cfg_dir is None:
        raise FileNotFoundError(f"{run_dir} has no adapter/ or best/ to tell the adapter's shape")
    model = PeftModel.from_pretrained(model, cfg_dir, is_trainable=True)
    load_checkpoint(folder, model)
    return model.merge_and_unload()


def evaluate(model_dir: Path, adapter_dir: Path | None, test: list[dict], settings: dict) -> dict:
    """Generate replies for the test examples with the (merged) model and score them.

    Args:
        settings: max_new_tokens, repetition_penalty, gen_batch.
    Returns:
        {"rouge1", "rouge2", "rougeL", "gen_s", "preds"}.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from weaver.data.chat import render_messages
    from weaver.generate.engine import Generator
    from weaver.generate.sampling import SamplingParams

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir is not None:
        model = load_adapter(model, Path(adapter_dir))
    model.eval()
    prompts = [render_messages(tok, [{"role": "user", "content": ex["user"]}]) for ex in test]
    params = SamplingParams(max_new_tokens=settings["max_new_tokens"], temperature=0.0,
                            repetition_penalty=settings["repetition_penalty"])
    t = time.perf_counter()
    outs = Generator(model, tok, batch_size=settings["gen_batch"]).generate(prompts, params)
    preds = [o[0].text for o in outs]
    scores = rouge_scores(preds, [ex["references"] for ex in test], settings.get("lang", "en"))
    return {**scores, "gen_s": round(time.perf_counter() - t, 1), "preds": preds}
