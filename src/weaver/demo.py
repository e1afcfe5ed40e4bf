"""`make demo`: the main job on the embedded default model.

For now it loads SmolLM2-135M-Instruct and writes a headline and a summary for a sample article;
the evaluation stage turns it into tune -> eval -> report.
"""

from __future__ import annotations

import sys
import time

ARTICLE = (
    "The city council voted 7-2 on Tuesday to build 40 kilometres of protected bike lanes downtown over the "
    "next three years, after a two-year campaign by cyclists and local businesses. The plan, which costs "
    "$18 million, removes about 600 parking spaces; opponents said shops would lose customers."
)


def main() -> int:
    from weaver.data.chat import render_messages
    from weaver.generate.engine import Generator, SamplingParams
    from weaver.models.loading import load_model

    t0 = time.perf_counter()
    model, tok = load_model("smollm2-135m-instruct")
    print(f"loaded smollm2-135m-instruct in {time.perf_counter() - t0:.1f} s")
    gen = Generator(model, tok)
    for instruction in ("Write a headline for this article.", "Summarize this article in one sentence."):
        prompt = render_messages(tok, [{"role": "user", "content": f"{instruction}\n\n{ARTICLE}"}])
        print(f"\n> {instruction}")
        for piece in gen.stream(prompt, SamplingParams(max_new_tokens=60, repetition_penalty=1.1)):
            sys.stdout.write(piece)
            sys.stdout.flush()
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
