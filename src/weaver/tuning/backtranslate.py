"""Back-translation of training inputs (source -> pivot -> source) with the project's own Generator
(`data.augment.backtranslate`, run by `weaver tune` through weaver.data.augment.augment_records).

    extra = backtranslate(train, {"model": "gemma3-270m", "pivot": "German", "limit": 200}, seed=0)

Both requests are rendered by `render_prompt` with the `translate` task, so the model sees the same
prompt format it would in `weaver generate --task translate`. Decoding is greedy, hence reproducible.
Records whose round trip comes back empty or unchanged are not added. The model must translate well
in both directions for this to help: use a multilingual model (gemma3-270m), not SmolLM2 (English-only).
"""

from __future__ import annotations

import logging
import random
from dataclasses import replace
from typing import Any

from weaver.config import DataConfig
from weaver.data.augment import BACKTRANSLATE_KEYS
from weaver.data.records import Record, language_of
from weaver.data.tasks import TASKS, render_prompt
from weaver.errors import ConfigError

log = logging.getLogger(__name__)
LANG_NAMES = {"en": "English", "zh": "Chinese"}


def _translate(generator, texts: list[str], target: str, max_new_tokens: int) -> list[str]:
    from weaver.generate.sampling import SamplingParams

    cfg = DataConfig(task="translate", target_lang=target)
    prompts = [render_prompt(generator.tok, Record(id="bt", instruction="", input=t, output=""), cfg) for t in texts]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=TASKS["translate"].stop)
    return [c[0].text.strip() for c in generator.generate(prompts, params)]


def backtranslate(records: list[Record], cfg: dict[str, Any], seed: int, generator=None) -> list[Record]:
    """Back-translated copies of (a seeded sample of) records, marked meta["augmented"] = "backtranslate".

    Args:
        records: training records.
        cfg: {"model": spec (required unless generator is given), "pivot": language name (default German),
            "limit": max records to translate (default all), "batch_size": 8, "max_new_tokens": 128}.
        seed: picks the sample when limit < len(records).
        generator: an existing weaver Generator to use instead of loading cfg["model"].
    Returns:
        The new records (inputs replaced by their round-trip translation).
    Raises:
        ConfigError: unknown keys or no model.
    """
    if not isinstance(cfg, dict) or any(k not in BACKTRANSLATE_KEYS for k in cfg):
        raise ConfigError(f"data.augment.backtranslate must be a mapping with keys {', '.join(BACKTRANSLATE_KEYS)}, "
                          f"got {cfg!r}")
    if generator is None:
        if not cfg.get("model"):
            raise ConfigError("data.augment.backtranslate.model is required (a translation-capable model, e.g. "
                              "gemma3-270m)")
        from weaver.generate.engine import Generator
        from weaver.models.loading import load_model

        model, tok = load_model(cfg["model"])
        generator = Generator(model, tok, batch_size=int(cfg.get("batch_size", 8)))
    chosen = list(range(len(records)))
    limit = cfg.get("limit")
    if limit is not None and limit < len(records):
        chosen = sorted(random.Random(f"{seed}:backtranslate").sample(chosen, int(limit)))
    pivot, budget = str(cfg.get("pivot", "German")), int(cfg.get("max_new_tokens", 128))
    out = []
    for lang in ("en", "zh"):
        picked = [records[i] for i in chosen if language_of(records[i].input) == lang and records[i].input.strip()]
        if not picked:
            continue
        there = _translate(generator, [r.input for r in picked], pivot, budget)
        back = _translate(generator, there, LANG_NAMES[lang], budget)
        for rec, text in zip(picked, back):
            if text and text != rec.input:
                out.append(replace(rec, id=f"{rec.id}+bt", input=text, meta={**rec.meta, "augmented": "backtranslate",
                                                                              "pivot": pivot}))
    log.info("back-translated %d of %d records via %s", len(out), len(chosen), pivot)
    return out
