// Weaver's writer's desk: choose a model and a task, paste text, watch N drafts stream in, copy or edit them.
// Talks only to this server (/v1/models, /v1/weaver/tasks, /v1/weaver/{task} with stream=true).
// Generated text is inserted with textContent only, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let tasks = [];
let models = [];
let controller = null;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function errorMessage(response) {
  let detail = response.statusText;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) detail = body.error.message;
  } catch (e) { /* not JSON: keep the status text */ }
  return "Error " + response.status + ": " + detail;
}

async function getJSON(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.json();
}

function fillSelect(select, items, label) {
  select.replaceChildren();
  for (const item of items) {
    const option = document.createElement("option");
    option.value = item.id;
    option.textContent = label(item);
    select.appendChild(option);
  }
}

function renderFields() {
  const task = tasks.find((t) => t.name === $("task").value);
  const box = $("fields");
  const old = {};
  for (const area of box.querySelectorAll("textarea")) old[area.dataset.field] = area.value;
  box.replaceChildren();
  if (!task) return;
  $("task-description").textContent = task.description;
  for (const name of task.fields) {
    const label = document.createElement("label");
    label.textContent = name.replace(/_/g, " ");
    const area = document.createElement("textarea");
    area.id = "field-" + name;
    area.dataset.field = name;
    area.value = old[name] || "";
    label.appendChild(area);
    box.appendChild(label);
  }
}

function onModelChange() {
  const model = models.find((m) => m.id === $("model").value);
  const task = model && model.weaver && model.weaver.task;
  if (task && tasks.some((t) => t.name === task)) {
    $("task").value = task;
    renderFields();
  }
}

async function loadChoices() {
  clearError();
  try {
    models = (await getJSON("/v1/models")).data;
    tasks = (await getJSON("/v1/weaver/tasks")).data;
  } catch (e) {
    showError(e.message + (e.message.startsWith("Error 401") ? " — enter the server's API key above." : ""));
    return;
  }
  fillSelect($("model"), models, (m) => m.id + (m.weaver && m.weaver.task ? " (tuned: " + m.weaver.task + ")" : ""));
  fillSelect($("task"), tasks.map((t) => ({ id: t.name })), (t) => t.id);
  renderFields();
  onModelChange();
}

function makeCards(n) {
  const list = $("candidates");
  list.replaceChildren();
  const cards = [];
  for (let i = 0; i < n; i++) {
    const card = $("candidate-template").content.firstElementChild.cloneNode(true);
    card.querySelector(".label").textContent = "Draft " + (i + 1);
    card.querySelector(".state").textContent = "writing…";
    const text = card.querySelector(".text");
    text.dataset.chunks = "0";
    card.querySelector(".copy").addEventListener("click", () => copyText(card));
    list.appendChild(card);
    cards.push({ card, text });
  }
  return cards;
}

async function copyText(card) {
  const text = card.querySelector(".text").textContent;
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
  card.querySelector(".state").textContent = "copied";
}

function handleEvent(data, cards) {
  if (data.error) {
    showError("Error: " + data.error.message);
    return;
  }
  for (const choice of data.choices || []) {
    const target = cards[choice.index];
    if (!target) continue;
    const piece = choice.delta && choice.delta.content;
    if (piece) {
      target.text.textContent += piece;
      target.text.dataset.chunks = String(Number(target.text.dataset.chunks) + 1);
    }
    if (choice.finish_reason) {
      target.card.querySelector(".state").textContent = choice.finish_reason === "length" ? "done (length limit)" : "done";
    }
  }
}

async function readStream(response, cards) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const payload = line.slice(6);
        if (payload === "[DONE]") return;
        handleEvent(JSON.parse(payload), cards);
      }
    }
  }
}

function requestBody() {
  const body = { model: $("model").value, stream: true, n: Number($("n").value) || 1 };
  const temperature = $("temperature").value;
  if (temperature !== "") body.temperature = Number(temperature);
  const maxTokens = $("max-tokens").value;
  if (maxTokens !== "") body.max_tokens = Number(maxTokens);
  for (const area of $("fields").querySelectorAll("textarea")) body[area.dataset.field] = area.value;
  return body;
}

async function write(event) {
  event.preventDefault();
  clearError();
  if (!tasks.length) await loadChoices();
  if (!tasks.length) return;
  const body = requestBody();
  const cards = makeCards(body.n);
  controller = new AbortController();
  $("write").disabled = true;
  $("stop").disabled = false;
  $("status").textContent = "Writing " + body.n + " draft(s)…";
  try {
    const response = await fetch("/v1/weaver/" + encodeURIComponent($("task").value), {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
    });
    if (!response.ok) {
      showError(await errorMessage(response));
      $("candidates").replaceChildren();
      $("status").textContent = "";
      return;
    }
    await readStream(response, cards);
    $("status").textContent = "Done. Edit a draft in place, or copy it.";
  } catch (e) {
    if (e.name === "AbortError") $("status").textContent = "Stopped.";
    else showError("Error: " + e.message);
  } finally {
    $("write").disabled = false;
    $("stop").disabled = true;
    controller = null;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("form").addEventListener("submit", write);
  $("stop").addEventListener("click", () => controller && controller.abort());
  $("task").addEventListener("change", renderFields);
  $("model").addEventListener("change", onModelChange);
  $("api-key").addEventListener("change", loadChoices);
  loadChoices();
});
