"""Recall@1/@3 of the support app's retrieval (embedding only, lexical only, hybrid), into bench/RESULTS.md.

    .venv/bin/python bench/support_retrieval.py            # full run, appends/replaces its section
    .venv/bin/python bench/support_retrieval.py --smoke    # CI: 8 questions per set

Knowledge base: tests/apps/fixtures/support_faq.jsonl (61 FAQ pairs from cs_reply_twitter_ibm, one per
help document). Two question sets:
- paraphrases: tests/apps/fixtures/support_questions.jsonl, 36 hand-written rewordings of FAQ questions;
- real tweets: every ../shared/data/cs_reply_twitter_ibm/test.jsonl customer message whose help document
  (meta.doc_id) is in the FAQ (its first customer turn); other customers with other problems that the
  same help article answered, so a much harder set.
Also reports the hand-over rate of 8 off-topic questions at the default confidence threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "apps" / "fixtures"
SHARED = ROOT.parent / "shared" / "data" / "cs_reply_twitter_ibm" / "test.jsonl"
SECTION = "## Support retrieval (recall@k)"


def question_sets(limit: int | None) -> dict[str, list[tuple[str, str | None]]]:
    rows = [json.loads(x) for x in (FIXTURES / "support_questions.jsonl").read_text().splitlines()]
    faq = {json.loads(x)["id"] for x in (FIXTURES / "support_faq.jsonl").read_text().splitlines()}
    sets = {"paraphrases": [(r["question"], r["answer_id"]) for r in rows if r["answer_id"]],
            "off-topic": [(r["question"], None) for r in rows if not r["answer_id"]]}
    if SHARED.is_file():
        real = []
        for line in SHARED.read_text().splitlines():
            r = json.loads(line)
            if f"faq-{r['meta']['doc_id']}" in faq:
                text = r["input"].split("Agent:")[0].removeprefix("Customer:").strip()
                real.append((text, f"faq-{r['meta']['doc_id']}"))
        sets["real tweets"] = real
    return {k: v[:limit] if limit else v for k, v in sets.items()}


def evaluate(index, questions, mode: str, threshold: float) -> dict[str, float]:
    r1 = r3 = handed = 0
    t0 = time.perf_counter()
    for text, gold in questions:
        hits, confidence = index.search(text, 3, mode)
        ids = [h.id for h in hits]
        r1 += bool(ids) and ids[0] == gold
        r3 += gold in ids
        handed += confidence < threshold
    n = len(questions) or 1
    return {"n": len(questions), "r1": r1 / n, "r3": r3 / n, "handover": handed / n,
            "ms": 1000 * (time.perf_counter() - t0) / n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="8 questions per set (quick check)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from weaver.apps.retrieval import Index, build_index
    from weaver.apps.support import MIN_CONFIDENCE

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        build_index(FIXTURES / "support_faq.jsonl", Path(tmp) / "kb.sqlite")
        build_s = time.perf_counter() - t0
        index = Index(Path(tmp) / "kb.sqlite")
        sets = question_sets(8 if args.smoke else None)
        lines = ["| question set | n | mode | recall@1 | recall@3 | handed over | ms/query |", "|---" * 7 + "|"]
        for name, questions in sets.items():
            for mode in ("embedding", "lexical", "hybrid"):
                m = evaluate(index, questions, mode, MIN_CONFIDENCE)
                r1, r3 = ("—", "—") if name == "off-topic" else (f"{m['r1']:.3f}", f"{m['r3']:.3f}")
                lines.append(f"| {name} | {m['n']} | {mode} | {r1} | {r3} | {m['handover']:.2f} | {m['ms']:.0f} |")
    table = "\n".join(lines)
    print(table)
    print(f"index build (61 FAQ pairs, incl. loading the embedding model): {build_s:.1f} s")
    section = (
        f"{SECTION}\n\nCommand: `.venv/bin/python bench/support_retrieval.py{' --smoke' if args.smoke else ''}` "
        "(knowledge base: 61 FAQ pairs from cs_reply_twitter_ibm, tests/apps/fixtures/support_faq.jsonl; embedding "
        f"all-MiniLM-L6-v2, lexical BM25; hand-over threshold {MIN_CONFIDENCE} on the top cosine, 'lexical' hands "
        "over on IDF-weighted word coverage). Measured on a shared, busy 2-core machine: ms/query is provisional.\n\n"
        f"{table}\n\nIndex build: {build_s:.1f} s (includes loading the embedding model).\n"
    )
    sys.path.insert(0, str(ROOT / "bench"))
    from run import write_section

    print(f"-> {write_section('support_retrieval', section)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
