"""Generation: one engine (batched, greedy/beam/sampling, stop strings, n candidates, streaming) for every caller."""

from weaver.generate.engine import Completion, Generator, SamplingParams

__all__ = ["Completion", "Generator", "SamplingParams"]
