"""The writing apps over HTTP, on the served model: newsroom, ad copy and support.

    POST /v1/weaver/apps/newsroom  {"articles": [{"id": "a1", "title": "...", "text": "..."}], "n_headlines": 3}
    -> {"object": "weaver.newsroom", "model": "...", "articles": [{"id", "summary", "headline",
        "alternatives", "safety", ...}], "failed": [{"id", "error"}]}

    POST /v1/weaver/apps/adcopy  {"product": "...", "audience": "...", "tone": "...", "keywords": [...],
                                  "attributes": "类型#上衣*颜色#白色", "lang": "en", "n": 5}
    -> {"object": "weaver.adcopy", "model": "...", "candidates": [{"text", "score", "likelihood",
        "keyword_coverage", "length_fit"}], "score": {"weights": {...}, "likelihood": false}}

Both run the same functions as `weaver newsroom` and `weaver adcopy` (weaver.apps.newsroom.process_article,
weaver.apps.adcopy.generate_adcopy) through ServedSource, so their prompts share the server's batching
scheduler and the one copy of the weights. `model` picks a served adapter (GET /v1/models; default: the
first). Articles of one request are processed concurrently (their generations batch together); an article
the model cannot take (longer than the context window) is listed in `failed` and the others are returned.
Ad copy from a served model is ranked without the likelihood term (the server does not score text), so
its score is keyword coverage and length fit only; `score.likelihood` says so.
Both are behind the API key and the server's safety policy (prompts and outputs).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import anyio
from fastapi import APIRouter
from pydantic import BaseModel, Field

from weaver.apps.support import MIN_CONFIDENCE
from weaver.errors import WeaverError
from weaver.serve.errors import APIError, key_dependency
from weaver.serve.explanations import (
    EXPLAIN_DESCRIPTION,
    AdcopyResponse,
    NewsroomResponse,
    SupportResponse,
    adcopy_documents,
    documented,
)

MAX_ARTICLES = 32
ARTICLE_WORKERS = 4


class NewsArticle(BaseModel):
    id: str | None = Field(None, max_length=200, description="Your id for the article (default: its position).")
    title: str = Field("", max_length=2000)
    text: str = Field(..., min_length=1, max_length=200_000)


class NewsroomRequest(BaseModel):
    model: str | None = Field(None, description="Model id from GET /v1/models (default: the first one).")
    articles: list[NewsArticle] = Field(..., min_length=1, max_length=MAX_ARTICLES)
    n_headlines: int = Field(3, ge=0, le=10, description="Alternative headlines per article.")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    lang: Literal["en", "zh"] = "en"
    max_new_tokens: int | None = Field(None, ge=1, le=1024)
    explain: bool = Field(False, description=EXPLAIN_DESCRIPTION)


class AdcopyRequest(BaseModel):
    model: str | None = Field(None, description="Model id from GET /v1/models (default: the first one).")
    product: str = Field("", max_length=4000)
    audience: str = Field("", max_length=1000)
    tone: str = Field("", max_length=200)
    keywords: list[str] = Field(default_factory=list, max_length=30)
    attributes: str = Field("", max_length=4000, description="AdvertiseGen attributes, e.g. 类型#上衣*颜色#白色")
    lang: Literal["en", "zh"] = "en"
    n: int = Field(5, ge=1, le=10)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    max_new_tokens: int | None = Field(None, ge=1, le=1024)
    explain: bool = Field(False, description=EXPLAIN_DESCRIPTION)


class SupportRequest(BaseModel):
    question: str = Field(min_length=1, max_length=4000)
    k: int = Field(3, ge=1, le=10)
    min_confidence: float = Field(MIN_CONFIDENCE, ge=-1.0, le=1.0, description="Below it the reply is handed over.")
    mode: str = Field("hybrid", pattern="^(hybrid|embedding|lexical)$")
    max_new_tokens: int | None = Field(None, ge=1, le=1024)
    explain: bool = Field(False, description=EXPLAIN_DESCRIPTION)


def apps_router(state) -> APIRouter:
    """POST /v1/weaver/apps/newsroom and /v1/weaver/apps/adcopy for a weaver.serve.app.ServerState."""
    from weaver.apps.adcopy import W_KEYWORDS, W_LENGTH, W_LIKELIHOOD, AdRequest, candidates_json, generate_adcopy
    from weaver.apps.newsroom import Article, process_article
    from weaver.eval.explain import explain_spans
    from weaver.safety import permissive_policy
    from weaver.serve.source import ServedSource

    router = APIRouter(prefix="/v1/weaver/apps", dependencies=[key_dependency(state.settings.api_key)])

    def policy():
        return state.policy or permissive_policy()

    def newsroom(req: NewsroomRequest) -> dict:
        state.require_ready()
        model_id, _ = state.adapter_for(req.model)
        source = ServedSource(state, model_id, req.lang)
        ids = [a.id or f"article-{i + 1}" for i, a in enumerate(req.articles)]
        if len(set(ids)) != len(ids):
            raise APIError(400, "article ids must be unique", param="articles", code="duplicate_id")
        articles = [Article(id=i, text=a.text, title=a.title, source="request") for i, a in zip(ids, req.articles)]

        def one(article: Article) -> dict:
            try:
                return process_article(source, article, req.n_headlines, policy(), req.seed, req.max_new_tokens)
            except APIError as exc:
                if exc.status_code != 400:  # busy, timeout, model failure: the whole request fails
                    raise
                return {"id": article.id, "error": exc.message}

        with ThreadPoolExecutor(min(ARTICLE_WORKERS, len(articles))) as pool:
            results = list(pool.map(one, articles))
        done = [r for r in results if "error" not in r]
        failed = [r for r in results if "error" in r]
        sent = dict(zip(ids, req.articles))
        for r in done:
            r.pop("source", None)
            if req.explain:
                docs = {"title": sent[r["id"]].title, "text": sent[r["id"]].text}
                r["explanation"] = explain_spans(r["summary"], {k: v for k, v in docs.items() if v}, req.lang)
        return {"object": "weaver.newsroom", "model": model_id, "articles": done, "failed": failed}

    def adcopy(req: AdcopyRequest) -> dict:
        state.require_ready()
        model_id, _ = state.adapter_for(req.model)
        source = ServedSource(state, model_id, req.lang)
        ad = AdRequest(product=req.product, audience=req.audience, tone=req.tone,
                       keywords=[k for k in req.keywords if k.strip()], attributes=req.attributes, lang=req.lang)
        try:
            cands = generate_adcopy(source, ad, req.n, req.seed, policy(), req.max_new_tokens)
        except WeaverError as exc:
            raise APIError(400, str(exc), code="invalid_request") from None
        weights = {"likelihood": W_LIKELIHOOD, "keyword_coverage": W_KEYWORDS, "length_fit": W_LENGTH}
        out = candidates_json(cands)
        if req.explain:
            docs = adcopy_documents(req.product, req.audience, req.tone, req.attributes, req.keywords)
            for cand in out:
                cand["explanation"] = explain_spans(cand["text"], docs, req.lang)
        return {"object": "weaver.adcopy", "model": model_id, "candidates": out,
                "score": {"weights": weights, "likelihood": source.supports_loglik}}

    async def newsroom_route(req: NewsroomRequest) -> dict:
        return await anyio.to_thread.run_sync(newsroom, req)

    async def adcopy_route(req: AdcopyRequest) -> dict:
        return await anyio.to_thread.run_sync(adcopy, req)

    news_doc = "Per article: summary, headline, alternatives (with explain: true, the summary's explanation)."
    ad_doc = "Ranked candidates (with explain: true, each candidate's explanation)."
    router.post("/newsroom", responses=documented(NewsroomResponse, news_doc))(newsroom_route)
    router.post("/adcopy", responses=documented(AdcopyResponse, ad_doc))(adcopy_route)
    return router


def support_router(index_path: str, source_factory, policy=None) -> APIRouter:
    """POST /v1/weaver/support (weaver.apps.support.answer) for one knowledge-base index.

    Args:
        index_path: the SQLite index built by `weaver support index`.
        source_factory: () -> source, called once on first use (e.g. the server's loaded model).
        policy: safety policy (default: load_policy()).
    Returns:
        An APIRouter to `app.include_router(...)`.
    """
    from weaver.apps.retrieval import Index
    from weaver.apps.support import answer
    from weaver.safety import load_policy

    router = APIRouter()
    state: dict = {}

    def _run(req: SupportRequest) -> dict:
        if not state:
            state.update(index=Index(index_path), source=source_factory(), policy=policy or load_policy())
        reply = answer(state["source"], state["index"], req.question, req.k, req.min_confidence, req.mode,
                       state["policy"], req.max_new_tokens, req.explain)
        return reply.to_dict()

    async def support(req: SupportRequest) -> dict:
        return await anyio.to_thread.run_sync(_run, req)

    router.post("/v1/weaver/support", responses=documented(SupportResponse, "The reply with its citations, grounding "
                                                           "and (with explain: true) explanation."))(support)
    return router
