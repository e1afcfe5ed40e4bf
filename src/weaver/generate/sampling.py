"""Decoding settings and results, shared by every backend and every caller.

    params = SamplingParams(max_new_tokens=48, temperature=0.7, top_p=0.9, n=3, stop=["\\n\\n"])
    Completion(text="...", prompt_tokens=120, completion_tokens=31, finish_reason="stop")
"""

from __future__ import annotations

from dataclasses import dataclass, field

GREEDY_BELOW = 1e-5
"""Temperatures below this decode greedily, as vLLM does: logits divided by a tiny temperature (1e-45, 5e-324)
overflow to inf and sampling fails, while any temperature this small already picks the most likely token."""


def effective_temperature(temperature: float) -> float:
    """The temperature to decode with: 0.0 (greedy) below GREEDY_BELOW, else unchanged."""
    return 0.0 if temperature < GREEDY_BELOW else temperature


@dataclass
class SamplingParams:
    """Decoding settings for one request (a temperature below GREEDY_BELOW becomes 0.0: greedy)."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    num_beams: int = 1
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    n: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        self.temperature = effective_temperature(self.temperature)


@dataclass
class Completion:
    """One generated text and its accounting."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) | "length"
