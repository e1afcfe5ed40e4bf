"""Newsroom: a summary, a headline and N alternative headlines per article, then a digest.

    weaver newsroom --model smollm2-135m-instruct --in articles/ --out digest/ --n-headlines 3

    from weaver.apps.source import open_source
    result = run_newsroom(open_source("smollm2-135m-instruct"), "articles/", "digest/", n_headlines=3)

Input: a folder of .txt/.md files (one article each, read in sorted path order) or a .jsonl file with one
article per line (`text`, `article`, `input` or `content`, plus optional `id` and `title`). Each finished
article is written at once to OUT/articles/<id>.json (temporary name, then rename) together with the
SHA-256 of its text: a re-run skips every article whose file is there with the same hash, so an
interruption loses at most the article in progress. An unreadable article is reported and the others
go on. Finally OUT/digest.md and OUT/digest.html (self-contained, every text HTML-escaped) list the
articles in input order. The summary and headline are greedy; the alternatives are sampled
(temperature 0.9, top-p 0.95, seeded per article) and near-duplicates removed (weaver.apps.text.dedup).
The safety policy redacts PII in each article before the model sees it and checks every output.
Each summary is grounded sentence by sentence in its article (weaver.eval.explain; `grounding=False` or
`--no-grounding` turns it off): the JSON keeps, per summary sentence, its support score, the supporting article
sentences and the numbers/names the article does not have; the digest marks unsupported sentences and lists
the article sentences each summary sentence rests on.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from weaver.apps.text import dedup
from weaver.data.records import Record
from weaver.errors import DataError
from weaver.files import atomic_write_text, atomic_writer
from weaver.safety import SafetyPolicy, load_policy

log = logging.getLogger(__name__)
TEXT_KEYS = ("text", "article", "input", "content")
WORDS = {  # the digest's own words, in the language of the run (--lang)
    "en": {"digest": "News digest", "alternatives": "Alternative headlines:", "failed": "Not processed",
           "grounding": "Grounding ({:.0%} of summary sentences supported by the article):",
           "supported": "supported", "unsupported": "unsupported", "UNSUPPORTED": "**UNSUPPORTED**",
           "article": "article", "missing": "not in the article", "Missing": "Not in the article",
           "no_source": "no article sentence supports it", "sources": "Sources of each summary sentence ({:.0%} "
           "supported)", "sep": ", ", "colon": ": ", "stop": "."},
    "zh": {"digest": "新闻摘要汇编", "alternatives": "备选标题：", "failed": "未处理",
           "grounding": "依据（摘要中 {:.0%} 的句子有原文支持）：", "supported": "有依据", "unsupported": "无依据",
           "UNSUPPORTED": "**无依据**", "article": "原文", "missing": "原文中没有", "Missing": "原文中没有",
           "no_source": "原文没有句子支持这一句", "sources": "摘要各句的出处（{:.0%} 有依据）", "sep": "、",
           "colon": "：", "stop": "。"},
}


@dataclass
class Article:
    """One input article, or the reason it could not be read (`error`)."""

    id: str
    text: str = ""
    title: str = ""
    source: str = ""
    error: str = ""


@dataclass
class NewsroomResult:
    """What a run did: ids processed now, skipped (already done) and failed (id -> reason)."""

    out_dir: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _safe_id(raw: str) -> str:
    safe = re.sub(r"[^\w.-]+", "_", raw).strip("._") or "article"
    return safe if safe == raw else f"{safe[:80]}-{hashlib.sha1(raw.encode()).hexdigest()[:6]}"


def _from_folder(folder: Path) -> Iterator[Article]:
    """The folder's articles one at a time (the sorted path list is held, each text read when its turn comes)."""
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".txt", ".md")):
        aid = _safe_id(path.relative_to(folder).with_suffix("").as_posix())
        try:
            text = path.read_text(encoding="utf-8-sig")
        except IsADirectoryError:
            yield Article(aid, source=str(path), error="is a directory, not a text file")
            continue
        except UnicodeDecodeError as exc:
            yield Article(aid, source=str(path), error=f"not UTF-8 text (byte {exc.start}); convert it")
            continue
        except OSError as exc:
            yield Article(aid, source=str(path), error=f"cannot read ({exc.strerror})")
            continue
        title = ""
        if path.suffix.lower() == ".md" and text.lstrip().startswith("#"):
            first, _, text = text.lstrip().partition("\n")
            title = first.lstrip("#").strip()
        yield Article(aid, text.strip(), title, str(path))


def _from_jsonl(path: Path) -> Iterator[Article]:
    """The file's articles line by line, never the whole file in memory."""
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{i}"
            try:
                row = json.loads(line)
                text = next(str(row[k]) for k in TEXT_KEYS if isinstance(row, dict) and row.get(k))
            except (json.JSONDecodeError, StopIteration):
                yield Article(_safe_id(f"line-{i}"), source=where,
                              error=f"not a JSON object with one of {', '.join(TEXT_KEYS)}")
                continue
            yield Article(_safe_id(str(row.get("id") or f"line-{i}")), text.strip(), str(row.get("title") or ""),
                          where)


def iter_articles(path: str | Path) -> Iterator[Article]:
    """The articles of a folder or .jsonl file in input order, read one at a time; unreadable ones carry `error`.
    Ids are made unique (a repeated id gets -2, -3, ...): only the ids seen so far are kept.

    Raises:
        DataError: the path is missing or holds no articles (when the first one is asked for).
    """
    path = Path(path)
    if path.is_dir():
        articles = _from_folder(path)
    elif path.is_file() and path.suffix.lower() == ".jsonl":
        articles = _from_jsonl(path)
    else:
        raise DataError(f"--in {path}: pass a folder of .txt/.md articles or a .jsonl file")
    seen: dict[str, int] = {}
    for a in articles:  # ids name output files: make them unique
        n = seen.get(a.id, 0)
        seen[a.id] = n + 1
        if n:
            a.id = f"{a.id}-{n + 1}"
        yield a
    if not seen:
        raise DataError(f"--in {path}: no articles found (.txt/.md files, or non-empty .jsonl lines)")


def check_input(path: str | Path) -> None:
    """Fail early on a bad --in (missing, the wrong kind, or without a single article), reading one article only.

    Raises:
        DataError: as iter_articles.
    """
    next(iter_articles(path))


def read_articles(path: str | Path) -> list[Article]:
    """All the articles of a folder or .jsonl file as a list (iter_articles streams them).

    Raises:
        DataError: the path is missing or holds no articles.
    """
    return list(iter_articles(path))


def _check(policy: SafetyPolicy, texts: list[str]) -> list[str]:
    return [policy.check_output(t, app="newsroom").text for t in texts]


def process_article(source, article: Article, n_headlines: int, policy: SafetyPolicy, seed: int = 0,
                    max_new_tokens: int | None = None, grounding: bool = True) -> dict:
    """Summary, headline, alternatives and (with grounding) the summary's per-sentence support by the article:
    the JSON written to articles/<id>.json."""
    from weaver.apps.source import default_params

    gate = policy.check_prompt(article.text, app="newsroom")
    entry = {"id": article.id, "title": article.title, "source": article.source,
             "sha256": hashlib.sha256(article.text.encode()).hexdigest(), "safety": gate.to_dict()}
    if gate.blocked:
        return {**entry, "summary": gate.text, "headline": "", "alternatives": []}
    record = Record(id=article.id, instruction="", input=gate.text, output="", source=article.source)
    summary = source.generate([record], "summarize", default_params("summarize", max_new_tokens))[0][0]
    headline = source.generate([record], "headline", default_params("headline", max_new_tokens))[0][0]
    alternatives: list[str] = []
    if n_headlines > 0:
        art_seed = seed + int(hashlib.sha1(article.id.encode()).hexdigest()[:6], 16)
        params = default_params("headline", max_new_tokens, n=2 * n_headlines, temperature=0.9, top_p=0.95,
                                seed=art_seed)
        sampled = source.generate([record], "headline", params)[0]
        alternatives = dedup(sampled, keep=[headline])[:n_headlines]
    summary, headline, *alternatives = _check(policy, [summary, headline, *alternatives])
    entry = {**entry, "summary": summary, "headline": headline, "alternatives": alternatives}
    if grounding:
        from weaver.eval.explain import explain

        entry["grounding"] = explain(gate.text, summary).to_dict()
    return entry


def _done(path: Path, sha: str) -> dict | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and entry.get("sha256") == sha else None


def run_newsroom(source, in_path: str | Path, out_dir: str | Path, n_headlines: int = 3,
                 policy: SafetyPolicy | None = None, seed: int = 0, max_new_tokens: int | None = None,
                 progress: bool = True, grounding: bool = True, lang: str | None = None,
                 workers: int | None = None) -> NewsroomResult:
    """Process every article not already done, then write digest.md and digest.html.

    The articles stream from in_path (one read at a time) and each result goes to disk when it is finished, so a
    batch of any size runs in the memory of a few articles; the digest is assembled from the files at the end.

    Args:
        source: weaver.apps.source LocalSource, ServerSource or ServerPool.
        in_path: folder of .txt/.md files or a .jsonl file.
        out_dir: output folder (articles/, digest.md, digest.html).
        n_headlines: alternative headlines per article.
        policy: safety policy (default: load_policy()).
        seed: base seed for the sampled alternatives.
        max_new_tokens: cap on new tokens per output (default: the tasks' own limits).
        progress: show a tqdm progress bar.
        grounding: tie each summary sentence to the article sentences that support it.
        lang: language of the digest's headings and labels, en | zh (default: the source's instruction language).
        workers: articles in flight at once (default: the source's `workers`, 1 for an in-process model; a
            ServerPool's is its servers x requests per server).
    Returns:
        A NewsroomResult.
    Raises:
        DataError: the input path is missing or empty.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from tqdm import tqdm

    policy = policy or load_policy()
    out = Path(out_dir)
    result = NewsroomResult(out)
    order: list[str] = []  # ids with a result file, in input order (ids only: the entries stay on disk)
    workers = max(1, workers or getattr(source, "workers", 1))

    def one(art: Article) -> tuple[str, str]:
        """('done' | 'skipped' | 'failed', reason) for one article; writes articles/<id>.json."""
        target = out / "articles" / f"{art.id}.json"
        if _done(target, hashlib.sha256(art.text.encode()).hexdigest()) is not None:
            return "skipped", ""
        try:
            entry = process_article(source, art, n_headlines, policy, seed, max_new_tokens, grounding)
        except Exception as exc:  # noqa: BLE001 - one failed article must not stop the batch
            log.warning("article %s failed: %s", art.id, exc)
            return "failed", f"{art.source}: {type(exc).__name__}: {exc}"
        atomic_write_text(target, json.dumps(entry, ensure_ascii=False, indent=2) + "\n")
        return "done", ""

    def record(art: Article, outcome: tuple[str, str]) -> None:
        kind, reason = outcome
        if kind == "failed":
            result.failed[art.id] = reason
        else:
            getattr(result, kind).append(art.id)

    bar = tqdm(desc="articles", unit="article", disable=not progress)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: dict = {}
        for art in iter_articles(in_path):
            order.append(art.id)
            if art.error:
                result.failed[art.id] = f"{art.source}: {art.error}"
                log.warning("skipping %s: %s", art.source, art.error)
                bar.update(1)
                continue
            if workers == 1:
                record(art, one(art))
                bar.update(1)
                continue
            pending[pool.submit(one, art)] = art
            while len(pending) >= 2 * workers:  # bounded read-ahead: the input is not pulled into memory
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    record(pending.pop(f), f.result())
                    bar.update(1)
        for f in list(pending):
            record(pending.pop(f), f.result())
            bar.update(1)
    bar.close()
    failed = set(result.failed)
    write_digest(out, (_done_entry(out, i) for i in order if i not in failed), result.failed,
                 lang or getattr(source, "lang", "en"))
    return result


def _done_entry(out: Path, aid: str) -> dict:
    return json.loads((out / "articles" / f"{aid}.json").read_text(encoding="utf-8"))


def write_digest(out: Path, entries, failed: dict[str, str], lang: str = "en") -> None:
    """Write digest.md and digest.html (entries in the given order, an iterable read once) atomically, labelled in
    `lang` (en | zh); both files are written entry by entry."""
    w = WORDS.get(lang, WORDS["en"])
    esc = html.escape
    with atomic_writer(out / "digest.md") as md, atomic_writer(out / "digest.html") as page:
        md.write(f"# {w['digest']}\n\n")
        page.write(
            f"<!doctype html><html lang={'zh' if lang == 'zh' else 'en'}><head><meta charset=utf-8>"
            f"<title>{esc(w['digest'])}</title><style>"
            "body{font:16px/1.5 system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;color:#222}"
            "article{border-bottom:1px solid #ddd;padding:.5rem 0}h2{font-size:1.2rem;margin:.5rem 0}"
            ".alt{margin-bottom:0;color:#555}.src{color:#888;font-size:.8rem}.failed{color:#a00}"
            ".unsup{background:#fde2e2}.ground{font-size:.85rem;color:#555}.ground li{margin:.2rem 0}"
            f"</style></head><body><h1>{esc(w['digest'])}</h1>"
        )
        for e in entries:
            lines = [f"## {e['headline'] or e['title'] or e['id']}", "", e["summary"], ""]
            lines += _grounding_md(e.get("grounding"), w)
            if e["alternatives"]:
                lines += [w["alternatives"], ""] + [f"- {a}" for a in e["alternatives"]] + [""]
            lines += [f"<sub>{e['id']} · {e['source']}</sub>", ""]
            md.write("\n".join(lines) + "\n")
            alts = "".join(f"<li>{esc(a)}</li>" for a in e["alternatives"])
            page.write(
                f"<article><h2>{esc(e['headline'] or e['title'] or e['id'])}</h2>{_summary_html(e, w)}"
                + (f"<p class=alt>{esc(w['alternatives'])}</p><ul>{alts}</ul>" if alts else "")
                + f"<p class=src>{esc(e['id'])} · {esc(e['source'])}</p></article>"
            )
        if failed:
            md.write("\n".join([f"## {w['failed']}", ""] + [f"- {k}: {v}" for k, v in failed.items()] + [""]) + "\n")
            items = "".join(f"<li>{esc(k)}: {esc(v)}</li>" for k, v in failed.items())
            page.write(f"<section class=failed><h2>{esc(w['failed'])}</h2><ul>{items}</ul></section>")
        page.write("</body></html>\n")


def _grounding_md(g: dict | None, w: dict = WORDS["en"]) -> list[str]:
    """Markdown lines: each summary sentence with its supporting article sentences, or UNSUPPORTED."""
    if not g or not g.get("sentences"):
        return []
    lines = [w["grounding"].format(g["faithfulness"]), ""]
    for s in g["sentences"]:
        mark = w["supported"] if s["supported"] else w["UNSUPPORTED"]
        lines.append(f"- {mark} ({s['score']:.2f}): {s['text']}")
        if s["supported"]:
            lines += [f"  - {w['article']}{w['colon']}\u201c{src['text']}\u201d" for src in s["sources"][:1]]
        if s["unsupported_entities"]:
            lines.append(f"  - {w['missing']}{w['colon']}{w['sep'].join(s['unsupported_entities'])}")
    return lines + [""]


def _summary_html(e: dict, w: dict = WORDS["en"]) -> str:
    """The summary as escaped sentences (unsupported ones highlighted) with their sources listed below."""
    esc = html.escape
    g = e.get("grounding")
    if not g or not g.get("sentences"):
        return f"<p>{esc(e['summary'])}</p>"
    spans, items = [], []
    for i, s in enumerate(g["sentences"], 1):
        cls = "" if s["supported"] else " class=unsup"
        spans.append(f"<span{cls} title='{esc(w['supported'] if s['supported'] else w['unsupported'])} "
                     f"({s['score']:.2f})'>{esc(s['text'])}</span>")
        srcs = "; ".join(f"\u201c{esc(src['text'])}\u201d" for src in s["sources"][:1]) if s["supported"] else \
            esc(w["no_source"])
        missing = (f" {esc(w['Missing'])}{w['colon']}{esc(w['sep'].join(s['unsupported_entities']))}{w['stop']}"
                   if s["unsupported_entities"] else "")
        items.append(f"<li>{i}. {srcs}{missing}</li>")
    return (f"<p>{' '.join(spans)}</p><details class=ground><summary>{esc(w['sources'].format(g['faithfulness']))}"
            f"</summary><ol>{''.join(items)}</ol></details>")
