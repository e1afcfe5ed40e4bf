"""Preference pairs without writers: `weaver data pairs --from FILE --strategy reference|principles --out F`.

    pairs, report = make_pairs(records, "reference", generator, data_cfg, params)   # chosen = the reference,
    write_pairs("pairs.jsonl", pairs)                                                # rejected = the model's reply

Two strategies for a team with references but no studio history yet:
  - reference: chosen = the human reference, rejected = the model's own reply to the same prompt (rendered
    with weaver.data.tasks.render_prompt, as in training and serving);
  - principles (in the spirit of Constitutional DPO): rejected = the reference rewritten by the model to break
    one stated principle (too long, off-topic, invents a fact, wrong tone; tuning/principles.yaml, or your own
    YAML per task), picked per record by a seeded draw.
A generated reply that is empty or the same text as the reference makes no pair (counted in the report).
It generates with a model, so it lives in tuning/, above generate/ (the layering of docs/DESIGN).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from weaver.config import DataConfig
from weaver.data.preferences import PreferencePair
from weaver.data.records import Record, is_blank, normalize_text
from weaver.data.tasks import get_task, render_prompt
from weaver.errors import ConfigError
from weaver.files import atomic_write_text

STRATEGIES = ("reference", "principles")
DEFAULT_PRINCIPLES = Path(__file__).with_name("principles.yaml")
REWRITE = ("{principle}\n\nRequest:\n{request}\n\nReply:\n{reply}\n\n"
           "Write only the rewritten reply, nothing before or after it.")


def load_principles(path: str | Path | None, task: str) -> dict[str, str]:
    """The principles (name -> instruction) for task: the file's `default` merged with its `tasks: {task}`.

    A file that is a plain mapping of names to instructions applies to every task.
    Raises:
        ConfigError: a missing or malformed file, or no principle for the task.
    """
    from weaver.config import read_yaml

    file = Path(path) if path else DEFAULT_PRINCIPLES
    if not file.is_file():
        raise ConfigError(f"--principles {str(file)!r} does not exist; see {DEFAULT_PRINCIPLES} for the shape")
    data = read_yaml(file) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping of principle names to instructions")
    if "default" in data or "tasks" in data:
        tasks = data.get("tasks") or {}
        merged = {**(data.get("default") or {}), **(tasks.get(task) or {} if isinstance(tasks, dict) else {})}
    else:
        merged = data
    bad = [k for k, v in merged.items() if not isinstance(v, str) or is_blank(v)]
    if bad:
        raise ConfigError(f"{file}: principle {bad[0]!r} must be a non-empty instruction string")
    if not merged:
        raise ConfigError(f"{file} holds no principle for task {task}: add a `default:` or `tasks: {task}:` entry")
    return {str(k): v.strip() for k, v in merged.items()}


def rewrite_prompt(tokenizer, record: Record, data_cfg: DataConfig, principle: str) -> str:
    """The prompt asking the model to rewrite record.output so that it breaks principle."""
    from weaver.data.chat import render_messages
    from weaver.data.tasks import user_turn

    text = REWRITE.format(principle=principle, request=user_turn(record, data_cfg), reply=record.output)
    return render_messages(tokenizer, [{"role": "user", "content": text}])


def make_pairs(records: list[Record], strategy: str, generator, data_cfg: DataConfig, params,
               principles: dict[str, str] | None = None, seed: int = 0) -> tuple[list[PreferencePair], dict]:
    """Pairs (chosen = each record's reference) with a generated rejected reply.

    Args:
        records: SFT records whose output is the reference.
        strategy: reference | principles.
        generator: a weaver.generate.Generator on the model that writes the rejected replies.
        data_cfg: task, language and instruction settings (how prompts are rendered).
        params: weaver.generate.SamplingParams.
        principles: name -> instruction (strategy principles; load_principles).
        seed: the seed of the per-record principle draw.
    Returns:
        (pairs, report {strategy, records, pairs, skipped_same, skipped_empty, principles?}).
    Raises:
        ConfigError: unknown strategy, or principles without any principle.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    tok = generator.tok
    picked: list[str | None] = [None] * len(records)
    if strategy == "reference":
        prompts = [render_prompt(tok, r, data_cfg) for r in records]
    else:
        if not principles:
            raise ConfigError("--strategy principles needs at least one principle (--principles FILE)")
        rng = random.Random(seed)
        picked = [rng.choice(sorted(principles)) for _ in records]
        prompts = [rewrite_prompt(tok, r, data_cfg, principles[p]) for r, p in zip(records, picked)]
    outs = generator.generate(prompts, params)
    pairs, report = [], {"strategy": strategy, "records": len(records), "skipped_same": 0, "skipped_empty": 0}
    for record, out, principle in zip(records, outs, picked):
        text = out[0].text.strip()
        if is_blank(text):
            report["skipped_empty"] += 1
            continue
        if normalize_text(text) == normalize_text(record.output):
            report["skipped_same"] += 1
            continue
        meta = {**record.meta, "strategy": strategy, **({"principle": principle} if principle else {})}
        prompt = Record(record.id, record.instruction, record.input, record.output, record.system, record.history,
                        meta=meta, source=record.source)
        pairs.append(PreferencePair(prompt, text))
    report["pairs"] = len(pairs)
    if strategy == "principles":
        report["principles"] = {name: sum(1 for p in pairs if p.record.meta["principle"] == name)
                                for name in sorted(principles)}
    return pairs, report


def write_pairs(path: str | Path, pairs: list[PreferencePair]) -> Path:
    """Write pairs as JSON Lines in the flat shape weaver.data.preferences reads (atomically)."""
    path = Path(path)
    atomic_write_text(path, "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in pairs))
    return path


def generate_pairs(source: str, strategy: str, out: str, model: str, data_cfg: DataConfig, params=None,
                   principles_file: str | None = None, limit: int | None = None, batch_size: int = 8,
                   seed: int = 0) -> dict:
    """Read SFT records from source, make pairs with the model, write them to out; the CLI's function.

    Returns:
        The report of make_pairs plus {"out", "model"}.
    Raises:
        ConfigError / DataError / ModelNotFoundError: bad options, records or model.
    """
    from weaver.data.readers import read_records
    from weaver.generate import Generator, SamplingParams
    from weaver.models.loading import load_model

    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    records = read_records(source, data_cfg.columns or None, data_cfg.on_error)[:limit]
    principles = load_principles(principles_file, data_cfg.task) if strategy == "principles" else None
    task = get_task(data_cfg.task)
    if params is None:
        longer = 3 if strategy == "principles" else 1  # a "too long" rewrite needs room to be too long
        params = SamplingParams(max_new_tokens=task.max_new_tokens * longer, repetition_penalty=1.1,
                                stop=list(task.stop) if strategy == "reference" else [], seed=seed)
    lm, tok = load_model(model, merge=True)
    pairs, report = make_pairs(records, strategy, Generator(lm, tok, batch_size=batch_size), data_cfg, params,
                               principles, seed)
    write_pairs(out, pairs)
    return {**report, "out": str(out), "model": model}
