// Weaver studio: helpers every view shares — requests to this server (/v1/... only), errors shown in words,
// the SSE reader, the feedback recorder and draft cards. Model text goes into the page with textContent only.
"use strict";

W.$ = (id) => document.getElementById(id);
W.studio = { recording: true, support: false, base_model: null };

W.headers = function () {
  const h = { "Content-Type": "application/json" };
  const key = W.$("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
};

W.showError = function (message) {
  const box = W.$("error");
  box.textContent = message;
  box.hidden = false;
};

W.clearError = function () {
  W.$("error").hidden = true;
  W.$("error").textContent = "";
};

// The status line: a string key and its arguments, so a language switch can say it again.
W.status = function (key, ...args) {
  W.lastStatus = [key, args];
  W.$("status").textContent = key ? W.t(key, ...args) : "";
};
document.addEventListener("weaver-lang", () => { if (W.lastStatus) W.status(W.lastStatus[0], ...W.lastStatus[1]); });

W.errorMessage = async function (response) {
  let detail = response.statusText;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) detail = body.error.message;
  } catch (e) { /* not JSON: keep the status text */ }
  return W.t("error_status", response.status, detail);
};

// JSON from GET (body undefined) or POST; throws an Error whose message is the server's sentence.
W.api = async function (path, body, signal) {
  const init = { headers: W.headers(), signal };
  if (body !== undefined) { init.method = "POST"; init.body = JSON.stringify(body); }
  const response = await fetch(path, init);
  if (!response.ok) throw new Error(await W.errorMessage(response));
  return response.json();
};

// Read an OpenAI SSE stream, calling onData(parsed event) per data line until [DONE].
W.readStream = async function (response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const payload = line.slice(6);
        if (payload === "[DONE]") return;
        onData(JSON.parse(payload));
      }
    }
  }
};

// POST /v1/weaver/feedback; returns the stored request, or null when the server keeps nothing or refused it.
W.record = async function (body) {
  if (!W.studio.recording) return null;
  try {
    return await W.api("/v1/weaver/feedback", body);
  } catch (e) {
    W.status("record_failed", e.message);
    return null;
  }
};

W.copy = async function (text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
};

W.el = function (tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};

// A draft card bound to a recorded request: choose, edit in place, copy, thumbs down; regenerate when given.
// card.rec = {id: request id or null, index: draft index}; opts.onRegen(card) streams a new draft into it.
W.makeCard = function (number, opts) {
  const card = W.$("card-template").content.firstElementChild.cloneNode(true);
  W.translate(card);
  card.rec = { id: null, index: number - 1, saved: "" };
  card.dataset.n = String(number);
  card.textBox = card.querySelector(".text");
  card.textBox.dataset.chunks = "0";
  card.setState = (key) => { card.querySelector(".state").textContent = key ? W.t(key) : ""; card.stateKey = key; };
  card.label = () => {
    card.querySelector(".label").textContent = opts.label ? opts.label(card) : W.t("draft", number);
    card.querySelector(".choose").setAttribute("aria-label", W.t("choose_aria", number));
    card.querySelector(".copy").setAttribute("aria-label", W.t("copy_aria", number));
    card.querySelector(".regen").setAttribute("aria-label", W.t("regen_aria", number));
    card.querySelector(".down").setAttribute("aria-label", W.t("down_aria", number));
    card.querySelector(".sources").setAttribute("aria-label", W.t("sources_aria", number));
    card.textBox.setAttribute("aria-label", W.t("edit_aria", number));
    if (card.revealed) {
      const base = card.model === W.studio.base_model;
      card.querySelector(".who").textContent = W.t("written_by", card.model + (base ? " (" + W.t("base") + ")" : ""));
    }
    if (card.stateKey) card.setState(card.stateKey);
  };
  card.label();
  card.querySelector(".copy").addEventListener("click", async () => {
    await W.copy(card.textBox.textContent);
    card.setState("copied");
  });
  card.querySelector(".choose").addEventListener("click", () => W.chooseCard(card, opts));
  card.querySelector(".down").addEventListener("click", async () => {
    card.querySelector(".down").setAttribute("aria-pressed", "true");
    card.classList.add("down-voted");
    card.setState("rejected");
    if (card.rec.id) await W.record({ type: "event", request_id: card.rec.id, kind: "thumbs_down", draft: card.rec.index });
  });
  card.textBox.addEventListener("blur", () => W.saveEdit(card));
  const regen = card.querySelector(".regen");
  if (opts.onRegen) regen.addEventListener("click", () => opts.onRegen(card));
  else regen.remove();
  const sources = card.querySelector(".sources");
  if (opts.sources) sources.addEventListener("click", () => W.toggleSources(card, opts.sources()));
  else sources.remove();
  document.addEventListener("weaver-lang", card.label);
  return card;
};

W.chooseCard = async function (card, opts) {
  for (const other of card.parentElement.querySelectorAll(".candidate")) {
    other.classList.remove("chosen");
    other.querySelector(".choose").setAttribute("aria-pressed", "false");
  }
  card.classList.add("chosen");
  card.querySelector(".choose").setAttribute("aria-pressed", "true");
  card.setState("chosen");
  if (opts.onChoose) opts.onChoose(card);
  if (!card.rec.id) return;
  await W.record({ type: "event", request_id: card.rec.id, kind: "choose", draft: card.rec.index });
};

// An edit is recorded when the writer leaves a draft whose text differs from what was last kept.
W.saveEdit = async function (card) {
  const text = card.textBox.textContent;
  if (!card.rec.id || !text.trim() || text === card.rec.saved) return;
  card.rec.saved = text;
  const before = card.stateKey;
  const stored = await W.record({ type: "event", request_id: card.rec.id, kind: "edit", draft: card.rec.index, text });
  if (stored && card.stateKey === before) card.setState("saved");  // a later action (copied) keeps its word
};

// Bind cards to the request the server stored (drafts in card order).
W.bindCards = function (cards, stored) {
  if (!stored) return;
  cards.forEach((card, i) => { card.rec = { id: stored.id, index: i, saved: card.textBox.textContent }; });
};

// The Sources panel of a draft (POST /v1/weaver/explain on its current text): the input fields as text, and
// the draft's sentences; pointing at (or focusing) a sentence marks the input sentences that support it, an
// unsupported one is flagged with the names/numbers the input lacks. Built with text nodes only.
W.toggleSources = async function (card, documents) {
  const panel = card.querySelector(".explain");
  const button = card.querySelector(".sources");
  if (!panel.hidden) { panel.hidden = true; button.setAttribute("aria-expanded", "false"); return; }
  const docs = Object.fromEntries(Object.entries(documents).filter(([, text]) => text.trim()));
  const text = card.textBox.textContent;
  if (!text.trim() || !Object.keys(docs).length) return;
  let result;
  try {
    result = await W.api("/v1/weaver/explain", { text, sources: docs });
  } catch (e) { W.showError(e.message); return; }
  const blocks = {};
  const source = W.el("div", "explain-source");
  for (const [name, body] of Object.entries(docs)) {
    const block = W.el("p", "src", body);
    block.dataset.field = name;
    blocks[name] = block;
    source.append(W.el("span", "hint", name), block);
  }
  const mark = (entry) => {
    for (const [name, block] of Object.entries(blocks)) {
      const body = docs[name];
      const spans = entry ? entry.sources.filter((s) => s.field === name).sort((a, b) => a.start - b.start) : [];
      const parts = [];
      let at = 0;
      for (const s of spans) {
        if (s.start < at) continue;
        parts.push(document.createTextNode(body.slice(at, s.start)), W.el("mark", null, body.slice(s.start, s.end)));
        at = s.end;
      }
      parts.push(document.createTextNode(body.slice(at)));
      block.replaceChildren(...parts);
    }
  };
  const list = W.el("p", "explain-output");
  for (const entry of result.explanation) {
    const sentence = W.el("span", "sent " + (entry.supported ? "supported" : "unsupported"), entry.sentence);
    sentence.tabIndex = 0;
    const notes = entry.supported ? [] : [W.t("unsupported")];
    if (entry.unsupported_entities.length) notes.push(W.t("invented", entry.unsupported_entities.join(", ")));
    if (notes.length) sentence.title = notes.join("; ");
    for (const on of ["mouseenter", "focus"]) sentence.addEventListener(on, () => mark(entry));
    for (const off of ["mouseleave", "blur"]) sentence.addEventListener(off, () => mark(null));
    list.append(sentence, document.createTextNode(" "));
  }
  panel.replaceChildren(W.el("p", "hint", W.t("explain_hint")), list, source);
  panel.hidden = false;
  button.setAttribute("aria-expanded", "true");
};
