"""Generation: the only place tokens are decoded. One row-based core (rows.py), two backends (transformers,
llama.cpp), and `Generator` (prompts in, completions out) for every caller; the server drives the rows."""

from weaver.generate.engine import Generator, load_generator
from weaver.generate.sampling import Completion, SamplingParams

__all__ = ["Completion", "Generator", "SamplingParams", "load_generator"]
