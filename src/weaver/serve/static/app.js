// Weaver studio: the tabs (arrow keys move between them), the language switch and the History panel
// (GET /v1/weaver/history; a newsroom batch is one entry), which reopens past work in its view.
"use strict";

const VIEWS = ["write", "newsroom", "adcopy", "support", "history"];

function showView(name) {
  for (const view of VIEWS) {
    const tab = W.$("tab-" + view);
    const selected = view === name;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    W.$("view-" + view).hidden = !selected;
  }
  W.status("");  // the status line speaks of the view it came from
  if (name === "history") loadHistory();
}

function onTabKey(event) {
  if (!["ArrowLeft", "ArrowRight", "Home", "End"].includes(event.key)) return;
  const tabs = VIEWS.map((v) => W.$("tab-" + v)).filter((t) => !t.hidden);
  let i = tabs.indexOf(document.activeElement);
  if (event.key === "ArrowRight") i = (i + 1) % tabs.length;
  else if (event.key === "ArrowLeft") i = (i - 1 + tabs.length) % tabs.length;
  else i = event.key === "Home" ? 0 : tabs.length - 1;
  event.preventDefault();
  tabs[i].focus();
  tabs[i].click();
}

function preview(req) {
  const text = req.fields.input || req.fields.product || req.fields.attributes || Object.values(req.fields)[0] || "";
  return text.length > 90 ? text.slice(0, 90) + "…" : text;
}

// History entries: one per request, except a newsroom batch, which is one entry of its articles.
function entries(requests) {
  const out = [];
  const batches = new Map();
  for (const req of requests) {
    const batch = req.view === "newsroom" && req.fields.batch;
    if (batch && batches.has(batch)) { batches.get(batch).push(req); continue; }
    const group = [req];
    if (batch) batches.set(batch, group);
    out.push(group);
  }
  return out;
}

function historyItem(group) {
  const req = group[0];
  const item = W.el("li", "history-item");
  const when = new Date(req.created * 1000).toLocaleString(W.lang === "zh" ? "zh-CN" : "en");
  item.appendChild(W.el("strong", "", W.t("view_" + req.view) + " · " + req.task));
  item.appendChild(W.el("span", "hint", " " + when + " · " + (req.view === "newsroom"
    ? W.t("hist_articles", group.length) : W.t("hist_drafts", req.drafts.length))));
  item.appendChild(W.el("p", "preview", preview(req)));
  if (req.final) item.appendChild(W.el("p", "final", W.t("hist_final", req.final)));
  const open = W.el("button", "ghost open", W.t("hist_open"));
  open.type = "button";
  open.setAttribute("aria-label", W.t("hist_open_aria", preview(req) || req.task));
  open.addEventListener("click", () => reopen(group));
  item.appendChild(open);
  return item;
}

async function loadHistory() {
  const list = W.$("history-list");
  if (!W.studio.recording) { list.replaceChildren(W.el("li", "hint", W.t("recording_off"))); return; }
  try {
    const data = (await W.api("/v1/weaver/history?limit=200")).data;
    const groups = entries(data);
    list.replaceChildren(...(groups.length ? groups.map(historyItem) : [W.el("li", "hint", W.t("hist_empty"))]));
  } catch (e) {
    W.showError(e.message);
  }
}

function reopen(group) {
  const req = group[0];
  if (req.view === "newsroom") W.reopenNewsroom(group.slice().reverse());
  else if (req.view === "adcopy") {
    for (const [k, v] of Object.entries(req.fields)) if (W.$("ad-" + k)) W.$("ad-" + k).value = v;
    const cards = W.showAdCards(req.drafts.map((d) => ({ text: d.text })), false,
                                { id: req.id });
    cards.forEach((card, i) => { if (req.chosen === i) { card.classList.add("chosen"); card.setState("chosen"); } });
  } else if (req.view === "support") {
    W.$("sup-question").value = req.fields.input || "";
    W.showSupport({ reply: req.final || req.drafts[0].text, citations: [], passages: [] }, { id: req.id });
  } else W.reopenWrite(req);
  showView(req.view);
}

document.addEventListener("DOMContentLoaded", () => {
  let lang = "en";
  try { lang = localStorage.getItem("weaver-lang") || (navigator.language.startsWith("zh") ? "zh" : "en"); } catch (e) { /* default */ }
  W.applyLang(lang);
  W.$("lang").addEventListener("click", () => W.applyLang(W.lang === "zh" ? "en" : "zh"));
  for (const view of VIEWS) W.$("tab-" + view).addEventListener("click", () => showView(view));
  W.$("tabs").addEventListener("keydown", onTabKey);
  W.$("hist-refresh").addEventListener("click", loadHistory);
  W.initWrite();
  W.initApps();
  W.loadChoices();
});
