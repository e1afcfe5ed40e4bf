"""Write an evaluation's report: report.json, predictions.jsonl, report.md and a self-contained report.html.

    write_report(report, run_dir=Path("runs/dialogsum"), n_examples=8)
    print(text_table(report.data))

The HTML needs no network: CSS is inline and the plots (before/after bars; the run's training and dev
curves from its metrics.jsonl) are inline base64 PNGs drawn with matplotlib. Every text taken from data
or models is HTML-escaped. Each file is written to a temporary name and renamed.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from weaver.eval.labels import label, report_lang, summary_zh, word
from weaver.files import atomic_write_text

BAR_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf", "semantic")
CSS = """
mark.unsup{background:#fde2e2}.note{color:#555;font-size:.9em}
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.better{color:#0a7a2f;font-weight:600}.worse{color:#b3261e;font-weight:600}.neutral{color:#666}
.ex td{width:25%;white-space:pre-wrap;font-size:.92em}pre{background:#f6f6f6;padding:.6em;overflow:auto}
img{max-width:100%}
"""


def _fmt(x: Any, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _rows(data: dict, ui: str = "en") -> list[list[str]]:
    """Table rows: metric, base, tuned, delta, CI, verdict (or metric, score, CI for one system)."""
    rows = []
    for name, m in data["metrics"].items():
        if "delta" in m:
            rows.append([label(name, data, ui), _fmt(m["base"]), _fmt(m["tuned"]), f"{m['delta']:+.2f}",
                         f"[{m['low']:+.2f}, {m['high']:+.2f}]", word(m["verdict"], ui)])
        else:
            rows.append([label(name, data, ui), _fmt(m["score"]), f"[{_fmt(m['low'])}, {_fmt(m['high'])}]"])
    return rows


def _header(data: dict, ui: str = "en") -> list[str]:
    if data["base"]:
        return [word(w, ui) for w in ("metric", "base", "tuned", "tuned - base", "95% CI", "verdict")]
    return [word(w, ui) for w in ("metric", "score", "95% CI")]


def text_table(data: dict) -> str:
    """The metric table as aligned plain text (English: terminals align CJK badly), then the verdict."""
    rows = [_header(data), *_rows(data)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n\n" + summary_sentence(data)


def summary_sentence(data: dict, ui: str = "en") -> str:
    """Plain words: which differences are significant (95% CI excludes zero) and in which direction."""
    n = data["n"]
    groups: dict[str, list[str]] = {"better": [], "worse": [], "other": [], "same": []}
    for name, m in data["metrics"].items() if data["base"] else ():
        key = {"better": "better", "worse": "worse", "no significant change": "same"}.get(m["verdict"], "other")
        groups[key].append(label(name, data, ui))
    if ui == "zh":
        return summary_zh(data, groups)
    if not data["base"]:
        return f"{data['model']} on {n} examples (95% bootstrap intervals); no base model to compare against."
    parts = [f"On {n} held-out examples, paired bootstrap 95% CIs of tuned - base:"]
    parts.append(f"significantly better: {', '.join(groups['better']) or 'none'};")
    parts.append(f"significantly worse: {', '.join(groups['worse']) or 'none'};")
    if groups["other"]:
        parts.append(f"significantly changed (no better direction): {', '.join(groups['other'])};")
    parts.append(f"no significant difference: {', '.join(groups['same']) or 'none'}.")
    return " ".join(parts)


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def bar_chart(data: dict) -> str | None:
    """Base vs tuned bars (0-100 metrics) with the tuned bar's 95% CI of the difference; base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in BAR_METRICS if k in data["metrics"] and "delta" in data["metrics"][k]]
    if not names:
        return None
    ms = [data["metrics"][k] for k in names]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [m["base"] or 0 for m in ms], 0.4, label="base", color="#9aa5b1")
    err = [[m["delta"] - m["low"] for m in ms], [m["high"] - m["delta"] for m in ms]]
    ax.bar([x + 0.2 for x in xs], [m["tuned"] or 0 for m in ms], 0.4, yerr=err, capsize=3, label="tuned",
           color="#2f6fb3")
    ax.set_xticks(list(xs), [label(k, data, "en") for k in names])
    ax.set_ylabel("score (0-100)")
    ax.set_title("Before / after tuning (error bars: 95% CI of tuned - base)")
    ax.legend()
    return _png(fig)


def read_curves(run_dir: Path | None) -> list[dict]:
    """The run's metrics.jsonl events (empty when there is no run or no file)."""
    path = run_dir / "metrics.jsonl" if run_dir else None
    if path is None or not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a crash mid-write is not worth failing the report for
    return [e for e in events if isinstance(e, dict) and "step" in e]


def curves_chart(events: list[dict]) -> str | None:
    """Training loss, dev loss and dev ROUGE-L against the step; base64 PNG (None without data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {k: [(e["step"], e[k]) for e in events if e.get(k) is not None]
              for k in ("train_loss", "dev_loss", "rougeL")}
    if not series["train_loss"] and not series["dev_loss"]:
        return None
    fig, axes = plt.subplots(1, 2 if series["rougeL"] else 1, figsize=(9, 3.4), squeeze=False)
    ax = axes[0][0]
    for key, style in (("train_loss", "-"), ("dev_loss", "o-")):
        if series[key]:
            ax.plot(*zip(*series[key]), style, label=key.replace("_", " "))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("Training")
    ax.legend()
    if series["rougeL"]:
        axes[0][1].plot(*zip(*series["rougeL"]), "o-", color="#2f6fb3")
        axes[0][1].set_xlabel("optimizer step")
        axes[0][1].set_title("Dev ROUGE-L")
    return _png(fig)


def _speed_line(who: str, s: dict, ui: str, load: bool = False) -> str:
    backend = s.get("backend")
    if ui == "zh":
        return (f"{word(who, ui)}：每秒 {s['tokens_per_s']} 个新 token（{s['new_tokens']} 个 token，"
                f"用时 {s['generate_s']} 秒" + (f"；加载模型 {s['load_s']} 秒" if load else "")
                + (f"；{backend} 后端" if backend else "") + "）")
    return (f"{who}: {s['tokens_per_s']} new tokens/s ({s['new_tokens']} tokens in {s['generate_s']} s"
            + (f"; model load {s['load_s']} s" if load else "") + (f"; {backend} backend" if backend else "") + ")")


def _intro(data: dict, ui: str) -> str:
    if ui == "zh":
        return (f"基座模型：{data['base'] or '（无）'}；任务：{data['task']}；{data['n']} 个留出样本；"
                f"指标语言：{data['lang']}。")
    return (f"Base: {data['base'] or '(none)'}; task: {data['task']}; {data['n']} examples; "
            f"language for metrics: {data['lang']}.")


def to_markdown(data: dict, predictions: list[dict], n_examples: int) -> str:
    """report.md: the table, the verdict, speed, and a few side-by-side examples (in the run's language)."""
    ui = report_lang(data)
    head = _header(data, ui)
    lines = [f"# {word('evaluation', ui)}: {data['model']}", "", _intro(data, ui), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(data, ui)]
    lines += ["", summary_sentence(data, ui), "", f"## {word('speed', ui)}", ""]
    lines += [f"- {_speed_line(who, s, ui)}" for who, s in data["speed"].items()]
    lines += ["", f"## {word('notes', ui)}", ""] + [f"- {n}" for n in data["notes"]]
    lines += ["", f"## {word('examples', ui)}", ""]
    systems = [k for k in ("base", "tuned") if predictions and k in predictions[0]]
    for p in predictions[:n_examples]:
        lines += [f"### {p['id']}", "", f"**{word('input', ui)}**", "", _quote(p["input"]), "",
                  f"**{word('reference', ui)}**", "", _quote(p["references"][0]), ""]
        for k in systems:
            lines += [f"**{word(k, ui)}**", "", _quote(p[k]), ""]
            g = p.get("grounding", {}).get(k)
            if g and (g["unsupported"] or g["invented"]):
                lines += [f"- {word('unsupported', ui)}: {s}" for s in g["unsupported"]]
                lines += [f"- {word('not_in_input', ui)}: {', '.join(g['invented'])}"] if g["invented"] else []
                lines.append("")
    return "\n".join(lines) + "\n"


def _quote(text: str, limit: int = 1200) -> str:
    text = text if len(text) <= limit else text[:limit] + " …"
    return "\n".join("> " + line for line in text.splitlines()) or ">"


def to_html(data: dict, predictions: list[dict], n_examples: int, events: list[dict]) -> str:
    """report.html: self-contained (inline CSS and base64 PNG plots), all data text escaped, in the run's language."""
    e = html.escape
    ui = report_lang(data)
    head = "".join(f"<th>{e(h)}</th>" for h in _header(data, ui))
    body = []
    for r, m in zip(_rows(data, ui), data["metrics"].values()):
        cls = {"better": "better", "worse": "worse"}.get(m.get("verdict"), "neutral") if data["base"] else ""
        cells = [f"<td>{e(r[0])}</td>"] + [f'<td class="num">{e(c)}</td>' for c in r[1:-1]]
        cells.append(f'<td class="{cls}">{e(r[-1])}</td>' if data["base"] else f'<td class="num">{e(r[-1])}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    title = f"{word('evaluation', ui)}: {data['model']}"
    parts = [f"<!doctype html><html lang='{ui}'><head><meta charset='utf-8'><title>Weaver {e(title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{e(title)}</h1>", f"<p>{e(_intro(data, ui))}</p>",
             f"<p><b>{e(summary_sentence(data, ui))}</b></p>", f"<table><tr>{head}</tr>{''.join(body)}</table>"]
    for key, png in (("before_after", bar_chart(data) if data["base"] else None), ("curves", curves_chart(events))):
        if png:
            parts.append(f"<h2>{e(word(key, ui))}</h2><img alt='{e(word(key, ui))}' src='data:image/png;base64,{png}'>")
    parts.append(f"<h2>{e(word('speed', ui))}</h2><ul>"
                 + "".join(f"<li>{e(_speed_line(k, s, ui, load=True))}</li>" for k, s in data["speed"].items())
                 + "</ul>")
    parts.append(f"<h2>{e(word('notes', ui))}</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in data["notes"]) + "</ul>")
    parts.append(_examples_html(predictions[:n_examples], ui))
    cfg = json.dumps({"decoding": data["decoding"], "config": data["config"], "versions": data["versions"]},
                     indent=2, ensure_ascii=False)
    parts.append(f"<details><summary>{e(word('config', ui))}</summary><pre>{e(cfg)}</pre></details>")
    return "".join(parts) + "</body></html>\n"


def _examples_html(predictions: list[dict], ui: str = "en") -> str:
    e = html.escape
    if not predictions:
        return ""
    systems = [k for k in ("base", "tuned") if k in predictions[0]]
    head = (f"<tr><th>{e(word('input', ui))}</th><th>{e(word('reference', ui))}</th>"
            + "".join(f"<th>{e(word(k, ui))}</th>" for k in systems) + "</tr>")
    rows = "".join(
        f"<tr><td>{e(p['input'][:1500])}</td><td>{e(p['references'][0])}</td>"
        + "".join(f"<td>{_marked(p[k], p.get('grounding', {}).get(k), ui)}</td>" for k in systems) + "</tr>"
        for p in predictions
    )
    note = ("" if not any("grounding" in p for p in predictions) else
            "<p class='note'><mark class='unsup'>高亮</mark>：输入不支持的句子（weaver.eval.explain）；"
            "虚构的数字和名称列在每条输出下方。</p>" if ui == "zh" else
            "<p class='note'><mark class='unsup'>Highlighted</mark>: sentences the input does not support "
            "(weaver.eval.explain); invented numbers and names are listed under each output.</p>")
    return f"<h2>{e(word('side_by_side', ui))}</h2>{note}<table class='ex'>{head}{rows}</table>"


def _marked(text: str, g: dict | None, ui: str = "en") -> str:
    """An output, escaped, with its unsupported sentences highlighted and its invented entities listed."""
    e = html.escape
    if not g:
        return e(text)
    out, pos = [], 0
    for sent in g.get("unsupported", []):
        i = text.find(sent, pos)
        if i < 0:
            continue
        out += [e(text[pos:i]), f"<mark class='unsup'>{e(sent)}</mark>"]
        pos = i + len(sent)
    out.append(e(text[pos:]))
    if g.get("invented"):
        out.append(f"<br><small>{e(word('not_in_input', ui))}: {e(', '.join(g['invented']))}</small>")
    return "".join(out)


def write_report(report, run_dir: Path | None, n_examples: int = 8) -> None:
    """Write report.json, predictions.jsonl, report.md and report.html into report.out_dir (atomically)."""
    out = Path(report.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data, preds = report.data, report.predictions
    atomic_write_text(out / "report.json", json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    atomic_write_text(out / "predictions.jsonl", "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in preds))
    atomic_write_text(out / "report.md", to_markdown(data, preds, n_examples))
    atomic_write_text(out / "report.html", to_html(data, preds, n_examples, read_curves(run_dir)))
