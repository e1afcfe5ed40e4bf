"""Model execution for the server, behind a small interface so other engines (llama.cpp) can plug in.

    backend = TransformersBackend(settings)
    backend.plan()                      # resolve specs and model ids (fast, raises WeaverError)
    backend.load()                      # load weights (slow; the app runs it in a background thread)
    backend.generate(rows, BatchParams(temperature=0.0), adapter="headline")

The interface a backend implements (`Backend`):

- `plan()` resolves `settings.model` and `settings.adapters` and fills `model_ids` (model id -> adapter
  name, or None for the base model), `default_model` and `data_configs` (model id -> the run's DataConfig,
  so task prompts are rendered exactly as in tuning). Raises WeaverError on a bad spec.
- `load()` loads the weights and sets `tokenizer` (a transformers tokenizer used to render and count
  prompts) and `context_window` (tokens of prompt + reply the model can attend to).
- `generate(rows, params, adapter)` generates every `Row` of one batch together: all rows share
  `params` (a `BatchParams`) and `adapter` (a name from `model_ids`, or None for the base). A backend
  feeds each new token to `row.decoder.push(token_id)`, which streams text to the row's `on_text`
  callback, applies the row's stop strings and token limit, and reports when the row is finished;
  a row is also finished once its `cancel` event is set or its deadline passes (`row.decoder.check()`).
  Streaming and non-streaming requests both go through `generate`: streaming is `on_text`.
  When `generate` returns, every row has `finish_reason` set.

`BACKENDS` maps the `--backend` flag to a class taking `ServeSettings`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from weaver.config import DataConfig
from weaver.errors import ConfigError
from weaver.generate.engine import effective_temperature, model_generate, sampling_kwargs, virtual_tokens
from weaver.serve.settings import ServeSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchParams:
    """Decoding settings shared by every row of a batch (requests are grouped by them).

    A temperature below weaver.generate.engine.GREEDY_BELOW becomes 0.0 (greedy), for every backend."""

    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "temperature", effective_temperature(self.temperature))


class RowDecoder:
    """Turns one row's token ids into text pieces: stop strings, token limit, UTF-8 boundaries."""

    def __init__(self, row: Row, tokenizer, eos_ids: set[int]):
        self.row = row
        self.tok = tokenizer
        self.eos_ids = eos_ids
        self.ids: list[int] = []
        self.emitted = 0
        self.hold = max((len(s) for s in row.stop), default=1) - 1

    def _emit_until(self, text: str, end: int) -> None:
        if end > self.emitted:
            self.row.on_text(text[self.emitted : end])
            self.emitted = end
        self.row.text = text[: self.emitted]

    def finish(self, reason: str) -> None:
        """Mark the row finished; a natural end flushes text held back for a possible stop string."""
        if self.row.finish_reason is None:
            if reason in ("stop", "length"):
                text = self.tok.decode(self.ids, skip_special_tokens=True)
                self._emit_until(text, len(text))
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
        """Add one generated token; returns True when the row is finished."""
        if self.check():
            return True
        if token_id in self.eos_ids:
            self.finish("stop")
            return True
        self.ids.append(token_id)
        self.row.completion_tokens = len(self.ids)
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in self.row.stop) if i >= 0), default=-1)
        if cut >= 0:
            self._emit_until(text, cut)
            self.row.finish_reason = "stop"
            return True
        if len(self.ids) >= self.row.max_new_tokens:
            self.finish("length")
            return True
        end = len(text)
        while end > self.emitted and text[end - 1] == "\ufffd":  # an incomplete UTF-8 character
            end -= 1
        for keep in range(min(self.hold, end - self.emitted), 0, -1):  # a possible start of a stop string
            if any(s.startswith(text[end - keep : end]) for s in self.row.stop):
                end -= keep
                break
        self._emit_until(text, end)
        return False


@dataclass
class Row:
    """One sequence to generate (a request with n candidates has n rows) and its result."""

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


class Backend:
    """The interface between the server and a model engine; see the module docstring."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.model_ids: dict[str, str | None] = {}
        self.data_configs: dict[str, DataConfig] = {}
        self.default_model = ""
        self.tokenizer = None
        self.context_window = 0

    def plan(self) -> None:
        raise NotImplementedError

    def load(self) -> None:
        raise NotImplementedError

    def generate(self, rows: list[Row], params: BatchParams, adapter: str | None) -> None:
        raise NotImplementedError


def _base_id(spec: str) -> str:
    from weaver.models.catalog import find_entry

    return spec if find_entry(spec) is not None else Path(spec).expanduser().resolve().name


def _run_data_config(run_dir: Path | None) -> DataConfig | None:
    """The data section of a run's resolved config.yaml (how its prompts were rendered), if any."""
    from weaver.config import load_config

    if run_dir is None or not (Path(run_dir) / "config.yaml").is_file():
        return None
    return load_config(Path(run_dir) / "config.yaml").data


class TransformersBackend(Backend):
    """transformers + peft: one copy of the base weights, every adapter loaded by name (multi-adapter)."""

    def plan(self) -> None:
        from weaver.models.loading import check_adapter_set, resolve

        main = resolve(self.settings.model)
        self.base_dir = main.base_dir
        self.adapter_dirs: dict[str, Path] = {}
        base_id = _base_id(main.base_spec or self.settings.model)
        if main.adapter_dir is None and main.run_dir is not None:  # a freeze/full run: its own model, its own id
            base_id = Path(main.run_dir).expanduser().resolve().name
        if main.adapter_dir is not None:
            run_id = Path(main.run_dir or main.adapter_dir).expanduser().resolve().name
            self._add_adapter(run_id, main)
        for name, spec in self.settings.adapters.items():
            self._add_adapter(name, resolve_adapter(name, spec, main, self.settings.model))
        check_adapter_set(self.adapter_dirs)
        if base_id in self.model_ids:
            raise ConfigError(f"model id {base_id!r} is used by both the base model and an adapter; rename the adapter")
        self.model_ids[base_id] = None
        self.default_model = next(iter(self.model_ids))

    def _add_adapter(self, name: str, res) -> None:
        if name in self.model_ids:
            raise ConfigError(f"model id {name!r} is given twice; choose distinct names with --adapter NAME=RUN")
        self.model_ids[name] = name
        self.adapter_dirs[name] = res.adapter_dir
        data_cfg = _run_data_config(res.run_dir)
        if data_cfg is not None:
            self.data_configs[name] = data_cfg

    def load(self) -> None:
        from transformers import AutoModelForCausalLM

        from weaver.models.loading import attach_adapter, load_tokenizer, resolve_dtype

        if not self.model_ids:
            self.plan()
        if self.settings.threads:
            import torch

            torch.set_num_threads(self.settings.threads)
        self.tokenizer = load_tokenizer(self.base_dir)
        model = AutoModelForCausalLM.from_pretrained(self.base_dir, dtype=resolve_dtype(self.settings.dtype))
        for i, (name, adapter_dir) in enumerate(self.adapter_dirs.items()):
            if i == 0:
                model = attach_adapter(model, adapter_dir, name)  # peft, or a bottleneck adapter (alone)
            else:
                model.load_adapter(adapter_dir, adapter_name=name)
        self.model = model.eval()
        self.is_peft = bool(self.adapter_dirs)
        self.context_window = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {e for e in [*eos, self.tokenizer.eos_token_id] if e is not None}

    def _adapter_context(self, adapter: str | None):
        if not self.is_peft:
            return contextlib.nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

    def generate(self, rows: list[Row], params: BatchParams, adapter: str | None) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        for row in rows:
            row.decoder = RowDecoder(row, self.tokenizer, self.eos_ids)
        pad = self.tokenizer.pad_token_id
        width = max(len(r.prompt_ids) for r in rows)
        input_ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in rows])
        attention = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in rows])

        class _Rows(StoppingCriteria):
            """Feeds each new token to its row and stops rows that are done (stop, limit, cancel, timeout)."""

            def __call__(self, ids, scores, **kwargs):
                done = [r.decoder.push(int(t)) for r, t in zip(rows, ids[:, -1].tolist())]
                return torch.tensor(done, dtype=torch.bool, device=ids.device)

        # the engine's decoding (weaver.generate.engine.sampling_kwargs): a batched reply equals the same request alone
        offsets = [virtual_tokens(self.model) + width - len(r.prompt_ids) for r in rows]
        kw = sampling_kwargs(params.repetition_penalty, params.temperature, params.top_p, offsets)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.inference_mode(), self._adapter_context(adapter):
            model_generate(  # a prefix-tuned run's virtual tokens are applied there
                self.model, input_ids, attention, pad, max_new_tokens=max(r.max_new_tokens for r in rows),
                eos_token_id=sorted(self.eos_ids), stopping_criteria=StoppingCriteriaList([_Rows()]), **kw,
            )
        for row in rows:
            row.decoder.finish("length")


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


def _llamacpp_backend(settings: ServeSettings) -> Backend:
    """llama.cpp on the model's GGUF export (weaver.generate.llamacpp, on the xllamacpp wheel)."""
    from weaver.generate.llamacpp import LlamaCppBackend

    return LlamaCppBackend(settings)


BACKENDS: dict[str, Callable[[ServeSettings], Backend]] = {
    "transformers": TransformersBackend,
    "llamacpp": _llamacpp_backend,
}


def make_backend(settings: ServeSettings) -> Backend:
    """The backend named by settings.backend.

    Raises:
        ConfigError: unknown backend name.
    """
    if settings.backend not in BACKENDS:
        raise ConfigError(f"--backend {settings.backend!r} is not one of {', '.join(BACKENDS)}")
    return BACKENDS[settings.backend](settings)

