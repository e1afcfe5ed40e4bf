// Weaver studio, Write view: task fields from /v1/weaver/tasks, N drafts streamed side by side from
// /v1/weaver/{task}; blind compare streams the tuned model and its base together and shuffles their cards.
"use strict";

W.tasks = [];
W.models = [];
let controller = null;

function fillSelect(select, items, label) {
  select.replaceChildren();
  for (const item of items) {
    const option = document.createElement("option");
    option.value = item.id;
    option.textContent = label(item);
    select.appendChild(option);
  }
}

W.renderFields = function (values) {
  const task = W.tasks.find((t) => t.name === W.$("task").value);
  const box = W.$("fields");
  const old = values || {};
  if (!values) for (const area of box.querySelectorAll("textarea")) old[area.dataset.field] = area.value;
  box.replaceChildren();
  if (!task) return;
  W.$("task-description").textContent = task.description;
  for (const name of task.fields) {
    const label = W.el("label", "", name.replace(/_/g, " "));
    const area = document.createElement("textarea");
    area.id = "field-" + name;
    area.dataset.field = name;
    area.value = old[name] || "";
    label.appendChild(area);
    box.appendChild(label);
  }
};

function onModelChange() {
  const model = W.models.find((m) => m.id === W.$("model").value);
  const task = model && model.weaver && model.weaver.task;
  if (task && W.tasks.some((t) => t.name === task)) {
    W.$("task").value = task;
    W.renderFields();
  }
}

W.loadChoices = async function () {
  W.clearError();
  try {
    W.models = (await W.api("/v1/models")).data;
    W.tasks = (await W.api("/v1/weaver/tasks")).data;
    Object.assign(W.studio, await W.api("/v1/weaver/studio"));
  } catch (e) {
    W.showError(e.message + (e.message.includes(" 401") || e.message.includes("401") ? W.t("key_hint") : ""));
    return;
  }
  fillSelect(W.$("model"), W.models, (m) => m.id + (m.weaver && m.weaver.task ? " (tuned: " + m.weaver.task + ")" : ""));
  fillSelect(W.$("task"), W.tasks.map((t) => ({ id: t.name })), (t) => t.id);
  W.renderFields();
  onModelChange();
  W.$("tab-support").hidden = !W.studio.support;
  if (!W.studio.recording) W.status("recording_off");
};

function fields() {
  const out = {};
  for (const area of W.$("fields").querySelectorAll("textarea")) out[area.dataset.field] = area.value;
  return out;
}

function requestBody(model, n) {
  const body = { model, stream: true, n, ...fields() };
  const temperature = W.$("temperature").value;
  if (temperature !== "") body.temperature = Number(temperature);
  const maxTokens = W.$("max-tokens").value;
  if (maxTokens !== "") body.max_tokens = Number(maxTokens);
  return body;
}

// Stream one /v1/weaver/{task} request; slots[i] is the card of choice i. Throws the server's message.
async function stream(task, body, slots, signal) {
  const response = await fetch("/v1/weaver/" + encodeURIComponent(task), {
    method: "POST", headers: W.headers(), body: JSON.stringify(body), signal,
  });
  if (!response.ok) throw new Error(await W.errorMessage(response));
  await W.readStream(response, (data) => {
    if (data.error) throw new Error(W.t("error") + ": " + data.error.message);
    for (const choice of data.choices || []) {
      const card = slots[choice.index];
      if (!card) continue;
      const piece = choice.delta && choice.delta.content;
      if (piece) {
        card.textBox.textContent += piece;
        card.textBox.dataset.chunks = String(Number(card.textBox.dataset.chunks) + 1);
      }
      if (choice.finish_reason) card.setState(choice.finish_reason === "length" ? "done_length" : "done");
    }
  });
}

function shuffle(items) {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

function cardOptions(blind) {
  return {
    label: (card) => W.t("draft", card.dataset.n),
    onRegen: regenerate,
    sources: fields,
    onChoose: (card) => {
      if (!blind) return;
      for (const other of W.$("candidates").querySelectorAll(".candidate")) { other.revealed = true; other.label(); }
    },
  };
}

// The plan of a request: which models write how many drafts, and the cards' order.
function plan(n, blind) {
  const tuned = W.$("model").value;
  if (!blind) return [{ model: tuned, n }];
  const base = W.studio.base_model;
  if (!base || base === tuned) throw new Error(W.t("no_base"));
  const half = Math.max(1, Math.floor(n / 2));
  return [{ model: tuned, n: Math.max(1, n - half) }, { model: base, n: half }];
}

W.showDrafts = function (cards, blind) {
  W.$("candidates").replaceChildren(...cards);
  cards.forEach((card, i) => { card.dataset.n = String(i + 1); card.label(); });
  W.$("candidates").dataset.blind = blind ? "1" : "0";
};

async function write(event) {
  event.preventDefault();
  W.clearError();
  if (!W.tasks.length) await W.loadChoices();
  if (!W.tasks.length) return;
  const task = W.$("task").value;
  const blind = W.$("blind").checked;
  const n = Math.min(8, Math.max(1, Number(W.$("n").value) || 1));
  let parts;
  try { parts = plan(n, blind); } catch (e) { W.showError(e.message); return; }
  const opts = cardOptions(blind);
  const groups = parts.map((p) => Array.from({ length: p.n }, () => {
    const card = W.makeCard(1, opts);
    card.model = p.model;
    card.setState("writing");
    return card;
  }));
  const cards = blind ? shuffle(groups.flat()) : groups.flat();
  W.showDrafts(cards, blind);
  controller = new AbortController();
  W.$("write").disabled = true;
  W.$("stop").disabled = false;
  W.status("status_writing", n);
  try {
    await Promise.all(parts.map((p, i) => stream(task, requestBody(p.model, p.n), groups[i], controller.signal)));
    if (blind) W.status("status_blind", parts[0].model, parts[1].model);
    else W.status("status_done");
    const stored = await W.record({
      type: "request", view: "write", task, model: parts[0].model, fields: fields(), blind,
      drafts: cards.map((c) => ({ text: c.textBox.textContent, model: c.model })),
    });
    W.bindCards(cards, stored);
  } catch (e) {
    if (e.name === "AbortError") W.status("status_stopped");
    else {
      W.showError(e.message.startsWith(W.t("error")) ? e.message : W.t("error") + ": " + e.message);
      W.$("candidates").replaceChildren();
      W.status("");
    }
  } finally {
    W.$("write").disabled = false;
    W.$("stop").disabled = true;
    controller = null;
  }
}

// Regenerate one draft: stream n=1 from the same model into the card, then record it as a new draft of the
// request (the old one stays as a draft the writer did not keep).
async function regenerate(card) {
  W.clearError();
  card.textBox.textContent = "";
  card.textBox.dataset.chunks = "0";
  card.setState("writing");
  try {
    await stream(W.$("task").value, requestBody(card.model, 1), [card]);
  } catch (e) {
    W.showError(e.message);
    return;
  }
  if (!card.rec.id) return;
  const stored = await W.record({ type: "draft", request_id: card.rec.id, text: card.textBox.textContent, model: card.model });
  if (stored) card.rec = { id: stored.id, index: stored.draft, saved: card.textBox.textContent };
}

// Reopen a stored write request: its task, fields and drafts, still bound to it.
W.reopenWrite = function (req) {
  W.$("task").value = req.task;
  if (req.model && W.models.some((m) => m.id === req.model)) W.$("model").value = req.model;
  W.renderFields(req.fields);
  const opts = cardOptions(req.blind);
  const cards = req.drafts.map((d) => {
    const card = W.makeCard(1, opts);
    card.model = d.model;
    card.textBox.textContent = req.events.filter((e) => e.kind === "edit" && e.draft === d.index).map((e) => e.text).pop() || d.text;
    card.rec = { id: req.id, index: d.index, saved: card.textBox.textContent };
    if (req.chosen === d.index) { card.classList.add("chosen"); card.setState("chosen"); }
    if (req.thumbs_down.includes(d.index)) card.classList.add("down-voted");
    return card;
  });
  W.showDrafts(cards, req.blind);
};

W.initWrite = function () {
  W.$("form").addEventListener("submit", write);
  W.$("form").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); W.$("write").click(); }
  });
  W.$("stop").addEventListener("click", () => controller && controller.abort());
  W.$("task").addEventListener("change", () => W.renderFields());
  W.$("model").addEventListener("change", onModelChange);
  W.$("api-key").addEventListener("change", W.loadChoices);
};
