"""`weaver serve`: the OpenAI-compatible API and the writer's web page for a model, a run, or several adapters.

    weaver serve --model runs/headline                                   # the run's adapter and its base
    weaver serve --model smollm2-135m-instruct --adapter news=runs/headline --adapter ads=runs/adcopy
    curl http://127.0.0.1:8000/health

Model specs are checked before the port opens (a typo fails at once); the weights then load in the
background while /health answers 503.
"""

from __future__ import annotations

import argparse
import logging

from weaver.errors import ConfigError
from weaver.models.catalog import DEFAULT_MODEL


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="catalog name, HF folder, .gguf file or tuned run")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=RUN",
                   help="serve another tuned run on the same base under model id NAME (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1 requests")
    p.add_argument("--max-batch", type=int, default=8, help="most sequences generated together")
    p.add_argument("--max-queue", type=int, default=64, help="most waiting requests before answering 429")
    p.add_argument("--request-timeout", type=float, default=300.0, help="seconds per request (queue + generation)")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000, help="largest request body (413 beyond)")
    p.add_argument("--read-timeout", type=float, default=20.0,
                   help="seconds a client has to send a request's headers, and again its body (408 beyond)")
    p.add_argument("--backend", default="transformers", help="model execution backend")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser calls from this origin (repeatable; default: CORS closed)")
    p.add_argument("--log-prompts", action="store_true", help="log prompt texts (off by default)")
    p.add_argument("--no-safety", action="store_true",
                   help="do not apply the safety policy (blocklists, PII redaction) to requests and replies")
    p.add_argument("--safety-policy", default=None, metavar="PATH",
                   help="safety policy YAML (default: $WEAVER_SAFETY, else the packaged policy)")
    p.add_argument("--support-index", default=None, metavar="PATH",
                   help="serve POST /v1/weaver/support from this index (built by `weaver support index`)")
    p.add_argument("--studio-db", default=None, metavar="PATH",
                   help="SQLite file where the page keeps every request, draft, choice and edit, for `weaver "
                        "feedback export` (default: $WEAVER_HOME/studio.sqlite; 'none' keeps nothing)")


def parse_adapters(values: list[str]) -> dict[str, str]:
    """Turn ["news=runs/a", ...] into {"news": "runs/a"}.

    Raises:
        ConfigError: a value without NAME=RUN form or a repeated name.
    """
    out: dict[str, str] = {}
    for value in values:
        name, sep, run = value.partition("=")
        if not sep or not name.strip() or not run.strip():
            raise ConfigError(f"--adapter {value!r} must look like NAME=RUN (e.g. news=runs/headline)")
        if name.strip() in out:
            raise ConfigError(f"--adapter name {name.strip()!r} is given twice")
        out[name.strip()] = run.strip()
    return out


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from weaver.generate.engine import make_backend
    from weaver.serve.app import create_app
    from weaver.serve.protocol import uvicorn_options
    from weaver.serve.settings import ServeSettings

    settings = ServeSettings(
        model=args.model, adapters=parse_adapters(args.adapter), host=args.host, port=args.port,
        api_key=args.api_key, backend=args.backend, dtype=args.dtype, threads=args.threads, max_batch=args.max_batch,
        max_queue=args.max_queue, request_timeout_s=args.request_timeout, max_body_bytes=args.max_body_bytes,
        read_timeout_s=args.read_timeout,
        cors_origins=list(args.cors_origin), log_prompts=args.log_prompts, safety=not args.no_safety,
        safety_policy=args.safety_policy, support_index=args.support_index,
        studio_db=args.studio_db,
    )
    backend = make_backend(settings)
    backend.plan()
    if args.log_prompts:
        logging.getLogger("weaver.serve").setLevel(logging.INFO)
    print(f"serving {', '.join(backend.model_ids)} on http://{settings.host}:{settings.port}/ (loading the model...)")
    uvicorn.run(create_app(settings, backend), **uvicorn_options(settings))
    return 0
