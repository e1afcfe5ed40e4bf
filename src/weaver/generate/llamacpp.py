"""A llama.cpp generation backend with the interface of `weaver.generate.engine.Generator`.

    gen, tok = load_llamacpp("runs/dialogsum")           # exports the merged run to GGUF once (cached)
    outs = gen.generate([prompt], SamplingParams(max_new_tokens=48))
    for piece in gen.stream(prompt, SamplingParams()):
        print(piece, end="")

Needs the optional `[llamacpp]` extra (`make install-llamacpp` builds llama-cpp-python). A spec may be
a .gguf file (used as is), a catalog name (its embedded GGUF, the same weights transformers loads), or
an HF folder / tuned run, which is exported once with `weaver.models.export.export_gguf` into
`$WEAVER_HOME/gguf-exports/` (keyed by the weights' content hash and the quantisation).
Prompts are the same rendered strings the transformers engine takes; special tokens in them
(`<|im_start|>`) are parsed as tokens and no BOS is added unless the prompt has it, as in the engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from weaver.errors import ConfigError, WeaverError
from weaver.generate.engine import Completion, SamplingParams
from weaver.models.catalog import find_entry
from weaver.models.export import QUANTS, _require_llama_cpp, export_gguf
from weaver.models.loading import _assemble_gguf, resolve, sha256_file, weaver_home
from weaver.serve.backend import Backend, RowDecoder, _base_id, _run_data_config


class LlamaCppGenerator:
    """Generation on a GGUF model through llama-cpp-python (one sequence at a time, thread-safe)."""

    def __init__(self, model_path: str | os.PathLike, n_ctx: int = 4096, n_threads: int | None = None):
        llama_cpp = _require_llama_cpp("--backend llamacpp")
        path = Path(model_path)
        if not path.is_file():
            raise WeaverError(f"GGUF file {path} does not exist")
        threads = n_threads or max(1, os.cpu_count() or 1)
        try:
            # last_n_tokens_size = n_ctx: the repetition penalty sees the whole context, as transformers' does
            self.llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                last_n_tokens_size=n_ctx, verbose=False,
            )  # fmt: skip
        except (ValueError, RuntimeError) as exc:
            raise WeaverError(f"llama.cpp cannot load {path}: {exc}") from None
        self.model_path = path
        self.n_ctx = n_ctx
        self.eos_id = self.llm.token_eos()
        self._lock = threading.Lock()
        self.stats = {"prompts": 0, "new_tokens": 0, "seconds": 0.0}

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a rendered prompt (special tokens parsed, no BOS added)."""
        return self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def _kwargs(self, p: SamplingParams, n_prompt: int, seed: int | None) -> dict:
        if p.num_beams != 1:
            raise WeaverError("--backend llamacpp has no beam search: set num_beams to 1 or use --backend transformers")
        if n_prompt >= self.n_ctx:
            raise WeaverError(f"the prompt has {n_prompt} tokens, more than the context window ({self.n_ctx})")
        return {
            "max_tokens": max(1, min(p.max_new_tokens, self.n_ctx - n_prompt)),
            "temperature": p.temperature,
            "top_p": p.top_p,
            "top_k": 0,  # 0 = whole vocabulary, as the transformers engine samples
            "min_p": 0.0,
            "repeat_penalty": p.repetition_penalty,
            "stop": [s for s in p.stop if s] or None,
            "seed": seed,
        }

    def generate(
        self, prompts: list[str], params: SamplingParams, progress: Callable[[int], None] | None = None
    ) -> list[list[Completion]]:
        """Generate `params.n` completions for each prompt, in input order.

        Args:
            prompts: rendered prompt strings.
            params: decoding settings (num_beams must be 1).
            progress: called with 1 after each prompt.
        Returns:
            For each prompt, a list of n Completions.
        Raises:
            WeaverError: beam search requested or a prompt longer than the context window.
        """
        results = []
        for prompt in prompts:
            ids = self.encode(prompt)
            outs = []
            for k in range(params.n):
                seed = None if params.seed is None else params.seed + k
                outs.append(self._complete(ids, self._kwargs(params, len(ids), seed)))
            results.append(outs)
            if progress:
                progress(1)
        return results

    def _complete(self, ids: list[int], kw: dict) -> Completion:
        with self._lock:
            self.llm.reset()
            t0 = time.perf_counter()
            out = self.llm.create_completion(ids, **kw)
            self.stats["seconds"] += time.perf_counter() - t0
        choice, usage = out["choices"][0], out["usage"]
        n_new = int(usage["completion_tokens"])
        self.stats["prompts"] += 1
        self.stats["new_tokens"] += n_new
        reason = "stop" if choice["finish_reason"] == "stop" or n_new < kw["max_tokens"] else "length"
        return Completion(choice["text"].strip(), len(ids), n_new, reason)

    def stream(self, prompt: str, params: SamplingParams, cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield the reply to one prompt piece by piece as it is generated.

        Args:
            prompt: rendered prompt string.
            params: decoding settings (n is ignored: one stream).
            cancel: set it to stop generation early (e.g. a client disconnected).
        """
        ids = self.encode(prompt)
        kw = self._kwargs(params, len(ids), params.seed)
        with self._lock:
            self.llm.reset()
            chunks = self.llm.create_completion(ids, stream=True, **kw)
            try:
                for chunk in chunks:
                    if cancel is not None and cancel.is_set():
                        break
                    piece = chunk["choices"][0]["text"]
                    if piece:
                        yield piece
            finally:
                chunks.close()


def gguf_for(spec: str | os.PathLike, quant: str = "q8_0") -> Path:
    """A GGUF file for a model spec: the file itself, a catalog model's GGUF, or a cached export.

    Args:
        spec: .gguf file, catalog name, HF folder or tuned run directory.
        quant: quantisation of an export (f16 | q8_0 | q4_k_m); a given .gguf or catalog GGUF is used as is.
    Returns:
        Path of the GGUF file.
    Raises:
        WeaverError / ModelNotFoundError: unknown spec or an export failure.
    """
    if quant not in QUANTS:
        raise WeaverError(f"--gguf-quant {quant!r} is not one of {', '.join(QUANTS)}")
    path = Path(str(spec)).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    entry = find_entry(str(spec))
    if entry is not None:
        return _assemble_gguf(entry)
    resolved = resolve(spec)
    digest = hashlib.sha256(quant.encode())
    folders = [resolved.base_dir] + ([resolved.adapter_dir] if resolved.adapter_dir else [])
    for folder in folders:
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.suffix in (".safetensors", ".json", ".bin", ".jinja"):
                digest.update(f.name.encode() + sha256_file(f).encode())
    target = weaver_home() / "gguf-exports" / f"{Path(str(spec)).name}-{digest.hexdigest()[:16]}-{quant}.gguf"
    if not target.is_file():
        export_gguf(spec, target, quant)
        (target.with_suffix(".json")).write_text(json.dumps({"source": str(spec), "quant": quant}) + "\n")
    return target


def load_llamacpp(spec: str | os.PathLike, quant: str = "q8_0", n_ctx: int = 4096):
    """(LlamaCppGenerator, transformers tokenizer) for a model spec; the tokenizer renders prompts.

    Raises:
        WeaverError: llama-cpp-python missing, unknown spec, or a GGUF llama.cpp cannot load.
    """
    from weaver.models.loading import load_tokenizer

    _require_llama_cpp("--backend llamacpp")
    gguf = gguf_for(spec, quant)
    return LlamaCppGenerator(gguf, n_ctx=n_ctx), load_tokenizer(spec)


def load_generator(
    spec: str | os.PathLike, backend: str = "transformers", quantize: str = "none", gguf_quant: str = "q8_0",
    dtype: str = "auto", batch_size: int = 8,
):
    """The generation engine the CLIs use: (generator, tokenizer, transformers model or None for llama.cpp).

    Args:
        spec: model spec (catalog name, HF folder, .gguf file or tuned run; a run is merged).
        backend: transformers | llamacpp.
        quantize: none | int8 (transformers backend only).
        gguf_quant: f16 | q8_0 | q4_k_m, the export a llamacpp backend runs (a .gguf spec is used as is).
        dtype: weights dtype for the transformers backend.
        batch_size: prompts per batch (transformers backend).
    Raises:
        WeaverError: unknown backend, int8 with llama.cpp, or llama-cpp-python missing.
    """
    if backend == "llamacpp":
        if quantize != "none":
            raise WeaverError("--quantize applies to the transformers backend; llama.cpp uses --gguf-quant")
        gen, tok = load_llamacpp(spec, gguf_quant)
        return gen, tok, None
    if backend != "transformers":
        raise WeaverError(f"--backend {backend!r} is not one of transformers, llamacpp")
    from weaver.generate.engine import Generator
    from weaver.models.loading import load_model

    model, tok = load_model(spec, dtype=dtype, merge=True, quantize=quantize)
    return Generator(model, tok, batch_size=batch_size), tok, model


class LlamaCppBackend(Backend):
    """`weaver serve --backend llamacpp`: the server's token-level Backend on llama.cpp (see weaver.serve.backend).

    One model per process: a tuned run is served merged (its GGUF export), so extra --adapter runs are refused.
    Rows are generated one after another (llama.cpp here runs one sequence at a time).
    """

    quant = "q8_0"

    def plan(self) -> None:
        _require_llama_cpp("--backend llamacpp")
        if self.settings.adapters:
            raise ConfigError("--backend llamacpp serves one merged model: drop --adapter or use --backend "
                              "transformers")
        resolved = resolve(self.settings.model)
        if resolved.adapter_dir is not None:
            model_id = Path(resolved.run_dir or resolved.adapter_dir).expanduser().resolve().name
            data_cfg = _run_data_config(resolved.run_dir)
            if data_cfg is not None:
                self.data_configs[model_id] = data_cfg
        else:
            model_id = _base_id(self.settings.model)
        self.model_ids = {model_id: None}
        self.default_model = model_id

    def load(self) -> None:
        from weaver.models.loading import load_tokenizer

        if not self.model_ids:
            self.plan()
        self.gen = LlamaCppGenerator(gguf_for(self.settings.model, self.quant), n_ctx=4096,
                                     n_threads=self.settings.threads)
        self.tokenizer = load_tokenizer(self.settings.model)
        self.context_window = self.gen.n_ctx
        self.eos_ids = {i for i in (self.gen.eos_id, self.tokenizer.eos_token_id) if i is not None}

    def generate(self, rows, params, adapter: str | None) -> None:
        for row in rows:
            row.decoder = RowDecoder(row, self.tokenizer, self.eos_ids)
        for row in rows:
            with self.gen._lock:
                self.gen.llm.reset()
                if params.seed is not None:
                    self.gen.llm.set_seed(params.seed)
                tokens = self.gen.llm.generate(
                    row.prompt_ids, temp=params.temperature, top_p=params.top_p, top_k=0, min_p=0.0,
                    repeat_penalty=params.repetition_penalty,
                )
                try:
                    for token in tokens:
                        if row.decoder.push(int(token)):
                            break
                finally:
                    tokens.close()
            row.decoder.finish("length")
