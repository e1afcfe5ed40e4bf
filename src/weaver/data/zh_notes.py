"""Language notes on Chinese data for `weaver data check`: script and punctuation mix-ups, never errors.

    notes = language_notes(records)   # [{"kind": "script", "message": "...", "examples": ["train.jsonl:7 這 說"]}]

Two things a Chinese set can carry without the reader noticing, both of which a small model copies:
- traditional characters in a mostly simplified set (or the reverse): a record is counted as traditional
  (simplified) when it contains a character of the TRADITIONAL (SIMPLIFIED) column below. Those are frequent
  characters that exist in one script only (們/们, 這/这, 說/说 ...), so any real passage of a few sentences
  in one script hits several of them, and text in the other script never does. It is a detector, not a
  converter: rare characters outside the table are not seen (convert a set with OpenCC if it is flagged).
- half-width punctuation (, ; : ? ! and a full stop not followed by a digit) right after a Chinese
  character, in a set whose Chinese text otherwise uses the full-width forms (，；：？！。), or the reverse,
  and texts (an input, an output) that mix both; the instruction, usually a template, is not counted.
The set's majority decides which records are the odd ones; each note gives file:line examples.
"""

from __future__ import annotations

import re

from weaver.data.records import Record

# Traditional-only character -> its simplified form (each side occurs in its own script only).
PAIRS = (
    "們们這这說说國国會会來来時时個个學学對对過过還还發发與与樣样經经動动開开問问關关體体長长點点進进"
    "從从電电現现實实機机無无當当書书產产業业費费質质種种東东車车見见頭头氣气門门話话處处給给讓让認认"
    "義义華华應应數数區区報报將将歲岁場场買买賣卖錢钱類类網网視视聽听讀读寫写議议記记論论識识"
    "設设計计語语顏颜裝装褲裤條条紋纹領领襯衬優优質质選选適适彈弹線线綫线鐘钟檔档簡简單单"
    "邊边調调廣广傳传興兴腦脑樂乐雙双總总張张陽阳醫医藥药鐵铁銀银運运連连據据際际風风飛飞魚鱼鳥鸟龍龙"
)
TRADITIONAL = {t for t, s in zip(PAIRS[::2], PAIRS[1::2]) if t != s}
SIMPLIFIED = {s for t, s in zip(PAIRS[::2], PAIRS[1::2]) if t != s}
_CJK = "\u3400-\u4dbf\u4e00-\u9fff"
HALF = re.compile(rf"[{_CJK}](?:[,;:?!]|\.(?!\d))")
FULL = re.compile(rf"[{_CJK}][，；：？！。]")
MAX_EXAMPLES = 3


def _texts(r: Record) -> str:
    return "\n".join(t for t in (r.instruction, r.input, r.output, *r.references) if t)


def _script(text: str) -> tuple[str, str] | None:
    """("traditional" | "simplified", the characters that tell) for text in one clear script, else None."""
    trad = sorted({c for c in text if c in TRADITIONAL})
    simp = sorted({c for c in text if c in SIMPLIFIED})
    if len(trad) > len(simp):
        return "traditional", " ".join(trad[:4])
    if len(simp) > len(trad):
        return "simplified", " ".join(simp[:4])
    return None


def _odd_ones(labels: list[tuple[Record, str, str]], what: str, kinds: tuple[str, str], kind: str,
              unit: str = "record") -> list[dict]:
    """A note when the records labelled with the minority kind exist next to a majority of the other kind."""
    count = {k: sum(1 for _, lab, _ in labels if lab == k) for k in kinds}
    major, minor = sorted(kinds, key=lambda k: -count[k])
    if not count[minor] or not count[major]:
        return []
    examples = [f"{r.source} {tell}" for r, lab, tell in labels if lab == minor][:MAX_EXAMPLES]
    return [{"kind": kind, "records": count[minor],
             "message": f"{count[minor]} {unit}(s) use {minor} {what} in a set that is mostly {major} "
                        f"({count[major]} {unit}s)",
             "examples": examples}]


def language_notes(records: list[Record]) -> list[dict]:
    """Notes on the script and punctuation of a file's Chinese records (empty for a clean or non-Chinese set).

    Returns:
        [{"kind": "script" | "punctuation", "records": n, "message": str, "examples": ["file:line ..."]}]
        ("records" counts texts, an input or an output, for punctuation).
    """
    scripts, punct = [], []
    for r in records:
        found = _script(_texts(r))
        if found:
            scripts.append((r, *found))
        for text in (r.input, r.output, *r.references):  # field by field: an abstract and its title may differ
            half, full = HALF.findall(text or ""), FULL.findall(text or "")
            if half and full:  # both in one text: an odd one whatever the set's majority
                punct.append((r, "mixed", " ".join(dict.fromkeys(half[:3]))))
                break
            if half or full:
                punct.append((r, "half-width" if half else "full-width", " ".join(dict.fromkeys((half or full)[:3]))))
    notes = _odd_ones(scripts, "characters", ("simplified", "traditional"), "script")
    notes += _punctuation_note(punct)
    return notes


def _punctuation_note(punct: list[tuple[Record, str, str]]) -> list[dict]:
    mixed = [(r, tell) for r, lab, tell in punct if lab == "mixed"]
    plain = [p for p in punct if p[1] != "mixed"]
    notes = _odd_ones(plain, "punctuation after Chinese characters", ("full-width", "half-width"), "punctuation",
                      "text")
    if mixed:
        notes.append({"kind": "punctuation", "records": len(mixed),
                      "message": f"{len(mixed)} text(s) mix half-width (, . ; : ? !) and full-width (，。；：？！) "
                                 "punctuation after Chinese characters",
                      "examples": [f"{r.source} {tell}" for r, tell in mixed[:MAX_EXAMPLES]]})
    return notes


def format_notes(notes: list[dict]) -> list[str]:
    """Report lines for format_stats."""
    return [f"  language note: {n['message']}; e.g. " + "; ".join(n["examples"]) for n in notes]
