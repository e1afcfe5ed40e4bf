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

# ServeSettings field -> its flag, where the flag is not `--field-name`; every field is a flag (tests check it),
# its default and help come from ServeSettings itself, so the CLI and the settings cannot drift apart.
FLAG_NAMES = {"adapters": "--adapter", "cors_origins": "--cors-origin", "safety": "--no-safety",
              "request_timeout_s": "--request-timeout", "read_timeout_s": "--read-timeout"}
CHOICES = {"dtype": ["auto", "float32", "bfloat16"]}
METAVARS = {"adapters": "NAME=RUN", "cors_origins": "ORIGIN", "safety_policy": "PATH", "support_index": "PATH",
            "studio_db": "PATH"}


def flag_for(name: str) -> str:
    """The command-line flag of a ServeSettings field."""
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per ServeSettings field: default from the dataclass, help from the field's docstring."""
    import dataclasses
    import typing

    from weaver.config import BACKEND_NAMES
    from weaver.serve.settings import ServeSettings, field_docs

    defaults, docs = ServeSettings(), field_docs(ServeSettings)
    hints = typing.get_type_hints(ServeSettings)
    for f in dataclasses.fields(ServeSettings):
        kw: dict = {"dest": f.name, "help": docs.get(f.name, "")}
        if f.name in METAVARS:
            kw["metavar"] = METAVARS[f.name]
        default, hint = getattr(defaults, f.name), hints[f.name]
        if isinstance(default, bool):  # a switch: --log-prompts turns on, --no-safety turns off
            kw.update(action="store_false" if default else "store_true", default=default)
        elif isinstance(default, (list, dict)):
            kw.update(action="append", default=[])
        else:
            base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
            kw.update(type=base if base in (int, float) else str, default=default)
            if f.name == "backend":
                kw["choices"] = list(BACKEND_NAMES)
            elif f.name in CHOICES:
                kw["choices"] = CHOICES[f.name]
            else:
                kw.setdefault("metavar", flag_for(f.name)[2:].upper().replace("-", "_"))
        p.add_argument(flag_for(f.name), **kw)


def settings_from_args(args: argparse.Namespace):
    """The ServeSettings the parsed flags describe.

    Raises:
        ConfigError: a bad --adapter or a value ServeSettings refuses.
    """
    import dataclasses

    from weaver.serve.settings import ServeSettings

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServeSettings)}
    values["adapters"] = parse_adapters(values["adapters"])
    return ServeSettings(**values)


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

    settings = settings_from_args(args)
    backend = make_backend(settings)
    backend.plan()
    if args.log_prompts:
        logging.getLogger("weaver.serve").setLevel(logging.INFO)
    print(f"serving {', '.join(backend.model_ids)} on http://{settings.host}:{settings.port}/ (loading the model...)")
    uvicorn.run(create_app(settings, backend), **uvicorn_options(settings))
    return 0
