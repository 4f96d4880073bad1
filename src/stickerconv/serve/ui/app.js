// StickerConv web chat: talks to this server's OpenAI-compatible API (docs/serving.md).
// The conversation is kept here as OpenAI messages and sent whole with every request; the
// assistant's sticker arrives as a send_sticker tool call and goes back in the history unchanged.
"use strict";

const MAX_UPLOAD_BYTES = 2 * 1024 * 1024;
const state = { model: null, messages: [], attachment: null, busy: false, searchTimer: null };
const $ = (id) => document.getElementById(id);

function apiKey() {
  return $("api-key").value.trim();
}

async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json" };
  if (apiKey()) headers.Authorization = "Bearer " + apiKey();
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new Error((body && body.error && body.error.message) || `HTTP ${response.status}`);
  }
  return body;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function loadModel() {
  try {
    const data = await api("v1/models");
    state.model = data.data[0].id;
    $("model").textContent = state.model;
    setStatus("");
  } catch (error) {
    $("model").textContent = "not connected";
    setStatus(error.message, true);
  }
}

function stickerOf(message) {
  for (const call of message.tool_calls || []) {
    if (call.function && call.function.name === "send_sticker") {
      try {
        return JSON.parse(call.function.arguments);
      } catch (error) {
        return null;
      }
    }
  }
  return null;
}

function render(role, text, imageUrl, title) {
  const bubble = document.createElement("div");
  bubble.className = `msg ${role}`;
  if (text) {
    const p = document.createElement("p");
    p.textContent = text;
    bubble.append(p);
  }
  if (imageUrl) {
    const img = document.createElement("img");
    img.className = "sticker";
    img.src = imageUrl;
    img.alt = title || "sticker";
    img.title = title || "";
    bubble.append(img);
  }
  $("log").append(bubble);
  bubble.scrollIntoView({ block: "end" });
  return bubble;
}

function setAttachment(attachment) {
  state.attachment = attachment;
  $("attachment").hidden = !attachment;
  $("attachment-img").src = attachment ? attachment.url : "";
  $("attachment-img").title = attachment ? attachment.title : "";
}

function setBusy(busy) {
  state.busy = busy;
  $("send").disabled = busy;
  if (busy) setStatus("typing…");
}

async function send(event) {
  event.preventDefault();
  const text = $("message").value.trim();
  const attachment = state.attachment;
  if (state.busy || (!text && !attachment)) return;
  if (!state.model) await loadModel();
  if (!state.model) return;
  const content = [];
  if (text) content.push({ type: "text", text });
  if (attachment) content.push({ type: "image_url", image_url: { url: attachment.url } });
  state.messages.push({ role: "user", content });
  const bubble = render("user", text, attachment && attachment.url, attachment && attachment.title);
  $("message").value = "";
  setAttachment(null);
  setBusy(true);
  try {
    const data = await api("v1/chat/completions", {
      method: "POST",
      body: JSON.stringify({ model: state.model, messages: state.messages }),
    });
    const message = data.choices[0].message;
    const kept = { role: "assistant", content: message.content };
    if (message.tool_calls) kept.tool_calls = message.tool_calls;
    state.messages.push(kept);
    const sticker = stickerOf(message);
    render("assistant", message.content, sticker && sticker.url, sticker && sticker.description);
    setStatus("");
  } catch (error) {
    state.messages.pop();
    bubble.classList.add("failed");
    setStatus(error.message, true);
  } finally {
    setBusy(false);
    $("message").focus();
  }
}

async function search() {
  const query = $("sticker-search").value.trim();
  try {
    const data = await api(`v1/stickers/search?k=24&q=${encodeURIComponent(query)}`);
    const results = $("sticker-results");
    results.replaceChildren();
    for (const hit of data.data) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "picker-item";
      button.title = hit.description;
      button.dataset.stickerId = hit.sticker_id;
      const img = document.createElement("img");
      img.src = hit.url;
      img.alt = hit.description;
      button.append(img);
      button.addEventListener("click", () => {
        setAttachment({ url: hit.url, title: hit.description });
        $("picker").hidden = true;
        $("message").focus();
      });
      results.append(button);
    }
    if (!data.data.length) results.textContent = "No stickers found.";
  } catch (error) {
    $("sticker-results").textContent = error.message;
  }
}

function togglePicker() {
  const picker = $("picker");
  picker.hidden = !picker.hidden;
  if (!picker.hidden) {
    search();
    $("sticker-search").focus();
  }
}

function upload() {
  const file = $("upload").files[0];
  $("upload").value = "";
  if (!file) return;
  if (file.size > MAX_UPLOAD_BYTES) {
    setStatus(`${file.name} is larger than 2 MB`, true);
    return;
  }
  const reader = new FileReader();
  reader.onload = () => setAttachment({ url: reader.result, title: file.name });
  reader.readAsDataURL(file);
}

function newChat() {
  state.messages = [];
  $("log").replaceChildren();
  setStatus("");
}

$("composer").addEventListener("submit", send);
$("sticker-button").addEventListener("click", togglePicker);
$("sticker-search").addEventListener("input", () => {
  clearTimeout(state.searchTimer);
  state.searchTimer = setTimeout(search, 250);
});
$("upload").addEventListener("change", upload);
$("attachment-remove").addEventListener("click", () => setAttachment(null));
$("new-chat").addEventListener("click", newChat);
$("api-key").value = localStorage.getItem("stickerconv-api-key") || "";
$("api-key").addEventListener("change", () => {
  localStorage.setItem("stickerconv-api-key", apiKey());
  loadModel();
});
loadModel();
