"""A llama.cpp generation backend with the interface of `weaver.generate.engine.Generator`, on xllamacpp.

    gen, tok = load_llamacpp("runs/dialogsum")           # exports the merged run to GGUF once (cached)
    outs = gen.generate([prompt], SamplingParams(max_new_tokens=48))
    for piece in gen.stream(prompt, SamplingParams()):
        print(piece, end="")

llama.cpp comes from the `xllamacpp` binary wheel (installed by `make install`): its `Server` is llama.cpp's
own llama-server in this process, with parallel slots (continuous batching), so the prompts of one
`generate` call and concurrent server requests are decoded together. A spec may be a .gguf file (used as
is), a catalog name (its embedded GGUF, the same weights transformers loads), or an HF folder / tuned run,
exported once with `weaver.models.export.export_gguf` into `$WEAVER_HOME/gguf-exports/` (keyed by the
weights' content hash and the quantisation).
Prompts are the same rendered strings the transformers engine takes. They are tokenised by the GGUF's own
tokenizer with special tokens (`<|im_start|>`) parsed and no BOS added, and sent as token ids (a string
prompt would get a BOS from llama-server). The repetition penalty covers the whole context (prompt and
reply), as transformers' does. llama-server also opens a loopback HTTP listener; it is given a random API
key (so no other local client can use it) and serves only the tokenizer to this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import secrets
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from weaver.errors import ConfigError, WeaverError
from weaver.files import sha256_file, weaver_home
from weaver.generate.engine import Completion, SamplingParams
from weaver.models.catalog import find_entry
from weaver.models.export import QUANTS, _require_llama_cpp, export_gguf
from weaver.models.loading import _assemble_gguf, resolve
from weaver.serve.backend import Backend, RowDecoder, _base_id, _run_data_config, resolve_adapter

# Threads per decode. Measured (SmolLM2-135M Q4_1, 32-token greedy replies, 2 cores shared with other jobs at
# load average ~6): 1 thread 14.8-15.8 tok/s, 2 threads 0.8-4.4 tok/s (ggml's spinning thread pool collides with
# the other jobs; polling off did not help). On a quiet machine 2 threads were faster (~141 tok/s vs ~90-120),
# so pass n_threads=2 (`--threads 2`) there.
DEFAULT_THREADS = 1


class LlamaCppGenerator:
    """Generation on a GGUF model through llama.cpp's server (xllamacpp): thread-safe, `n_parallel` slots."""

    def __init__(self, model_path: str | os.PathLike, n_ctx: int = 4096, n_threads: int | None = None,
                 n_parallel: int = 4, loras: dict[str, Path] | None = None):
        xlc = _require_llama_cpp("--backend llamacpp")
        path = Path(model_path)
        if not path.is_file():
            raise WeaverError(f"GGUF file {path} does not exist")
        params = xlc.CommonParams()
        params.model.path = str(path)
        params.n_ctx = n_ctx
        params.n_parallel = n_parallel
        params.kv_unified = True  # every slot may use the whole context (they share one KV buffer)
        params.warmup = False
        params.verbosity = 1  # errors only
        params.cache_ram_mib = 0  # no extra host-memory prompt cache (each slot still reuses its own prefix)
        params.ui = False
        params.endpoint_metrics = True  # handle_metrics(): llama.cpp's own token counters (tests, benchmarks)
        params.hostnames = ["127.0.0.1"]
        self._key = secrets.token_urlsafe(24)
        params.api_keys = [self._key]
        for cpu in (params.cpuparams, params.cpuparams_batch):
            cpu.n_threads = n_threads or DEFAULT_THREADS
        # GGUF LoRA files (weaver.models.gguf_lora), loaded once, off unless a request names one (`adapter=`)
        self.loras = list(loras or {})
        params.lora_adapters = [xlc.CommonAdapterLoraInfo(str(f), 1.0) for f in (loras or {}).values()]
        params.lora_init_without_apply = True
        try:
            self.server = xlc.Server(params)
        except RuntimeError as exc:
            raise WeaverError(f"llama.cpp cannot load {path}: {exc}") from None
        self.model_path = path
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.eos_id = _gguf_eos_id(path)
        self._stats_lock = threading.Lock()
        self.stats = {"prompts": 0, "new_tokens": 0, "seconds": 0.0}

    def close(self) -> None:
        """Stop llama.cpp's server loop and free the model (also happens when the generator is garbage-collected)."""
        self.server = None

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a rendered prompt by the GGUF's tokenizer (special tokens parsed, no BOS added)."""
        body = json.dumps({"content": prompt, "add_special": False, "parse_special": True}).encode()
        req = urllib.request.Request(f"{self.server.listening_address}/tokenize", data=body,
                                     headers={"Authorization": f"Bearer {self._key}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as reply:
            return json.loads(reply.read())["tokens"]

    def request(self, ids: list[int], p: SamplingParams, seed: int | None, max_tokens: int | None = None,
                adapter: str | None = None) -> dict:
        """The llama-server completion request for a prompt: our sampling settings spelled out, none left to
        llama.cpp's defaults (top_k 40, min_p 0.05, a 64-token penalty window).

        Raises:
            WeaverError: beam search requested or a prompt that fills the context window.
        """
        if p.num_beams != 1:
            raise WeaverError("--backend llamacpp has no beam search: set num_beams to 1 or use --backend transformers")
        if len(ids) >= self.n_ctx:
            raise WeaverError(f"the prompt has {len(ids)} tokens, more than the context window ({self.n_ctx})")
        body = {
            "prompt": ids,
            "max_tokens": max(1, min(max_tokens or p.max_new_tokens, self.n_ctx - len(ids))),
            "temperature": p.temperature,
            "top_p": p.top_p,
            "top_k": 0,  # 0 = whole vocabulary, as the transformers engine samples
            "min_p": 0.0,
            "repeat_penalty": p.repetition_penalty,
            "repeat_last_n": self.n_ctx,  # the whole context, prompt included, as transformers' penalty
        }
        if p.stop:
            body["stop"] = [s for s in p.stop if s]
        if seed is not None:
            body["seed"] = seed
        if self.loras:
            if adapter is not None and adapter not in self.loras:
                raise WeaverError(f"adapter {adapter!r} is not loaded; loaded: {', '.join(self.loras)}")
            body["lora"] = [{"id": i, "scale": float(name == adapter)} for i, name in enumerate(self.loras)]
        return body

    def generate(
        self, prompts: list[str], params: SamplingParams, progress: Callable[[int], None] | None = None
    ) -> list[list[Completion]]:
        """Generate `params.n` completions for each prompt, in input order (decoded together in llama.cpp's slots).

        Args:
            prompts: rendered prompt strings.
            params: decoding settings (num_beams must be 1).
            progress: called with 1 after each prompt.
        Returns:
            For each prompt, a list of n Completions.
        Raises:
            WeaverError: beam search requested, a prompt longer than the context window, or a llama.cpp error.
        """
        encoded = [self.encode(prompt) for prompt in prompts]
        jobs = [(i, self.request(ids, params, None if params.seed is None else params.seed + k))
                for i, ids in enumerate(encoded) for k in range(params.n)]
        t0 = time.perf_counter()
        results: list[list[Completion]] = [[] for _ in prompts]
        with ThreadPoolExecutor(max_workers=self.n_parallel) as pool:
            futures = [pool.submit(self._complete, len(encoded[i]), body) for i, body in jobs]
            for (i, _), future in zip(jobs, futures):
                results[i].append(future.result())
                if progress and len(results[i]) == params.n:
                    progress(1)
        with self._stats_lock:
            self.stats["seconds"] += time.perf_counter() - t0
        return results

    def _complete(self, n_prompt: int, body: dict) -> Completion:
        if body.get("stop"):  # the reply's token ids tell an end-of-generation token from a stop string
            body = {**body, "logprobs": 1}
        out = self.server.handle_completions(body)
        _raise_for(out)
        choice, usage = out["choices"][0], out["usage"]
        n_new = int(usage["completion_tokens"])
        if choice["finish_reason"] == "stop":
            # llama.cpp counts the end-of-generation token (it has no bytes), the transformers engine does not;
            # without stop strings a "stop" is always that token
            content = (choice.get("logprobs") or {}).get("content") or [{"bytes": []}]
            n_new -= bool(n_new and not content[-1]["bytes"])
        with self._stats_lock:
            self.stats["prompts"] += 1
            self.stats["new_tokens"] += n_new
        reason = "stop" if choice["finish_reason"] == "stop" or n_new < body["max_tokens"] else "length"
        return Completion(choice["text"].strip(), n_prompt, n_new, reason)

    def stream(self, prompt: str, params: SamplingParams, cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield the reply to one prompt piece by piece as it is generated.

        Args:
            prompt: rendered prompt string.
            params: decoding settings (n is ignored: one stream).
            cancel: set it to stop generation early (e.g. a client disconnected).
        """
        body = self.request(self.encode(prompt), params, params.seed)
        for chunk in self.stream_chunks(body, lambda: cancel is not None and cancel.is_set()):
            piece = chunk["choices"][0]["text"]
            if piece:
                yield piece

    def stream_chunks(self, body: dict, stop: Callable[[], bool]) -> Iterator[dict]:
        """Run one streaming llama-server request in a worker thread and yield its chunks as they arrive.

        Args:
            body: a completion request (see `request`); "stream" is added.
            stop: polled before each chunk; True ends generation (llama.cpp stops decoding the slot).
        Raises:
            WeaverError: llama.cpp answered with an error.
        """
        chunks: queue.Queue = queue.Queue()
        done, left = object(), threading.Event()

        def on_chunk(chunk: dict) -> bool:
            if left.is_set() or stop():
                return True
            chunks.put(chunk)
            return "error" in chunk

        def run() -> None:
            try:
                self.server.handle_completions({**body, "stream": True}, on_chunk)
            finally:
                chunks.put(done)

        threading.Thread(target=run, name="llamacpp-stream", daemon=True).start()
        try:
            while (chunk := chunks.get()) is not done:
                _raise_for(chunk)
                yield chunk
                if stop():
                    break
        finally:
            left.set()  # the worker's next callback ends the request (the consumer stopped or left early)


def _raise_for(reply: dict) -> None:
    """A llama-server error reply as one WeaverError sentence."""
    if "error" in reply:
        err = reply["error"]
        raise WeaverError(f"llama.cpp refused the request: {err.get('message', err) if isinstance(err, dict) else err}")


def _gguf_eos_id(path: Path) -> int | None:
    """`tokenizer.ggml.eos_token_id` of a GGUF file (read from its header)."""
    import gguf

    field = gguf.GGUFReader(path).fields.get("tokenizer.ggml.eos_token_id")
    return None if field is None else int(field.contents())
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
        WeaverError: xllamacpp missing, unknown spec, or a GGUF llama.cpp cannot load.
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
        WeaverError: unknown backend, int8 with llama.cpp, or xllamacpp missing.
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

    Without --adapter a tuned run is served merged (its GGUF export). With --adapter, the base model's GGUF is
    served and every LoRA run (the --model run too) is a GGUF LoRA file applied per request, as the
    transformers backend does. The rows of a batch are decoded together in llama.cpp's parallel slots.
    """

    quant = "q8_0"

    def plan(self) -> None:
        _require_llama_cpp("--backend llamacpp")
        resolved = resolve(self.settings.model)
        self.lora_runs: dict[str, str] = {}
        runs = dict(self.settings.adapters)
        if runs and resolved.adapter_dir is not None:
            runs = {Path(resolved.run_dir or resolved.adapter_dir).expanduser().resolve().name: self.settings.model,
                    **runs}
        for name, spec in runs.items():
            res = resolve_adapter(name, spec, resolved, self.settings.model)
            if name in self.lora_runs:
                raise ConfigError(f"model id {name!r} is given twice; choose distinct names with --adapter NAME=RUN")
            self.lora_runs[name] = spec
            data_cfg = _run_data_config(res.run_dir)
            if data_cfg is not None:
                self.data_configs[name] = data_cfg
        if resolved.adapter_dir is not None and not runs:
            model_id = Path(resolved.run_dir or resolved.adapter_dir).expanduser().resolve().name
            data_cfg = _run_data_config(resolved.run_dir)
            if data_cfg is not None:
                self.data_configs[model_id] = data_cfg
        else:
            model_id = _base_id(resolved.base_spec or self.settings.model)
        if model_id in self.lora_runs:
            raise ConfigError(f"model id {model_id!r} is used by both the base model and an adapter; "
                              "rename the adapter")
        self.model_ids = {**{name: name for name in self.lora_runs}, model_id: None}
        self.default_model = next(iter(self.model_ids))
        self.base_spec = (resolved.base_spec or self.settings.model) if self.lora_runs else self.settings.model

    def load(self) -> None:
        from weaver.models.loading import load_tokenizer

        if not self.model_ids:
            self.plan()
        loras = {name: _lora_file(spec) for name, spec in self.lora_runs.items()}
        self.gen = LlamaCppGenerator(gguf_for(self.base_spec, self.quant), n_ctx=4096, n_threads=self.settings.threads,
                                     n_parallel=max(1, self.settings.max_batch), loras=loras)
        self.tokenizer = load_tokenizer(self.settings.model)
        self.context_window = self.gen.n_ctx
        self.eos_ids = {i for i in (self.gen.eos_id, self.tokenizer.eos_token_id) if i is not None}

    def generate(self, rows, params, adapter: str | None) -> None:
        sampling = SamplingParams(temperature=params.temperature, top_p=params.top_p,
                                  repetition_penalty=params.repetition_penalty)
        for row in rows:
            row.decoder = RowDecoder(row, self.tokenizer, self.eos_ids)
        seeds = [None if params.seed is None else params.seed + i for i in range(len(rows))]
        with ThreadPoolExecutor(max_workers=self.gen.n_parallel) as pool:
            for future in [pool.submit(self._run_row, row, sampling, seed, adapter) for row, seed in zip(rows, seeds)]:
                future.result()

    def _run_row(self, row, sampling: SamplingParams, seed: int | None, adapter: str | None) -> None:
        """Stream one row's token ids (logprobs carry them) into its RowDecoder, which applies stop strings."""
        body = {**self.gen.request(row.prompt_ids, sampling, seed, row.max_new_tokens, adapter), "logprobs": 1}
        reason = "length"
        # a finished row (stop string, token limit, EOS, cancel, deadline) answers check() with True: generation ends
        for chunk in self.gen.stream_chunks(body, row.decoder.check):
            choice = chunk["choices"][0]
            for token in (choice.get("logprobs") or {}).get("content", []):
                row.decoder.push(int(token["id"]))
            if choice.get("finish_reason") == "stop":
                reason = "stop"
        row.decoder.finish(reason)


def _lora_file(spec: str) -> Path:
    """A run's LoRA as a GGUF LoRA file, exported once into `$WEAVER_HOME/gguf-exports/` (keyed by its hash)."""
    from weaver.models.gguf_lora import export_lora_gguf

    adapter_dir = resolve(spec).adapter_dir
    digest = hashlib.sha256(b"lora")
    for f in sorted(Path(adapter_dir).iterdir()):
        if f.is_file() and f.suffix in (".safetensors", ".json"):
            digest.update(f.name.encode() + sha256_file(f).encode())
    target = weaver_home() / "gguf-exports" / f"{Path(str(spec)).name}-{digest.hexdigest()[:16]}-lora.gguf"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        export_lora_gguf(spec, target)
    return target
