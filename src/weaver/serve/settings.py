"""Server settings: what `weaver serve` was asked to serve and the limits it enforces.

    settings = ServeSettings(model="runs/headline", adapters={"summary": "runs/summary"}, api_key="s3cret")
    app = create_app(settings)
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass, field

from weaver.config import DEFAULT_BACKEND
from weaver.errors import ConfigError


@dataclass
class ServeSettings:
    """Everything `create_app` needs; the CLI flags map one to one onto these fields."""

    model: str = "smollm2-135m-instruct"
    """Base model spec or a tuned run (a run serves its adapter and its base under two model ids)."""
    adapters: dict[str, str] = field(default_factory=dict)
    """Extra adapters on the same base: model id -> run directory (--adapter NAME=RUN)."""
    host: str = "127.0.0.1"
    """Interface to bind; 127.0.0.1 keeps the server private to this machine."""
    port: int = 8000
    """TCP port."""
    api_key: str | None = None
    """When set, every /v1 request needs `Authorization: Bearer <key>` (/health and the page stay open)."""
    backend: str = DEFAULT_BACKEND
    """Decoding backend: auto (the default) | transformers | llamacpp (auto: llama.cpp on a CPU where it can serve
    the model and its adapters, else transformers; see weaver.generate.engine.choose_backend)."""
    dtype: str = "auto"
    """Weights dtype: auto | float32 | bfloat16."""
    threads: int | None = None
    """CPU threads for generation (None: llama.cpp takes the cores no other work keeps busy when it starts,
    weaver.generate.llamacpp.choose_threads; transformers keeps torch's default); 1 is much faster on a CPU
    shared with other jobs."""
    max_batch: int = 8
    """Most sequences (requests x n) generated together in one forward pass."""
    max_queue: int = 64
    """Most requests waiting for a batch; beyond it the server answers 429."""
    batch_wait_ms: float = 10.0
    """How long the scheduler waits for more requests before starting a batch that is not full."""
    request_timeout_s: float = 300.0
    """A request (queueing + generation) is cut off after this many seconds."""
    max_body_bytes: int = 1_000_000
    """Largest accepted request body; bigger bodies get 413."""
    read_timeout_s: float = 20.0
    """Seconds a client has to send a request's headers, and again its body; a slower one gets 408 and its
    connection is closed (a half-sent request never holds a connection open)."""
    max_n: int = 8
    """Largest `n` (candidates per prompt) a request may ask for."""
    default_max_tokens: int = 256
    """max_tokens when a chat/completions request gives none (tasks use their own default)."""
    repetition_penalty: float = 1.1
    """Default repetition penalty (requests may override it with `repetition_penalty`)."""
    cors_origins: list[str] = field(default_factory=list)
    """Origins allowed to call the API from a browser (empty = CORS closed)."""
    log_prompts: bool = False
    """Log prompt texts (off by default: prompts may be private)."""
    safety: bool = True
    """Apply the safety policy (weaver.safety) to every request text and reply (--no-safety turns it off)."""
    safety_policy: str | None = None
    """Safety policy YAML (--safety-policy); None = $WEAVER_SAFETY, else the packaged policy."""
    support_index: str | None = None
    """Knowledge-base index for POST /v1/weaver/support (--support-index; None = route not served)."""
    studio_db: str | None = None
    """The studio's SQLite store of requests, drafts and writers' choices (--studio-db; None =
    $WEAVER_HOME/studio.sqlite, "none" = keep nothing)."""

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.max_queue < 1:
            raise ConfigError(f"--max-queue must be at least 1, got {self.max_queue}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port must be between 1 and 65535, got {self.port}")
        if self.request_timeout_s <= 0:
            raise ConfigError(f"--request-timeout must be positive, got {self.request_timeout_s}")
        if not self.read_timeout_s > 0:
            raise ConfigError(f"--read-timeout must be positive, got {self.read_timeout_s}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("--api-key is empty: pass a non-empty key or leave the flag out")
        for name in self.adapters:
            if not name or any(c.isspace() for c in name):
                raise ConfigError(f"--adapter name {name!r} must be a non-empty word (NAME=RUN)")


def field_docs(cls) -> dict[str, str]:
    """Each field's docstring (the string literal under it) of a dataclass, read from its source: `--help` texts."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs
