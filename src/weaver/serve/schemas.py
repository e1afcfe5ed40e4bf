"""Request bodies of the API as pydantic models: the request limits live here, as schema constraints.

A body that fails these checks is answered with 400 in OpenAI's error envelope (see errors.py), naming
the offending parameter. Unknown OpenAI parameters are ignored, as most OpenAI-compatible servers do,
except those that would change what the client gets back (`logprobs`, `top_logprobs`, `echo`, `suffix`,
`best_of`): asking for them is a 400 with code `unsupported_parameter`, never a reply without them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from weaver.serve.explanations import EXPLAIN_DESCRIPTION

MAX_TOKENS_LIMIT = 1_000_000  # the real bound is the model's context window, checked per request
UNSUPPORTED = {  # OpenAI parameter -> (the value that asks for nothing, what the server does not do)
    "logprobs": (False, "replies carry no token log-probabilities"),
    "top_logprobs": (0, "replies carry no token log-probabilities"),
    "echo": (False, "the prompt is not echoed"),
    "suffix": ("", "no text is inserted before a suffix"),
    "best_of": (1, "candidates are not ranked server-side: ask for n and rank them yourself"),
}


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """Parameters shared by /v1/chat/completions, /v1/completions and /v1/weaver/{task}."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="Model id from GET /v1/models (default: the first one).")
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=64)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    repetition_penalty: float | None = Field(None, ge=0.01, le=10.0)
    logprobs: bool | int | None = Field(None, description="Not supported: only null or false.")
    top_logprobs: int | None = Field(None, description="Not supported: only null or 0.")
    echo: bool | None = Field(None, description="Not supported: only null or false.")
    suffix: str | None = Field(None, description="Not supported: only null or empty.")
    best_of: int | None = Field(None, description="Not supported: only null or 1.")

    @field_validator("logprobs", "top_logprobs", "echo", "suffix", "best_of")
    @classmethod
    def _unsupported(cls, value, info):
        harmless, why = UNSUPPORTED[info.field_name]
        if value is None or (type(value) is type(harmless) and value == harmless):
            return None
        raise PydanticCustomError("unsupported_parameter", "{name} is not supported by this server ({why}); leave "
                                  "it out", {"name": info.field_name, "why": why})

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value):
        if value is None:
            return []
        stops = [value] if isinstance(value, str) else value
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty strings")
        return stops

    def stop_list(self) -> list[str]:
        return list(self.stop or [])


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)

    @field_validator("messages")
    @classmethod
    def _check_messages(cls, value: list[ChatMessage]):
        if not any(m.text().strip() for m in value):
            raise ValueError("every message is empty; send at least one message with text")
        if value[-1].role == "assistant":
            raise ValueError("the last message is the assistant's; end with a user (or system) message")
        return value


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] = Field(...)

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, value):
        prompts = [value] if isinstance(value, str) else value
        if not prompts:
            raise ValueError("prompt is an empty list; send at least one prompt")
        if len(prompts) > 64:
            raise ValueError("at most 64 prompts per request")
        return value

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class TaskRequest(SamplingRequest):
    """POST /v1/weaver/{task}: the task's fields (e.g. {"input": article}) next to the usual parameters."""

    model_config = ConfigDict(extra="allow")

    lang: Literal["en", "zh"] | None = None
    explain: bool = Field(False, description=EXPLAIN_DESCRIPTION)

    def fields(self) -> dict[str, object]:
        return dict(self.model_extra or {})
