"""The llama.cpp backend, on the xllamacpp wheel: llama.cpp's own server loop in this process, decoding rows.

    backend = LlamaCppBackend.from_gguf("model.gguf")          # a GGUF file (eval, the CLI: see load_generator)
    backend = LlamaCppBackend(settings); backend.plan(); backend.load()   # the server: a spec, --adapter runs
    backend.generate(rows, BatchParams(temperature=0.0), adapter="news")

llama.cpp comes from the `xllamacpp` binary wheel (installed by `make install`): its `Server` is llama.cpp's
llama-server in this process, with parallel slots (continuous batching), so the rows of one batch and
concurrent server requests are decoded together. A spec may be a .gguf file (used as is), a catalog name
(its embedded GGUF, the same weights transformers loads), or an HF folder / tuned run, exported once with
`weaver.models.export.export_gguf` into `$WEAVER_HOME/gguf-exports/` (keyed by the weights' content hash
and the quantisation). LoRA runs served with --adapter are GGUF LoRA files (weaver.models.gguf_lora), loaded
once and applied per request.
Prompts are tokenised by the GGUF's own tokenizer with special tokens (`<|im_start|>`) parsed and no BOS
added, and sent as token ids (a string prompt would get a BOS from llama-server). Each row streams: the text
pieces llama.cpp decodes go to the row's RowDecoder (stop strings, limits, cancel), and a finished row ends its
request. The repetition penalty covers the whole context (prompt and reply), as transformers' does (the
transformers backend's penalty also skips left padding, which llama.cpp never has). llama-server also opens a
loopback HTTP listener; it is given a random API key (so no other local client can use it) and serves only
the tokenizer to this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
from weaver.files import atomic_write_text, sha256_file, weaver_home
from weaver.generate.rows import Backend, BatchParams, Row, RowDecoder, base_id, resolve_adapter, run_data_config
from weaver.models.catalog import find_entry
from weaver.models.export import QUANTS, _require_llama_cpp, export_gguf
from weaver.models.gguf_lora import is_plain_lora
from weaver.models.loading import _assemble_gguf, resolve

log = logging.getLogger(__name__)


def busy_cores_elsewhere(window_s: float = 0.25) -> float:
    """How many cores other processes keep busy now: the machine's busy CPU time over a short window (/proc/stat)
    less this process's own (/proc/self/stat). This process's own recent work (a tuning run that just ended) is
    not counted, as the load average would count it. Falls back to the 1-minute load average without /proc."""
    def snapshot() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            cpu = [int(v) for v in fh.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        with open("/proc/self/stat") as fh:
            own = fh.read().rsplit(")", 1)[1].split()
        return sum(cpu) - cpu[3] - cpu[4], int(own[11]) + int(own[12])  # busy ticks; own utime + stime

    try:
        busy0, own0 = snapshot()
        t0 = time.monotonic()
        time.sleep(window_s)
        busy1, own1 = snapshot()
        elapsed = time.monotonic() - t0
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]
    return max(0.0, ((busy1 - busy0) - (own1 - own0)) / os.sysconf("SC_CLK_TCK") / elapsed)


def choose_threads() -> int:
    """llama.cpp threads when none are given: the cores that other processes leave free now, at least 1.

    Measured here (shared/PEERS.md, docs/EXPORT.md; SmolLM2 Q4_1): on 2 quiet cores 2 threads decode 141 tok/s vs
    91 for one (62 vs 39 after a 313-token prompt); on 2 cores that other jobs load (load average 4-7) 2 threads
    fall to 1-25 tok/s (ggml's spinning thread pool collides with the other work) while 1 thread keeps 15-109.
    So: the usable cores minus the cores busy elsewhere, rounded (2 cores: 2 threads while under half a core is
    busy elsewhere, else 1).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, int(cores - busy_cores_elsewhere() + 0.5)))


class LlamaCppBackend(Backend):
    """Rows decoded by llama.cpp (xllamacpp) in `n_parallel` slots; thread-safe."""

    name = "llamacpp"
    quant = "q8_0"
    """The GGUF export a served HF folder or run is decoded from."""

    @classmethod
    def from_gguf(cls, model_path: str | os.PathLike, tokenizer_spec: str | os.PathLike | None = None,
                  n_ctx: int = 4096, n_threads: int | None = None, n_parallel: int = 4,
                  loras: dict[str, Path] | None = None) -> LlamaCppBackend:
        """A backend on one GGUF file (no plan/load), with an HF tokenizer for rendering prompts when given.

        Raises:
            WeaverError: xllamacpp missing, no such file, or a GGUF llama.cpp cannot load.
        """
        self = cls(None)
        self._start(Path(model_path), n_ctx, n_threads, n_parallel, loras or {})
        if tokenizer_spec is not None:
            from weaver.models.loading import load_tokenizer

            self.tokenizer = load_tokenizer(tokenizer_spec)
        return self

    def _start(self, path: Path, n_ctx: int, n_threads: int | None, n_parallel: int, loras: dict[str, Path]) -> None:
        xlc = _require_llama_cpp("--backend llamacpp")
        if not path.is_file():
            raise WeaverError(f"GGUF file {path} does not exist")
        eos_id, trained = _gguf_header(path)
        n_ctx = min(n_ctx, trained or n_ctx)  # llama.cpp caps a request at the trained window: say so up front
        params = xlc.CommonParams()
        params.model.path = str(path)
        # The slots share one KV buffer (kv_unified): sized for a whole window per slot, so rows decoded together
        # always fit (a buffer of one window failed with "Context size has been exceeded" as soon as the rows in
        # flight held more than one window between them). Each request is still held to n_ctx (request()).
        params.n_ctx = n_ctx * n_parallel
        params.n_parallel = n_parallel
        params.kv_unified = True
        params.warmup = False
        params.verbosity = 1  # errors only
        params.cache_ram_mib = 0  # no extra host-memory prompt cache (each slot still reuses its own prefix)
        params.ui = False
        params.endpoint_metrics = True  # handle_metrics(): llama.cpp's own token counters (tests, benchmarks)
        params.hostnames = ["127.0.0.1"]
        self._key = secrets.token_urlsafe(24)
        params.api_keys = [self._key]
        if not n_threads:
            n_threads = choose_threads()
            log.info("llama.cpp threads: %d (cores free of other work now; --threads sets it)", n_threads)
        for cpu in (params.cpuparams, params.cpuparams_batch):
            cpu.n_threads = n_threads
        self.n_threads = n_threads
        # GGUF LoRA files (weaver.models.gguf_lora), loaded once, off unless a request names one (`adapter=`)
        self.loras = list(loras)
        params.lora_adapters = [xlc.CommonAdapterLoraInfo(str(f), 1.0) for f in loras.values()]
        params.lora_init_without_apply = True
        try:
            self.server = xlc.Server(params)
        except RuntimeError as exc:
            raise WeaverError(f"llama.cpp cannot load {path}: {exc}") from None
        self.model_path, self.n_ctx, self.n_parallel = path, n_ctx, n_parallel
        self.context_window = n_ctx
        self.eos_id = eos_id
        self.eos_ids = {self.eos_id} if self.eos_id is not None else set()

    def close(self) -> None:
        """Stop llama.cpp's server loop and free the model (also happens when the backend is garbage-collected)."""
        self.server = None

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a rendered prompt by the GGUF's tokenizer (special tokens parsed, no BOS added)."""
        body = json.dumps({"content": prompt, "add_special": False, "parse_special": True}).encode()
        req = urllib.request.Request(f"{self.server.listening_address}/tokenize", data=body,
                                     headers={"Authorization": f"Bearer {self._key}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as reply:
            return json.loads(reply.read())["tokens"]

    def request(self, ids: list[int], params, seed: int | None, max_tokens: int, adapter: str | None = None) -> dict:
        """The llama-server completion request for a prompt: our sampling settings spelled out, none left to
        llama.cpp's defaults (top_k 40, min_p 0.05, a 64-token penalty window).

        Args:
            params: a BatchParams or SamplingParams (temperature, top_p, repetition_penalty, num_beams).
        Raises:
            WeaverError: beam search requested, a prompt that fills the context window, an unknown adapter.
        """
        if params.num_beams != 1:
            raise WeaverError("--backend llamacpp has no beam search: set num_beams to 1 or use --backend transformers")
        if len(ids) >= self.n_ctx:
            raise WeaverError(f"the prompt has {len(ids)} tokens, more than the context window ({self.n_ctx})")
        body = {
            "prompt": ids,
            "max_tokens": max(1, min(max_tokens, self.n_ctx - len(ids))),
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": 0,  # 0 = whole vocabulary, as the transformers backend samples
            "min_p": 0.0,
            "repeat_penalty": params.repetition_penalty,
            "repeat_last_n": self.n_ctx,  # the whole context, prompt included, as transformers' penalty
            "logprobs": 1,  # each chunk names its token ids: the row's token count, and EOS told from text
        }
        if seed is not None:
            body["seed"] = seed
        if self.loras:
            if adapter is not None and adapter not in self.loras:
                raise WeaverError(f"adapter {adapter!r} is not loaded; loaded: {', '.join(self.loras)}")
            body["lora"] = [{"id": i, "scale": float(name == adapter)} for i, name in enumerate(self.loras)]
        elif adapter is not None:
            raise WeaverError(f"adapter {adapter!r} is not loaded: this llama.cpp backend serves no LoRA files")
        return body

    def generate(self, rows: list[Row], params: BatchParams, adapter: str | None = None) -> None:
        """Decode the rows in parallel slots (row i samples with seed + i); every row ends with finish_reason set.

        Raises:
            WeaverError: a setting llama.cpp cannot honour (beam search), a prompt too long, a llama.cpp error.
        """
        bodies = [self.request(r.prompt_ids, params, None if params.seed is None else params.seed + i,
                               r.max_new_tokens, adapter) for i, r in enumerate(rows)]
        for row in rows:
            RowDecoder(row, self.tokenizer, self.eos_ids)
        t0 = time.perf_counter()
        if len(rows) == 1:
            self._run_row(rows[0], bodies[0])
        else:
            with ThreadPoolExecutor(max_workers=self.n_parallel) as pool:
                for future in [pool.submit(self._run_row, row, body) for row, body in zip(rows, bodies)]:
                    future.result()
        self.count(rows, time.perf_counter() - t0)

    def _run_row(self, row: Row, body: dict) -> None:
        """Stream one row's text pieces into its RowDecoder, which applies stop strings and limits."""
        reason = "length"
        # a finished row (stop string, token limit, cancel, deadline) answers check() with True: its request ends
        for chunk in self.stream_chunks(body, row.decoder.check):
            choice = chunk["choices"][0]
            tokens = (choice.get("logprobs") or {}).get("content") or []
            n = sum(1 for t in tokens if int(t["id"]) not in self.eos_ids)
            if choice.get("text") or n:
                row.decoder.push_text(choice.get("text") or "", n)
            if choice.get("finish_reason") == "stop":
                reason = "stop"
        row.decoder.finish(reason)

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

    def plan(self) -> None:
        """Resolve settings.model and settings.adapters: the GGUF to serve, the LoRA runs, the model ids.

        A plain-LoRA run, or any run with --adapter, serves the base model's GGUF and every LoRA run (the --model
        run too) as a GGUF LoRA file applied per request: the run and its base under two ids, as on transformers.
        Another mergeable run (IA3, AdaLoRA, freeze, full) is served merged (its GGUF export) under the run's id.
        """
        _require_llama_cpp("--backend llamacpp")
        resolved = resolve(self.settings.model)
        self.lora_runs: dict[str, str] = {}
        runs = dict(self.settings.adapters)
        if resolved.adapter_dir is not None and (runs or is_plain_lora(resolved.adapter_dir)):
            runs = {Path(resolved.run_dir or resolved.adapter_dir).expanduser().resolve().name: self.settings.model,
                    **runs}
        for name, spec in runs.items():
            res = resolve_adapter(name, spec, resolved, self.settings.model)
            if name in self.lora_runs:
                raise ConfigError(f"model id {name!r} is given twice; choose distinct names with --adapter NAME=RUN")
            self.lora_runs[name] = spec
            data_cfg = run_data_config(res.run_dir)
            if data_cfg is not None:
                self.data_configs[name] = data_cfg
        if resolved.adapter_dir is not None and not runs:
            model_id = Path(resolved.run_dir or resolved.adapter_dir).expanduser().resolve().name
            data_cfg = run_data_config(resolved.run_dir)
            if data_cfg is not None:
                self.data_configs[model_id] = data_cfg
        elif resolved.adapter_dir is None and resolved.run_dir is not None:
            # a freeze/full run: its own model under its own id, as on transformers
            model_id = Path(resolved.run_dir).expanduser().resolve().name
        else:
            model_id = base_id(resolved.base_spec or self.settings.model)
        if model_id in self.lora_runs:
            raise ConfigError(f"model id {model_id!r} is used by both the base model and an adapter; "
                              "rename the adapter")
        self.model_ids = {**{name: name for name in self.lora_runs}, model_id: None}
        self.default_model = next(iter(self.model_ids))
        self.base_spec = (resolved.base_spec or self.settings.model) if self.lora_runs else self.settings.model

    def load(self) -> None:
        """Export (once, cached) and load the GGUF and the LoRA files; load the HF tokenizer that renders prompts."""
        from weaver.models.loading import load_tokenizer

        if not self.model_ids:
            self.plan()
        loras = {name: _lora_file(spec) for name, spec in self.lora_runs.items()}
        self._start(gguf_for(self.base_spec, self.quant), 4096, self.settings.threads,
                    max(1, self.settings.max_batch), loras)
        self.tokenizer = load_tokenizer(self.settings.model)


def _raise_for(reply: dict) -> None:
    """A llama-server error reply as one WeaverError sentence."""
    if "error" in reply:
        err = reply["error"]
        raise WeaverError(f"llama.cpp refused the request: {err.get('message', err) if isinstance(err, dict) else err}")


def _gguf_header(path: Path) -> tuple[int | None, int | None]:
    """`tokenizer.ggml.eos_token_id` and `<arch>.context_length` (the trained window) of a GGUF file's header."""
    import gguf

    fields = gguf.GGUFReader(path).fields
    arch = fields.get("general.architecture")
    eos = fields.get("tokenizer.ggml.eos_token_id")
    ctx = fields.get(f"{arch.contents()}.context_length") if arch is not None else None
    return (None if eos is None else int(eos.contents())), (None if ctx is None else int(ctx.contents()))


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
    return _cached(target, lambda: export_gguf(spec, target, quant), {"source": str(spec), "quant": quant})


def _cached(target: Path, export: Callable[[], object], facts: dict) -> Path:
    """target, exported once: its SHA-256 is recorded beside it and checked on every reuse, so a damaged or
    half-replaced cache file is exported again instead of loaded (the conversion cache's rule)."""
    record = target.with_suffix(".json")
    if target.is_file() and record.is_file():
        try:
            if json.loads(record.read_text()).get("sha256") == sha256_file(target):
                return target
        except (ValueError, OSError):
            pass
    target.parent.mkdir(parents=True, exist_ok=True)
    export()  # written under a temporary name and renamed
    atomic_write_text(record, json.dumps({**facts, "sha256": sha256_file(target)}) + "\n")
    return target


def _lora_file(spec: str) -> Path:
    """A run's LoRA as a GGUF LoRA file, exported once into `$WEAVER_HOME/gguf-exports/` (keyed by its hash)."""
    from weaver.models.gguf_lora import export_lora_gguf

    adapter_dir = resolve(spec).adapter_dir
    digest = hashlib.sha256(b"lora")
    for f in sorted(Path(adapter_dir).iterdir()):
        if f.is_file() and f.suffix in (".safetensors", ".json"):
            digest.update(f.name.encode() + sha256_file(f).encode())
    target = weaver_home() / "gguf-exports" / f"{Path(str(spec)).name}-{digest.hexdigest()[:16]}-lora.gguf"
    return _cached(target, lambda: export_lora_gguf(spec, target), {"source": str(spec), "lora": True})
