"""`weaver generate`: one reply from a model, streamed to the terminal.

    weaver generate --model smollm2-135m-instruct --prompt "Write a headline: ..." --max-new-tokens 60

The safety policy (weaver.safety; --safety-policy PATH or $WEAVER_SAFETY, off with --no-safety) checks
the prompt first (blocked: an error with the reason; PII: the redacted prompt is what the model sees) and
the finished reply. A streamed reply is already on the terminal when it is checked and cannot be
un-printed, so a blocked or redacted reply is followed by a notice on stderr; with --no-stream the reply
is held back and the policy's text (redacted, or the refusal) is printed instead.
"""

from __future__ import annotations

import argparse
import sys

from weaver.config import BACKEND_NAMES, DEFAULT_BACKEND
from weaver.errors import WeaverError
from weaver.models.catalog import DEFAULT_MODEL


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="catalog name, HF folder, .gguf file or tuned run")
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--system", default=None, help="optional system message")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=BACKEND_NAMES, default=DEFAULT_BACKEND,
                   help="generation engine (auto: llama.cpp on a CPU where it can run the model, else "
                        "transformers; llamacpp: llama.cpp via xllamacpp; a run is exported to GGUF once)")
    p.add_argument("--quantize", choices=("none", "int8"), default="none", help="int8: dynamic int8 Linear layers")
    p.add_argument("--gguf-quant", choices=("f16", "q8_0", "q4_k_m"), default="q8_0",
                   help="GGUF weights for --backend llamacpp")
    p.add_argument("--no-stream", action="store_true", help="print the reply once finished (after the safety check)")
    p.add_argument("--no-safety", action="store_true", help="do not apply the safety policy to prompt and reply")
    p.add_argument("--safety-policy", default=None, metavar="PATH",
                   help="safety policy YAML (default: $WEAVER_SAFETY, else the packaged policy)")


def run(args: argparse.Namespace) -> int:
    from weaver.data.chat import render_messages
    from weaver.generate.engine import load_generator
    from weaver.generate.sampling import SamplingParams
    from weaver.safety import load_policy

    if not args.prompt.strip():
        raise WeaverError("--prompt is empty: pass the text you want the model to answer")
    if args.max_new_tokens < 1:
        raise WeaverError("--max-new-tokens must be at least 1")
    policy = None if args.no_safety else load_policy(args.safety_policy)
    system, prompt = _gate(policy, args.system, "--system"), _gate(policy, args.prompt, "--prompt")
    gen, tok, _ = load_generator(args.model, args.backend, args.quantize, args.gguf_quant)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
    pieces = []
    for piece in gen.stream(render_messages(tok, messages), params):
        pieces.append(piece)
        if not args.no_stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
    decision = policy.check_output("".join(pieces), app="generate") if policy else None
    if args.no_stream:
        sys.stdout.write(decision.text if decision else "".join(pieces))
    sys.stdout.write("\n")
    if decision is not None and decision.action != "allow" and not args.no_stream:
        print(f"weaver: safety policy: the reply above would be {'blocked' if decision.blocked else 'redacted'} "
              f"({'; '.join(decision.reasons)}); use --no-stream to hold replies back until checked", file=sys.stderr)
    return 0


def _gate(policy, text: str | None, flag: str) -> str | None:
    """The prompt text the model may see (redacted); WeaverError when the policy blocks it."""
    if policy is None or not text:
        return text
    decision = policy.check_prompt(text, app="generate")
    if decision.blocked:
        raise WeaverError(f"{flag} was refused by the safety policy: {decision.text} (--no-safety turns it off)")
    if decision.action == "redact":
        print(f"weaver: safety policy: {flag} {'; '.join(decision.reasons)} before generation", file=sys.stderr)
    return decision.text
