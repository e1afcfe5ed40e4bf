// Weaver studio, the apps: Newsroom (/v1/weaver/apps/newsroom, one request per article so each appears as it
// finishes; digest from /v1/weaver/digest), Ad copy (/v1/weaver/apps/adcopy, ranked with score parts) and
// Support (/v1/weaver/support: reply, citations opening their passage, handed over, agent edits and sends).
"use strict";

const NEWS_WORKERS = 4;
let newsEntries = [];

// Articles from the paste box (split on lines holding only ---) and uploaded .txt/.md/.jsonl files.
async function readArticles() {
  const articles = [];
  W.$("news-paste").value.split(/^\s*---\s*$/m).map((t) => t.trim()).filter(Boolean)
    .forEach((text, i) => articles.push({ id: "pasted-" + (i + 1), title: "", text }));
  for (const file of W.$("news-files").files) {
    const content = await file.text();
    const stem = file.name.replace(/\.[^.]*$/, "").replace(/[^\w.-]+/g, "-");
    if (file.name.endsWith(".jsonl")) {
      content.split("\n").filter((l) => l.trim()).forEach((line, i) => {
        const row = JSON.parse(line);
        const text = row.text || row.article || row.input || row.content || "";
        if (text) articles.push({ id: String(row.id || stem + "-" + (i + 1)), title: String(row.title || ""), text });
      });
    } else if (content.trim()) {
      articles.push({ id: stem, title: "", text: content.trim() });
    }
  }
  return articles;
}

function newsCard(entry, batch) {
  const card = W.el("article", "candidate news");
  card.appendChild(W.el("h3", "", entry.title || entry.id));
  card.appendChild(W.el("h4", "", W.t("news_summary")));
  card.appendChild(W.el("p", "text", entry.summary));
  const group = W.el("fieldset", "headlines");
  group.appendChild(W.el("legend", "", W.t("news_pick")));
  [entry.headline, ...entry.alternatives].forEach((text, i) => {
    const label = W.el("label", "check");
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "headline-" + entry.id;
    radio.value = String(i);
    radio.checked = i === (entry.picked || 0);
    radio.addEventListener("change", async () => {
      entry.picked = i;
      if (entry.request_id) await W.record({ type: "event", request_id: entry.request_id, kind: "choose", draft: i });
    });
    label.append(radio, W.el("span", "", text));
    group.appendChild(label);
  });
  card.appendChild(group);
  card.dataset.batch = batch;
  return card;
}

async function processArticle(article, batch, lang, n) {
  const body = { articles: [article], n_headlines: n, lang, model: W.$("model").value || undefined };
  const result = await W.api("/v1/weaver/apps/newsroom", body);
  if (result.failed.length) throw new Error(result.failed[0].error);
  const entry = { ...result.articles[0], text: article.text, picked: 0 };
  const stored = await W.record({
    type: "request", view: "newsroom", task: "headline", model: result.model,
    fields: { input: article.text, title: article.title, summary: entry.summary, batch, id: entry.id },
    drafts: [entry.headline, ...entry.alternatives].map((text) => ({ text: text || " " })),
  });
  if (stored) entry.request_id = stored.id;
  return entry;
}

async function runNewsroom() {
  W.clearError();
  const articles = await readArticles().catch((e) => { W.showError(e.message); return null; });
  if (!articles) return;
  if (!articles.length) { W.showError(W.t("news_none")); return; }
  const batch = Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
  const lang = W.$("news-lang").value;
  const n = Number(W.$("news-n").value) || 0;
  const results = W.$("news-results");
  results.replaceChildren();
  newsEntries = [];
  W.$("news-run").disabled = true;
  let next = 0, done = 0;
  const failed = [];
  const worker = async () => {
    while (next < articles.length) {
      const article = articles[next++];
      try {
        const entry = await processArticle(article, batch, lang, n);
        newsEntries.push(entry);
        results.appendChild(newsCard(entry, batch));
      } catch (e) {
        failed.push(article.id + ": " + e.message);
      }
      W.status("news_progress", ++done, articles.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(NEWS_WORKERS, articles.length) }, worker));
  if (failed.length) W.showError(W.t("news_failed", failed.join("; ")));
  W.$("news-run").disabled = false;
  W.$("news-downloads").hidden = !newsEntries.length;
}

// Reopen a stored newsroom batch (its requests, oldest first).
W.reopenNewsroom = function (requests) {
  const results = W.$("news-results");
  results.replaceChildren();
  newsEntries = requests.map((req) => ({
    id: req.fields.id || req.id, title: req.fields.title || "", summary: req.fields.summary || "",
    text: req.fields.input, headline: req.drafts[0].text, alternatives: req.drafts.slice(1).map((d) => d.text),
    picked: req.chosen || 0, request_id: req.id,
  }));
  for (const entry of newsEntries) results.appendChild(newsCard(entry, requests[0].fields.batch));
  W.$("news-downloads").hidden = !newsEntries.length;
};

async function download(format) {
  W.clearError();
  const articles = newsEntries.map((e) => {
    const all = [e.headline, ...e.alternatives];
    return { id: e.id, title: e.title, summary: e.summary, headline: all[e.picked || 0],
             alternatives: all.filter((_, i) => i !== (e.picked || 0)) };
  });
  const response = await fetch("/v1/weaver/digest", {
    method: "POST", headers: W.headers(), body: JSON.stringify({ format, articles }),
  });
  if (!response.ok) { W.showError(await W.errorMessage(response)); return; }
  const blob = await response.blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "digest." + (format === "md" ? "md" : format);
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function adParts(c, likelihood) {
  const f = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(2));
  return W.t("ad_score", f(c.score)) + " · " + (likelihood
    ? W.t("ad_parts_ll", f(c.likelihood), f(c.keyword_coverage), f(c.length_fit))
    : W.t("ad_parts", f(c.keyword_coverage), f(c.length_fit)));
}

function adFields() {
  return { product: W.$("ad-product").value, audience: W.$("ad-audience").value, tone: W.$("ad-tone").value,
           keywords: W.$("ad-keywords").value, attributes: W.$("ad-attributes").value };
}

W.showAdCards = function (candidates, likelihood, stored) {
  const cards = candidates.map((c, i) => {
    const card = W.makeCard(i + 1, { label: (card) => W.t("ad_rank", card.dataset.n) });
    card.textBox.textContent = c.text;
    if (c.score !== undefined) card.querySelector(".parts").textContent = adParts(c, likelihood);
    return card;
  });
  W.$("ad-results").replaceChildren(...cards);
  W.bindCards(cards, stored);
  return cards;
};

async function runAdcopy() {
  W.clearError();
  const f = adFields();
  const body = { ...f, keywords: f.keywords.split(/[,，、]/).map((k) => k.trim()).filter(Boolean),
                 lang: W.$("ad-lang").value, n: Number(W.$("ad-n").value) || 4, model: W.$("model").value || undefined };
  W.$("ad-run").disabled = true;
  W.status("status_writing", body.n);
  try {
    const result = await W.api("/v1/weaver/apps/adcopy", body);
    const cands = result.candidates;
    const stored = cands.length ? await W.record({
      type: "request", view: "adcopy", task: "adcopy", model: result.model,
      fields: Object.fromEntries(Object.entries(f).filter(([, v]) => v.trim())), drafts: cands.map((c) => ({ text: c.text })),
    }) : null;
    W.showAdCards(cands, result.score.likelihood, stored);
    W.status("status_done");
  } catch (e) {
    W.showError(e.message);
    W.status("");
  } finally {
    W.$("ad-run").disabled = false;
  }
}

let support = null;

function openPassage(p) {
  W.$("passage-title").textContent = W.t("sup_passage", p.id) + (p.title ? " — " + p.title : "");
  W.$("passage-text").textContent = p.text;
  W.$("passage").showModal();
}

W.showSupport = function (reply, stored) {
  support = { reply, id: stored ? stored.id : null };
  W.$("sup-result").hidden = false;
  W.$("sup-reply").textContent = reply.reply;
  W.$("sup-handed").hidden = !reply.handed_over;
  W.$("sup-review").hidden = !reply.needs_review;
  const box = W.$("sup-citations");
  box.replaceChildren();
  const cited = (reply.passages || []).filter((p) => (reply.citations || []).includes(p.id));
  if (!cited.length) box.textContent = W.t("sup_none");
  for (const p of cited) {
    const link = W.el("a", "citation", "[" + p.id + "]");
    link.href = "#passage";
    link.setAttribute("aria-label", W.t("sup_passage", p.id));
    link.addEventListener("click", (e) => { e.preventDefault(); openPassage(p); });
    box.append(link, " ");
  }
};

async function runSupport() {
  W.clearError();
  const question = W.$("sup-question").value;
  W.$("sup-run").disabled = true;
  try {
    const reply = await W.api("/v1/weaver/support", { question });
    const stored = await W.record({ type: "request", view: "support", task: "support_reply", fields: { input: question },
                                    drafts: [{ text: reply.reply }] });
    W.showSupport(reply, stored);
  } catch (e) {
    W.showError(e.message);
  } finally {
    W.$("sup-run").disabled = false;
  }
}

async function sendSupport() {
  const text = W.$("sup-reply").textContent;
  if (!support || !text.trim()) return;
  if (support.id) await W.record({ type: "event", request_id: support.id, kind: "sent", text });
  W.status("sup_sent");
}

W.initApps = function () {
  W.$("news-run").addEventListener("click", runNewsroom);
  for (const format of ["md", "html", "jsonl"]) W.$("news-" + format).addEventListener("click", () => download(format));
  W.$("ad-run").addEventListener("click", runAdcopy);
  W.$("sup-run").addEventListener("click", runSupport);
  W.$("sup-send").addEventListener("click", sendSupport);
};
