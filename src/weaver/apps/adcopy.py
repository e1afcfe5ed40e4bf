"""Ad copy: N diverse candidates for a product, near-duplicates removed, ranked by a documented score.

    weaver adcopy --model smollm2-135m-instruct --product "trail running shoes" --audience "weekend runners" \\
        --tone playful --keywords grip,lightweight --n 5
    weaver adcopy --model runs/adgen --attributes "类型#上衣*颜色#白色*风格#简约" --lang zh --n 5 --json

    cands = generate_adcopy(source, AdRequest(product="...", audience="...", tone="..."), n=5)

Candidates are sampled (temperature 0.9, top-p 0.95) in rounds with different seeds until N distinct ones
survive near-duplicate removal (character 3-gram Jaccard >= 0.6, weaver.apps.text.dedup) or the round
budget is spent. Each candidate gets

    score = W_LIKELIHOOD * likelihood + W_KEYWORDS * keyword_coverage + W_LENGTH * length_fit

- likelihood = exp(mean token log-probability of the copy given the prompt) in (0, 1]: how natural the
  model finds it (local models only; with a served model this term is 0 for every candidate);
- keyword_coverage = share of the requested keywords (or attribute values) that appear, 0..1;
- length_fit = 1 inside the target length (TARGET_WORDS English words / TARGET_CHARS Chinese
  characters), falling linearly to 0 at half or twice the range's bounds;
with W_LIKELIHOOD = 0.4, W_KEYWORDS = 0.4, W_LENGTH = 0.2. Candidates are returned best first.
Every candidate also passes the safety policy (blocked ones are dropped, PII redacted).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from weaver.apps.text import dedup, keyword_coverage
from weaver.data.records import Record, language_of
from weaver.errors import WeaverError
from weaver.safety import SafetyPolicy, load_policy

W_LIKELIHOOD, W_KEYWORDS, W_LENGTH = 0.4, 0.4, 0.2
TARGET_WORDS = (15, 60)
TARGET_CHARS = (40, 150)
MAX_ROUNDS = 4


@dataclass
class AdRequest:
    """What the copy is for; `attributes` is an AdvertiseGen string like 类型#上衣*颜色#白色."""

    product: str = ""
    audience: str = ""
    tone: str = ""
    keywords: list[str] = field(default_factory=list)
    attributes: str = ""
    lang: str = "en"


@dataclass
class Candidate:
    """One ranked ad copy and the parts of its score."""

    text: str
    score: float
    likelihood: float
    keyword_coverage: float
    length_fit: float


def parse_attributes(attrs: str) -> list[tuple[str, str]]:
    """Parse an AdvertiseGen attribute string into (key, value) pairs.

    Raises:
        WeaverError: a part without '#' (e.g. "类型上衣").
    """
    pairs = []
    for part in filter(None, (p.strip() for p in attrs.split("*"))):
        key, sep, value = part.partition("#")
        if not sep or not key.strip() or not value.strip():
            raise WeaverError(f"--attributes part {part!r} is not key#value (example: 类型#上衣*颜色#白色)")
        pairs.append((key.strip(), value.strip()))
    return pairs


def request_keywords(req: AdRequest) -> list[str]:
    """The words the copy should mention: --keywords plus the attribute values (deduplicated, in order)."""
    words = [k.strip() for k in req.keywords if k.strip()] + [v for _, v in parse_attributes(req.attributes)]
    return list(dict.fromkeys(words))


def build_record(req: AdRequest) -> Record:
    """The adcopy Record: product, audience, tone, keywords and attributes as readable lines.

    Raises:
        WeaverError: neither a product nor attributes.
    """
    if not req.product.strip() and not req.attributes.strip():
        raise WeaverError("describe the product: pass --product or --attributes")
    zh = req.lang == "zh"
    labels = ("商品", "目标人群", "语气", "关键词") if zh else ("Product", "Audience", "Tone", "Keywords")
    lines = [f"{label}: {value}" for label, value in zip(labels[:3], (req.product, req.audience, req.tone))
             if value.strip()]
    lines += [f"{k}: {v}" for k, v in parse_attributes(req.attributes)]
    if req.keywords:
        lines.append(f"{labels[3]}: {', '.join(req.keywords)}")
    return Record(id="adcopy", instruction="", input="\n".join(lines), output="", source="adcopy")


def length_fit(text: str) -> float:
    """1.0 inside the target length range, linearly down to 0 at half the minimum or twice the maximum."""
    zh = language_of(text) == "zh"
    size = len(re.sub(r"\s", "", text)) if zh else len(text.split())
    lo, hi = TARGET_CHARS if zh else TARGET_WORDS
    if lo <= size <= hi:
        return 1.0
    if size < lo:
        return max(0.0, (size - lo / 2) / (lo / 2))
    return max(0.0, 1 - (size - hi) / hi)


def score_candidates(texts: list[str], logliks: list[float] | None, keywords: list[str]) -> list[Candidate]:
    """Score and rank candidates with the documented formula (best first)."""
    out = []
    for i, text in enumerate(texts):
        lik = math.exp(logliks[i]) if logliks is not None and math.isfinite(logliks[i]) else 0.0
        cov, fit = keyword_coverage(text, keywords), length_fit(text)
        score = W_LIKELIHOOD * lik + W_KEYWORDS * cov + W_LENGTH * fit
        out.append(Candidate(text, score, lik, cov, fit))
    return sorted(out, key=lambda c: -c.score)


def generate_adcopy(source, req: AdRequest, n: int = 5, seed: int = 0, policy: SafetyPolicy | None = None,
                    max_new_tokens: int | None = None) -> list[Candidate]:
    """N distinct, ranked ad copy candidates (fewer if the model keeps repeating itself).

    Args:
        source: weaver.apps.source LocalSource or ServerSource.
        req: the product description.
        n: candidates wanted.
        seed: base sampling seed (round r uses seed + r).
        policy: safety policy (default: load_policy()).
        max_new_tokens: cap on tokens per candidate (default: the adcopy task's).
    Returns:
        Candidates, best score first.
    Raises:
        WeaverError: no product description, or the request is blocked by the safety policy.
    """
    from weaver.apps.source import default_params

    if n < 1:
        raise WeaverError("--n must be at least 1")
    policy = policy or load_policy()
    record = build_record(req)
    gate = policy.check_prompt(record.input, app="adcopy")
    if gate.blocked:
        raise WeaverError(gate.text)
    record.input = gate.text
    texts: list[str] = []
    for r in range(MAX_ROUNDS):
        params = default_params("adcopy", max_new_tokens, n=n, temperature=0.9, top_p=0.95, seed=seed + r)
        sampled = source.generate([record], "adcopy", params)[0]
        checked = [policy.check_output(t, app="adcopy") for t in sampled]
        texts += dedup([d.text for d in checked if not d.blocked], keep=texts)
        if len(texts) >= n:
            break
    texts = texts[:n]
    logliks = source.loglik(record, "adcopy", texts) if getattr(source, "supports_loglik", False) else None
    return score_candidates(texts, logliks, request_keywords(req))


def candidates_json(cands: list[Candidate]) -> list[dict]:
    """JSON-ready candidates with their score parts."""
    return [asdict(c) for c in cands]
