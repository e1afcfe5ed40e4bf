"""Prompts in, completions out, on any decoding backend: the engine `weaver generate`, eval and the apps use.

    gen = Generator(model, tokenizer)                       # a transformers model in memory
    gen = Generator(LlamaCppBackend.from_gguf("m.gguf"))    # or any weaver.generate.rows.Backend
    outs = gen.generate(["prompt 1", "prompt 2"], SamplingParams(max_new_tokens=48, n=2))
    for piece in gen.stream("prompt", SamplingParams()):
        print(piece, end="")

Prompts are already-rendered strings (see weaver.data.chat.render_messages). Each prompt becomes n rows
(weaver.generate.rows.Row) and rows are decoded in batches of `batch_size`, longest prompts first so little
compute is spent on padding; results come back in input order. Streaming is one row whose text pieces are
handed over as the backend decodes them. The server's scheduler drives the same backends row by row;
`make_backend(settings)` builds the one `--backend` names.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator

from weaver.config import DEFAULT_BACKEND
from weaver.errors import ConfigError, WeaverError
from weaver.generate.rows import Backend, BackendSettings, BatchParams, Row
from weaver.generate.sampling import Completion, SamplingParams

log = logging.getLogger(__name__)


def _batch_params(p: SamplingParams, seed: int | None) -> BatchParams:
    return BatchParams(temperature=p.temperature, top_p=p.top_p, repetition_penalty=p.repetition_penalty,
                       seed=seed, num_beams=p.num_beams)


class Generator:
    """Batched generation of completions on a decoding backend (transformers by default)."""

    def __init__(self, model_or_backend, tokenizer=None, batch_size: int = 8):
        if isinstance(model_or_backend, Backend):
            self.backend = model_or_backend
        else:
            from weaver.generate.transformers_backend import TransformersBackend

            self.backend = TransformersBackend.from_model(model_or_backend, tokenizer)
        self.batch_size = max(batch_size, self.backend.n_parallel)

    @property
    def tok(self):
        """The transformers tokenizer prompts are rendered with."""
        return self.backend.tokenizer

    @property
    def model(self):
        """The transformers model (None on a backend that has none, e.g. llama.cpp)."""
        return getattr(self.backend, "model", None)

    @property
    def stats(self) -> dict:
        """Prompts, new tokens and decoding seconds so far."""
        return self.backend.stats

    def generate(
        self, prompts: list[str], params: SamplingParams, progress: Callable[[int], None] | None = None
    ) -> list[list[Completion]]:
        """Generate `params.n` completions for each prompt.

        Args:
            prompts: rendered prompt strings.
            params: decoding settings.
            progress: called with the number of prompts finished after each batch.
        Returns:
            For each prompt (in input order), a list of n Completions.
        Raises:
            WeaverError: the backend refused a setting or a prompt (e.g. longer than its context window).
        """
        encoded = [self.backend.encode(p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        per_batch = max(1, self.batch_size // max(1, params.n))
        results: list[list[Completion]] = [[] for _ in prompts]
        for start in range(0, len(order), per_batch):
            idx = order[start : start + per_batch]
            rows = [Row(encoded[i], params.max_new_tokens, list(params.stop)) for i in idx for _ in range(params.n)]
            self.backend.generate(rows, _batch_params(params, params.seed))
            for k, row in enumerate(rows):
                if row.finish_reason == "error":
                    raise WeaverError(f"generation failed: {row.text or 'the backend reported an error'}")
                reason = "length" if row.finish_reason == "length" else "stop"
                results[idx[k // params.n]].append(
                    Completion(row.text.strip(), len(row.prompt_ids), row.completion_tokens, reason))
            if progress:
                progress(len(idx))
        return results

    def stream(self, prompt: str, params: SamplingParams, cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield the reply to one prompt piece by piece as it is generated.

        Args:
            prompt: rendered prompt string.
            params: decoding settings (n is ignored: one stream).
            cancel: set it to stop generation early (e.g. a client disconnected).
        """
        pieces: queue.Queue = queue.Queue()
        done = object()
        row = Row(self.backend.encode(prompt), params.max_new_tokens, list(params.stop), on_text=pieces.put,
                  cancel=cancel or threading.Event())
        errors: list[BaseException] = []

        def work() -> None:
            try:
                self.backend.generate([row], _batch_params(params, params.seed))
            except BaseException as exc:  # surfaced to the consumer below
                errors.append(exc)
            finally:
                pieces.put(done)

        thread = threading.Thread(target=work, name="weaver-stream", daemon=True)
        thread.start()
        try:
            while (piece := pieces.get()) is not done:
                yield piece
        finally:
            row.cancel.set()  # the consumer stopped early: the backend ends the row at its next token
            thread.join()
        if errors:
            raise errors[0]


def load_generator(
    spec: str | os.PathLike, backend: str = DEFAULT_BACKEND, quantize: str = "none", gguf_quant: str = "q8_0",
    dtype: str = "auto", batch_size: int = 8, threads: int | None = None,
):
    """The generation engine the CLIs use: (generator, tokenizer, transformers model or None for llama.cpp).

    Args:
        spec: model spec (catalog name, HF folder, .gguf file or tuned run; a run is merged).
        backend: transformers | llamacpp | auto (see choose_backend).
        quantize: none | int8 (transformers backend only).
        gguf_quant: f16 | q8_0 | q4_k_m, the export a llamacpp backend runs (a .gguf spec is used as is).
        dtype: weights dtype for the transformers backend.
        batch_size: rows per batch (the transformers backend; llama.cpp decodes them in parallel slots).
        threads: CPU threads for llama.cpp (None: its measured default).
    Raises:
        WeaverError: unknown backend, int8 with llama.cpp, or xllamacpp missing.
    """
    backend, why = choose_backend(backend, spec, quantize=quantize)
    log.info("decoding backend: %s (%s)", backend, why)
    if backend == "llamacpp":
        from weaver.generate.llamacpp import LlamaCppBackend, gguf_for

        if quantize != "none":
            raise WeaverError("--quantize applies to the transformers backend; llama.cpp uses --gguf-quant")
        engine = LlamaCppBackend.from_gguf(gguf_for(spec, gguf_quant), tokenizer_spec=spec, n_threads=threads,
                                           n_parallel=min(batch_size, 4))
        return Generator(engine, batch_size=batch_size), engine.tokenizer, None
    from weaver.models.loading import load_model

    model, tok = load_model(spec, dtype=dtype, merge=True, quantize=quantize)
    return Generator(model, tok, batch_size=batch_size), tok, model


def _cannot_run_on_llamacpp(spec: str | os.PathLike, lora_only: bool = False) -> str | None:
    """Why a model spec cannot be decoded by llama.cpp (None when it can): no xllamacpp, an architecture the GGUF
    export does not write, an adapter that cannot be merged (prefix, bottleneck) or, with lora_only (a served
    --adapter), anything but a plain LoRA."""
    import importlib.util
    import json
    from pathlib import Path

    from weaver.models.arch import is_seq2seq
    from weaver.models.export import ARCHS, MERGEABLE
    from weaver.models.gguf_lora import is_plain_lora
    from weaver.models.loading import resolve

    if importlib.util.find_spec("xllamacpp") is None:
        return "xllamacpp is not installed"
    if Path(str(spec)).suffix == ".gguf":
        return None
    res = resolve(spec)
    if is_seq2seq(res.base_dir):
        return "an encoder-decoder model (T5, BART): Weaver's llama.cpp backend decodes decoder-only GGUFs"
    if res.adapter_dir is not None:
        if res.kind not in MERGEABLE:  # prefix, bottleneck (which has no peft adapter_config.json)
            return f"a train.method {res.method} run cannot be merged into GGUF weights"
        if lora_only and not is_plain_lora(res.adapter_dir):
            return f"{spec} is not a plain LoRA adapter, which is what llama.cpp applies per request"
    cfg_file = Path(res.base_dir) / "config.json"
    arch = (json.loads(cfg_file.read_text()).get("architectures") or ["?"])[0] if cfg_file.is_file() else "?"
    if arch not in ARCHS:
        return f"the GGUF export does not write a {arch}"
    return None


def choose_backend(requested: str, spec: str | os.PathLike, adapters: dict[str, str] | None = None,
                   num_beams: int = 1, quantize: str = "none", served: bool = False) -> tuple[str, str]:
    """The decoding backend for `--backend requested` ("auto" picks one) and the reason, for a log line.

    auto: transformers on a GPU, and wherever llama.cpp cannot serve the request (beam search, --quantize int8,
    an encoder-decoder model, an architecture or adapter it cannot run); otherwise llama.cpp, which decodes several
    times faster on a CPU at equal quality (bench/RESULTS.md, sections decode_speed and serve_load).
    served (the server): a tuned run given as the model is served next to its base, the adapter applied per
    request, so on llama.cpp it must be plain LoRA as a --adapter must (an IA3 or AdaLoRA run could only be served
    merged there, without its base: transformers serves both from one copy of the weights).

    Raises:
        ConfigError: an unknown backend name.
    """
    if requested != "auto":
        if requested not in BACKENDS:
            raise ConfigError(f"--backend {requested!r} is not one of auto, {', '.join(BACKENDS)}")
        return requested, "asked for"
    import torch

    if torch.cuda.is_available():
        return "transformers", "a GPU is available"
    if num_beams > 1:
        return "transformers", "beam search (llama.cpp has none)"
    if quantize != "none":
        return "transformers", f"--quantize {quantize} is a transformers option"
    try:
        why = _cannot_run_on_llamacpp(spec, lora_only=served or bool(adapters)) or next(
            (w for w in (_cannot_run_on_llamacpp(a, lora_only=True) for a in (adapters or {}).values()) if w), None)
    except WeaverError as e:  # a missing or broken model: loading it reports the error (a server: as 503)
        return "transformers", f"the model could not be inspected ({e})"
    if why:
        return "transformers", why
    return "llamacpp", "CPU: llama.cpp decodes faster at equal quality"


def _transformers(settings: BackendSettings) -> Backend:
    from weaver.generate.transformers_backend import TransformersBackend

    return TransformersBackend(settings)


def _llamacpp(settings: BackendSettings) -> Backend:
    from weaver.generate.llamacpp import LlamaCppBackend

    return LlamaCppBackend(settings)


BACKENDS: dict[str, Callable[[BackendSettings], Backend]] = {"transformers": _transformers, "llamacpp": _llamacpp}


def make_backend(settings: BackendSettings) -> Backend:
    """The backend settings.backend names, "auto" resolved by choose_backend (not yet planned or loaded).

    Raises:
        ConfigError: unknown backend name.
    """
    name, why = choose_backend(settings.backend, settings.model, settings.adapters, served=True)
    if settings.backend == "auto":
        log.info("--backend auto: %s (%s)", name, why)
    return BACKENDS[name](settings)
