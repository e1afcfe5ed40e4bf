"""`explain: true`: per output sentence, the source sentences that support it, with character offsets.

    POST /v1/weaver/summarize {"input": "...", "explain": true}
    -> choices[i].explanation = [{"sentence", "start", "end", "supported", "score",
                                  "sources": [{"index", "field", "sentence", "start", "end", "score"}],
                                  "unsupported_entities": [...]}]

The same list is `explanation` of each newsroom article (its summary), each ad-copy candidate and each
support reply (sources then name a `passage` instead of a `field`). It is computed by
weaver.eval.explain.explain_spans on the text the client receives (after the server's output filter), against
the request's own texts, so every start/end slices the strings of the request and response exactly.
docs/EXPLAIN.md describes the fields; the pydantic models below put them in the OpenAPI schema.
"""

from __future__ import annotations

import json

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

EXPLAIN_DESCRIPTION = ("Add `explanation` to every choice/result: per output sentence, its character offsets, whether "
                       "the source supports it, the supporting source sentences and invented names/numbers/dates "
                       "(docs/EXPLAIN.md). Not with stream: true.")


class ExplanationSource(BaseModel):
    """A source sentence that supports an output sentence."""

    index: int = Field(description="Position of this sentence among all the source's sentences (request fields or "
                                   "passages in order, each split into sentences).")
    field: str | None = Field(None, description="The request field whose text `start`/`end` index: input, text, "
                                                "title, product, keywords[0], ... (absent for support replies).")
    passage: str | None = Field(None, description="Support replies: the knowledge-base passage id whose `text` "
                                                  "(in `passages`) `start`/`end` index (absent otherwise).")
    sentence: str = Field(description="The source sentence: exactly text[start:end] of its field or passage.")
    start: int = Field(description="Character offset where the sentence starts in its field or passage.")
    end: int = Field(description="Character offset just after the sentence's end.")
    score: float = Field(description="Support of the output sentence by this source sentence alone, 0-1.")


class ExplainedSentence(BaseModel):
    """One sentence of the generated text and what supports it."""

    sentence: str = Field(description="The output sentence: exactly output[start:end].")
    start: int = Field(description="Character offset where the sentence starts in the output text (the choice's "
                                   "content, the article's summary, the candidate's text, the reply).")
    end: int = Field(description="Character offset just after the sentence's end in the output text.")
    supported: bool = Field(description="score >= the calibrated threshold (weaver.eval.explain.THRESHOLDS); "
                                        "false marks a likely invention.")
    score: float = Field(description="Support score 0-1: embedding similarity and content-word overlap with the "
                                     "best source sentence (or two fused).")
    sources: list[ExplanationSource] = Field(description="The best supporting source sentences, best first (2).")
    unsupported_entities: list[str] = Field(description="Numbers, dates and names in this sentence that occur "
                                                        "nowhere in the source.")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ExplainedChoice(_Open):
    index: int
    message: dict = Field(description="{role: assistant, content}: the text the explanation's offsets index.")
    finish_reason: str | None = None
    explanation: list[ExplainedSentence] | None = Field(None, description="Only with explain: true.")


class TaskResponse(_Open):
    """POST /v1/weaver/{task}: an OpenAI chat.completion; with explain: true each choice has `explanation`."""

    id: str
    object: str = "chat.completion"
    model: str
    choices: list[ExplainedChoice]
    usage: dict


class NewsroomArticleOut(_Open):
    id: str
    summary: str
    headline: str
    alternatives: list[str]
    explanation: list[ExplainedSentence] | None = Field(
        None, description="Only with explain: true: the summary's sentences, sources in the article's `text` or "
                          "`title`.")


class NewsroomResponse(_Open):
    object: str = "weaver.newsroom"
    model: str
    articles: list[NewsroomArticleOut]
    failed: list[dict]


class AdcopyCandidateOut(_Open):
    text: str
    score: float
    explanation: list[ExplainedSentence] | None = Field(
        None, description="Only with explain: true: sources in the request's product, audience, tone, attributes "
                          "and keywords[i].")


class AdcopyResponse(_Open):
    object: str = "weaver.adcopy"
    model: str
    candidates: list[AdcopyCandidateOut]
    score: dict


class SupportResponse(_Open):
    reply: str
    handed_over: bool
    needs_review: bool
    passages: list[dict]
    explanation: list[ExplainedSentence] | None = Field(
        None, description="Only with explain: true: the reply's sentences (the Sources line excluded), sources in "
                          "the passages' text; empty when the reply was handed over or blocked.")


def documented(model: type[BaseModel], what: str) -> dict:
    """A route's `responses=` entry that documents its 200 body (the route returns plain JSON)."""
    return {200: {"model": model, "description": what}}


def explain_task_response(response: JSONResponse, fields: dict[str, object], lang: str | None) -> JSONResponse:
    """The task route's whole response with `explanation` on every choice (runs in a worker thread).

    Args:
        response: the chat.completion JSONResponse (after the output filter).
        fields: the request's task fields; every string field but instruction/system is a source.
        lang: the request's lang, or None to detect it.
    """
    from weaver.eval.explain import explain_spans

    body = json.loads(response.body)
    docs = {k: v for k, v in fields.items() if isinstance(v, str) and k not in ("instruction", "system")}
    for choice in body["choices"]:
        choice["explanation"] = explain_spans(choice["message"]["content"] or "", docs, lang)
    return JSONResponse(body, status_code=response.status_code)


def adcopy_documents(product: str, audience: str, tone: str, attributes: str, keywords: list[str]) -> dict[str, str]:
    """The ad-copy request's texts an ad may rest on, named by field (keywords by position: keywords[0])."""
    docs = {"product": product, "audience": audience, "tone": tone, "attributes": attributes}
    docs.update({f"keywords[{i}]": k for i, k in enumerate(keywords)})
    return {k: v for k, v in docs.items() if v}


class ExplainRequest(BaseModel):
    """POST /v1/weaver/explain: a text (a draft, possibly edited) against the texts it was written from."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(..., min_length=1, max_length=20_000, description="The text to explain, sentence by sentence.")
    sources: dict[str, str] = Field(..., min_length=1, max_length=20,
                                    description="Name -> source text (e.g. the task's fields: input, title).")
    lang: str | None = Field(None, pattern="^(en|zh)$", description="en | zh (default: detected).")


class ExplainResponse(_Open):
    object: str = Field("weaver.explanation", description="Always weaver.explanation.")
    explanation: list[ExplainedSentence] = Field(description="Per sentence of `text`: offsets, support, sources "
                                                             "(each naming its `field`, a key of `sources`).")


def explain_router(state):
    """POST /v1/weaver/explain behind the API key: the studio's "Sources" panel on a finished or edited draft."""
    import anyio
    from fastapi import APIRouter

    from weaver.serve.errors import APIError, key_dependency

    router = APIRouter(prefix="/v1/weaver", dependencies=[key_dependency(state.settings.api_key)])

    def run(req: ExplainRequest) -> dict:
        from weaver.eval.explain import explain_spans

        for name, text in req.sources.items():
            if not name or len(name) > 64 or len(text) > 200_000:
                raise APIError(400, "each source needs a name of 1-64 characters and at most 200000 characters "
                                    "of text", param="sources", code="invalid_value")
        return {"object": "weaver.explanation", "explanation": explain_spans(req.text, req.sources, req.lang)}

    @router.post("/explain", responses=documented(ExplainResponse, "Each sentence of `text` and its sources."))
    async def explain_route(req: ExplainRequest) -> dict:
        return await anyio.to_thread.run_sync(run, req)

    return router
