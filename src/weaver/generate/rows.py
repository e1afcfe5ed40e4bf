"""The row-based decoding core every backend implements, and the one place a backend is chosen.

    backend = make_backend(settings)     # weaver.generate.engine; settings: model, adapters, backend, ...
    backend.plan()                       # resolve specs and model ids (fast, raises WeaverError)
    backend.load()                       # load weights (slow)
    backend.generate(rows, BatchParams(temperature=0.0), adapter="headline")

A `Row` is one sequence to generate (a prompt with n candidates is n rows). `Backend.generate(rows, params,
adapter)` decodes every row of one batch together: all rows share `params` and `adapter` (a name from
`model_ids`, or None for the base model). A backend feeds what it decodes to the row's `RowDecoder` (token
ids with `push`, or text pieces with `push_text`), which streams text to the row's `on_text` callback,
applies the row's stop strings and token limit, holds back incomplete UTF-8 and possible starts of a stop
string, and reports when the row is finished; a row is also finished once its `cancel` event is set or its
deadline passes (`check()`). When `generate` returns, every row has `finish_reason` set.

Callers: `weaver.generate.engine.Generator` (prompts in, completions out: the CLI, eval, the apps) and the
server's batching scheduler (streams each row to its HTTP client). Backends: `transformers`
(weaver.generate.transformers_backend) and `llamacpp` (weaver.generate.llamacpp, on the xllamacpp wheel).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from weaver.config import DataConfig
from weaver.errors import ConfigError
from weaver.generate.sampling import effective_temperature


class BackendSettings(Protocol):
    """What a backend reads from its settings (weaver.serve.settings.ServeSettings has all of it)."""

    model: str
    adapters: dict[str, str]
    backend: str
    dtype: str
    threads: int | None
    max_batch: int


@dataclass(frozen=True)
class BatchParams:
    """Decoding settings shared by every row of a batch (requests are grouped by them).

    A temperature below weaver.generate.sampling.GREEDY_BELOW becomes 0.0 (greedy), for every backend."""

    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    num_beams: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "temperature", effective_temperature(self.temperature))


@dataclass
class Row:
    """One sequence to generate and its result."""

    prompt_ids: list[int]
    max_new_tokens: int
    stop: list[str] = field(default_factory=list)
    on_text: Callable[[str], None] = lambda piece: None
    cancel: threading.Event = field(default_factory=threading.Event)
    deadline: float = float("inf")
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None
    """stop | length | cancelled | timeout | error"""
    decoder: RowDecoder | None = None


class RowDecoder:
    """One row's decoded text: stop strings, token limit, UTF-8 boundaries, held-back stop prefixes."""

    def __init__(self, row: Row, tokenizer=None, eos_ids: set[int] | frozenset = frozenset()):
        self.row = row
        self.tok = tokenizer
        self.eos_ids = eos_ids
        self.ids: list[int] = []
        self.full = ""
        self.emitted = 0
        self.hold = max((len(s) for s in row.stop), default=1) - 1
        row.decoder = self

    def _emit_until(self, end: int) -> None:
        if end > self.emitted:
            self.row.on_text(self.full[self.emitted : end])
            self.emitted = end
        self.row.text = self.full[: self.emitted]

    def finish(self, reason: str) -> None:
        """Mark the row finished; a natural end flushes text held back for a possible stop string."""
        if self.row.finish_reason is None:
            if reason in ("stop", "length"):
                self._emit_until(len(self.full))
            self.row.finish_reason = reason

    def check(self) -> bool:
        """Finish the row if it was cancelled or ran past its deadline; True when it is finished."""
        if self.row.finish_reason is None:
            if self.row.cancel.is_set():
                self.finish("cancelled")
            elif time.monotonic() > self.row.deadline:
                self.finish("timeout")
        return self.row.finish_reason is not None

    def push(self, token_id: int) -> bool:
        """Add one generated token id (decoded with the row's tokenizer); True when the row is finished."""
        if self.check():
            return True
        if token_id in self.eos_ids:
            self.finish("stop")
            return True
        self.ids.append(token_id)
        return self._advance(self.tok.decode(self.ids, skip_special_tokens=True), len(self.ids))

    def push_text(self, piece: str, n_tokens: int) -> bool:
        """Add a decoded text piece worth n_tokens tokens (a backend that decodes text itself); True when finished."""
        if self.check():
            return True
        return self._advance(self.full + piece, self.row.completion_tokens + n_tokens)

    def _advance(self, text: str, n_tokens: int) -> bool:
        self.full = text
        self.row.completion_tokens = n_tokens
        cut = min((i for i in (text.find(s) for s in self.row.stop if s) if i >= 0), default=-1)
        if cut >= 0:
            self.full = text[:cut]
            self._emit_until(cut)
            self.row.finish_reason = "stop"
            return True
        if n_tokens >= self.row.max_new_tokens:
            self.finish("length")
            return True
        end = len(text)
        while end > self.emitted and text[end - 1] == "\ufffd":  # an incomplete UTF-8 character
            end -= 1
        for keep in range(min(self.hold, end - self.emitted), 0, -1):  # a possible start of a stop string
            if any(s.startswith(text[end - keep : end]) for s in self.row.stop):
                end -= keep
                break
        self._emit_until(end)
        return False


class Backend:
    """A decoding backend; see the module docstring.

    Attributes set by plan(): model_ids (model id -> adapter name, or None for the base model), default_model,
    data_configs (model id -> the run's DataConfig, so task prompts render exactly as in tuning).
    Attributes set by load(): tokenizer (a transformers tokenizer: renders and counts prompts), context_window
    (tokens of prompt + reply), eos_ids. `stats` counts prompts, new tokens and decoding seconds.
    """

    name = ""
    """transformers | llamacpp"""

    def __init__(self, settings: BackendSettings | None = None):
        self.settings = settings
        self.model_ids: dict[str, str | None] = {}
        self.data_configs: dict[str, DataConfig] = {}
        self.default_model = ""
        self.tokenizer = None
        self.context_window = 0
        self.eos_ids: set[int] = set()
        self.n_parallel = 1
        self._stats_lock = threading.Lock()
        self.stats = {"prompts": 0, "new_tokens": 0, "seconds": 0.0}

    def plan(self) -> None:
        raise NotImplementedError

    def load(self) -> None:
        raise NotImplementedError

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a rendered prompt (special tokens written in it are parsed; nothing is added)."""
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def generate(self, rows: list[Row], params: BatchParams, adapter: str | None = None) -> None:
        raise NotImplementedError

    def count(self, rows: list[Row], seconds: float) -> None:
        """Add a finished batch to `stats`."""
        with self._stats_lock:
            self.stats["prompts"] += len(rows)
            self.stats["new_tokens"] += sum(r.completion_tokens for r in rows)
            self.stats["seconds"] += seconds


def base_id(spec: str) -> str:
    """The model id a base model spec is served under: the catalog name, or the folder's name."""
    from weaver.models.catalog import find_entry

    return spec if find_entry(spec) is not None else Path(spec).expanduser().resolve().name


def run_data_config(run_dir: Path | None) -> DataConfig | None:
    """The data section of a run's resolved config.yaml (how its prompts were rendered), if any."""
    from weaver.config import load_config

    if run_dir is None or not (Path(run_dir) / "config.yaml").is_file():
        return None
    return load_config(Path(run_dir) / "config.yaml").data


def resolve_adapter(name: str, spec: str, main, served: str):
    """The resolved `--adapter NAME=SPEC`, checked to be an adapter tuned from the served base `main`.

    Raises:
        ConfigError: not a tuned run or adapter folder, or tuned from another base model.
    """
    from weaver.models.loading import resolve

    res = resolve(spec)
    if res.adapter_dir is None:
        raise ConfigError(f"--adapter {name}={spec}: not a tuned run or adapter folder (no adapter_config.json)")
    if Path(res.base_dir).resolve() != Path(main.base_dir).resolve():
        raise ConfigError(f"--adapter {name}={spec} was tuned from {res.base_spec}, not from the served base "
                          f"model {main.base_spec or served}; serve it in another process")
    return res
