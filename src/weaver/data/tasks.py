"""Writing tasks: how each one is phrased to the model, its generation defaults and its metrics.

    msgs = build_messages(record, data_cfg)            # [{role, content}, ...]
    prompt = render_prompt(tokenizer, record, data_cfg) # the exact string the model sees
    record = record_from_fields("headline", {"input": article})   # serving / apps build records this way

`render_prompt` is the ONLY way prompts are built, for training, evaluation, serving and the apps, so a
tuned model is always asked in the format it was trained on. The user turn is the instruction, a blank
line, then the input. The instruction is `data.instruction` when set, else the record's own, else the
task's built-in instruction in `data.lang` (en or zh). Records read from chat files (messages /
sharegpt) carry their full user turn already, so no task instruction is added to them.
For task=custom, `data.template` (e.g. "Product: {product}\\nTone: {tone}\\n\\n{input}") is the user turn;
its fields other than input/instruction are taken from the record's `meta` (extra columns land there).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

from weaver.config import DataConfig
from weaver.data.chat import render_messages
from weaver.data.records import Record
from weaver.errors import ConfigError, DataError


@dataclass(frozen=True)
class Task:
    """A writing task: its instruction in en and zh, its request fields, generation defaults and metrics."""

    name: str
    instruction: dict[str, str]
    fields: tuple[str, ...] = ("input",)
    max_new_tokens: int = 128
    stop: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: ["rouge"])
    description: str = ""


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("summarize", {"en": "Summarize the following text in one or two sentences.",
                           "zh": "请用一两句话概括下面的内容。"},
             max_new_tokens=96, metrics=["rouge", "semantic"], description="text -> short summary"),
        Task("headline", {"en": "Write a short, accurate headline for the following text.",
                          "zh": "请为下面的内容写一个简短、准确的标题。"},
             max_new_tokens=32, stop=["\n"], metrics=["rouge", "semantic"], description="text -> headline"),
        Task("adcopy", {"en": "Write engaging advertising copy for the following product.",
                        "zh": "请根据下面的商品信息写一段吸引人的广告文案。"},
             max_new_tokens=160, metrics=["rouge", "distinct", "semantic"],
             description="product attributes or description -> ad copy"),
        Task("support_reply", {"en": "You are a customer support agent. Write a helpful, polite reply to the "
                                     "customer's message.",
                               "zh": "你是一名客服人员。请给下面的客户消息写一条礼貌、有帮助的回复。"},
             max_new_tokens=96, metrics=["rouge", "bleu", "semantic"], description="customer message -> reply"),
        Task("translate", {"en": "Translate the following {source}text into {target}.",
                           "zh": "请将下面的{source}文本翻译成{target}。"},
             max_new_tokens=128, metrics=["bleu", "chrf"], description="source text -> translation"),
        Task("continue", {"en": "Continue the following story.", "zh": "请续写下面的故事。"},
             max_new_tokens=192, metrics=["distinct", "rouge"], description="story opening -> continuation"),
        Task("code", {"en": "Write code for the following request.", "zh": "请根据下面的需求编写代码。"},
             max_new_tokens=256, metrics=["chrf", "bleu"], description="request -> code"),
        Task("custom", {"en": "", "zh": ""}, max_new_tokens=128, metrics=["rouge", "semantic"],
             description="your own template (data.template) with {input}-style fields"),
    ]
}

LANGUAGE_NAMES = {  # code or English name -> (English name, Chinese name)
    "en": ("English", "英文"), "english": ("English", "英文"), "zh": ("Chinese", "中文"),
    "chinese": ("Chinese", "中文"), "de": ("German", "德文"), "german": ("German", "德文"),
    "fr": ("French", "法文"), "french": ("French", "法文"), "es": ("Spanish", "西班牙文"),
    "spanish": ("Spanish", "西班牙文"), "ja": ("Japanese", "日文"), "japanese": ("Japanese", "日文"),
    "ko": ("Korean", "韩文"), "korean": ("Korean", "韩文"), "ru": ("Russian", "俄文"),
    "russian": ("Russian", "俄文"),
}


def get_task(name: str) -> Task:
    """The Task called name.

    Raises:
        ConfigError: unknown task name (naming --data.task and the valid ones).
    """
    if name not in TASKS:
        raise ConfigError(f"--data.task {name!r} is not one of {', '.join(TASKS)}")
    return TASKS[name]


def _language(name: str | None, lang: str) -> str:
    if not name:
        return ""
    known = LANGUAGE_NAMES.get(name.strip().lower())
    if known is None:
        return name
    return known[1] if lang == "zh" else known[0]


def task_instruction(data_cfg: DataConfig) -> str:
    """The built-in instruction of data_cfg.task in data_cfg.lang (translate fills in its languages)."""
    text = get_task(data_cfg.task).instruction[data_cfg.lang]
    if data_cfg.task == "translate":
        source = _language(data_cfg.source_lang, data_cfg.lang)
        target = _language(data_cfg.target_lang, data_cfg.lang) or ("中文" if data_cfg.lang == "zh" else "English")
        text = text.format(source=f"{source} " if source and data_cfg.lang == "en" else source, target=target)
    return text


def template_fields(template: str) -> tuple[str, ...]:
    """The {name} fields of a custom template, in order of first use.

    Raises:
        ConfigError: positional {} fields, attribute/index access, or unbalanced braces.
    """
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"--data.template is not a valid template ({exc}); write fields as {{input}}") from None
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise ConfigError(f"--data.template field {{{name}}} must be a plain name such as {{input}}")
        if name not in names:
            names.append(name)
    return tuple(names)


def task_fields(data_cfg: DataConfig) -> tuple[str, ...]:
    """The request fields of the configured task (for custom: the template's fields)."""
    if data_cfg.task == "custom":
        return template_fields(data_cfg.template or "")
    return get_task(data_cfg.task).fields


def _custom_turn(record: Record, data_cfg: DataConfig) -> str:
    template = data_cfg.template or ""
    values = {**{k: v for k, v in record.meta.items() if isinstance(v, str)},
              "input": record.input, "instruction": record.instruction}
    names = template_fields(template)
    missing = [n for n in names if n not in values]
    if missing:
        raise DataError(f"{record.source or record.id}: field {missing[0]!r} of --data.template is missing "
                        "from the record")
    text = template.format(**{n: values[n] for n in names})
    if "input" not in names and record.input:
        text = f"{text}\n\n{record.input}" if text else record.input
    return text


def user_turn(record: Record, data_cfg: DataConfig) -> str:
    """The text of the final user turn: instruction, a blank line, input (see the module docstring)."""
    if data_cfg.task == "custom":
        return _custom_turn(record, data_cfg)
    if data_cfg.instruction:
        instruction = data_cfg.instruction
    elif record.instruction.strip() or record.meta.get("chat"):
        instruction = record.instruction
    else:
        instruction = task_instruction(data_cfg)
    return "\n\n".join(part for part in (instruction.strip(), record.input) if part)


def build_messages(record: Record, data_cfg: DataConfig) -> list[dict[str, str]]:
    """The conversation to render: optional system turn, prior history turns, then the user turn.

    Args:
        record: the example (its output is NOT included; training appends it after the prompt).
        data_cfg: task, language and instruction settings.
    Returns:
        [{"role": ..., "content": ...}, ...] ending with the user turn.
    Raises:
        DataError: a custom template field the record lacks.
    """
    messages = [{"role": "system", "content": record.system}] if record.system else []
    for user, assistant in record.history:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    messages.append({"role": "user", "content": user_turn(record, data_cfg)})
    return messages


def render_prompt(tokenizer, record: Record, data_cfg: DataConfig) -> str:
    """The exact prompt string for a record (chat template when the tokenizer has one, else plain).

    Args:
        tokenizer: the model's tokenizer.
        record: the example.
        data_cfg: task, language and instruction settings.
    Returns:
        The prompt, ending where the model's reply begins.
    Raises:
        DataError: a custom template field the record lacks.
    """
    return render_messages(tokenizer, build_messages(record, data_cfg), add_generation_prompt=True)


def record_from_fields(task: str, fields: dict[str, object], data_cfg: DataConfig | None = None) -> Record:
    """Build a Record from a request's fields (serving `/v1/weaver/{task}`, the apps), validating them.

    Args:
        task: the task name.
        fields: field name -> text; must cover the task's fields (`Task.fields`, or the custom template's).
            Optional extras: "instruction", "system".
        data_cfg: needed for task=custom (its template names the fields).
    Returns:
        A Record with an empty output; extra template fields are put in `meta`.
    Raises:
        DataError: a missing, empty, non-string or unknown field.
    """
    cfg = data_cfg if data_cfg is not None and data_cfg.task == task else None
    if task == "custom" and cfg is None:
        raise DataError("task custom needs the run's data config (its data.template names the fields)")
    names = task_fields(cfg) if cfg is not None else get_task(task).fields
    allowed = set(names) | {"instruction", "system"}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise DataError(f"unknown field {unknown[0]!r} for task {task}; expected {', '.join(names)}")
    for name, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise DataError(f"field {name!r} must be a string")
    missing = [n for n in names if n != "instruction" and not str(fields.get(n) or "").strip()]
    if missing:
        raise DataError(f"field {missing[0]!r} is required for task {task} and must not be empty")
    meta = {n: fields[n] for n in names if n not in ("input", "instruction")}
    return Record(id="request", instruction=str(fields.get("instruction") or ""), input=str(fields.get("input") or ""),
                  output="", system=fields.get("system") or None, meta=meta, source="request")
