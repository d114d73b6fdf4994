// llmopt review page. Item text only ever reaches the DOM through textContent / value (never innerHTML).
"use strict";
const params = new URLSearchParams(location.search);
const TOKEN = params.get("token") || sessionStorage.getItem("llmopt-review-token") || "";
sessionStorage.setItem("llmopt-review-token", TOKEN);
const LIMIT = 50;
const state = { meta: null, items: [], total: 0, offset: 0, cur: 0, editing: null };
const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

async function api(path, body) {
  const opts = { headers: { "X-Review-Token": TOKEN } };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.detail || r.status);
  return data;
}

function toast(msg) {
  const t = $("toast");
  t.textContent = msg;
  t.style.display = "block";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.style.display = "none"), 4000);
}

function filters() {
  return { kind: $("f-kind").value, label: $("f-label").value, status: $("f-status").value };
}

function saveView() {
  localStorage.setItem("llmopt-review-view:" + state.meta.run_dir, JSON.stringify(filters()));
}

async function load(offset, focusFirstTodo) {
  const f = filters();
  const q = new URLSearchParams({ ...f, offset: String(offset), limit: String(LIMIT) });
  let data = await api("/api/items?" + q);
  if (focusFirstTodo && data.first_todo !== null && data.first_todo >= offset + LIMIT) {
    offset = Math.floor(data.first_todo / LIMIT) * LIMIT;  // resume: the page holding the first item to review
    q.set("offset", String(offset));
    data = await api("/api/items?" + q);
  }
  state.items = data.items;
  state.total = data.total;
  state.offset = offset;
  state.cur = 0;
  if (focusFirstTodo && data.first_todo !== null) state.cur = Math.max(0, data.first_todo - offset);
  await progress();
  render();
}

async function progress() {
  const m = await api("/api/meta");
  const s = m.summary;
  $("progress").textContent = `${s.reviewed} of ${s.items} reviewed`;
  $("bar").firstElementChild.style.width = (s.items ? (100 * s.reviewed) / s.items : 0) + "%";
}

function describeDecision(d) {
  if (!d) return "";
  let s = d.action;
  if (d.action === "relabel") s += " → " + d.label;
  if (d.action === "edit") s += "ed";
  return `${s} (by ${d.reviewer}, ${d.at.replace("T", " ").slice(0, 19)})`;
}

function card(it, i) {
  const c = el("div", "card" + (i === state.cur ? " current" : "") + (it.decision || it.pending ? " decided" : ""));
  c.dataset.id = it.id;
  c.dataset.index = String(i);
  const head = el("div", "meta");
  head.append(el("span", "kind", it.kind.replace("_", " ")));
  const bits = [];
  if (it.given_label !== null) bits.push("given: " + it.given_label);
  if (it.model_label !== null) bits.push("model: " + it.model_label + (it.confidence !== null ? ` (${(100 * it.confidence).toFixed(0)}%)` : ""));
  if (it.split) bits.push(it.split);
  bits.push(it.stage + " · " + it.source + " row " + (it.row + 1));
  head.append(document.createTextNode(bits.join(" · ")));
  c.append(head);
  if (it.prompt) c.append(el("div", "prompt", "prompt: " + it.prompt));
  if (state.editing === it.id) {
    const ta = el("textarea");
    ta.value = it.decision && it.decision.text ? it.decision.text : it.text;
    ta.id = "editor";
    ta.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); decide(it, "edit", { text: ta.value }); }
      if (ev.key === "Escape") { state.editing = null; render(); }
    });
    c.append(ta);
    const save = el("button", null, "save edit");
    save.onclick = () => decide(it, "edit", { text: ta.value });
    const cancel = el("button", null, "cancel");
    cancel.onclick = () => { state.editing = null; render(); };
    const row = el("div", "actions");
    row.append(save, cancel);
    c.append(row);
  } else {
    const shown = it.decision && it.decision.action === "edit" ? it.decision.text : it.text;
    c.append(el("div", "text", shown));
  }
  const ctx = it.context || {};
  const extra = [];
  if (ctx.original) extra.push("original: " + ctx.original);
  if (ctx.op) extra.push("op: " + ctx.op);
  if (ctx.why) extra.push(ctx.why + (ctx.model ? " (" + ctx.model + ")" : ""));
  if (ctx.labels) extra.push("labels in the duplicate group: " + Object.entries(ctx.labels).map(([k, v]) => `${k} ×${v}`).join(", "));
  if (ctx.members) extra.push("members: " + ctx.members.map((m) => `${m.id}: ${m.label}${m.text ? " — " + m.text : ""}`).join(" | "));
  if (ctx.predictions) {
    extra.push(`models wrong: ${ctx.models_wrong} — ` + Object.entries(ctx.predictions).map(([m, p]) =>
      `${m}: ${p.pred}${p.confidence !== null ? ` (${(100 * p.confidence).toFixed(0)}%)` : ""}`).join(", "));
  }
  if (ctx.rank) extra.push(`label-error rank ${ctx.rank}, P(given label) ${(100 * ctx.label_quality).toFixed(1)}%`);
  if (extra.length) c.append(el("div", "context", extra.join("\n")));
  if (it.decision) c.append(el("div", "decision" + (it.decision.action === "reject" ? " reject" : ""), "✓ " + describeDecision(it.decision)));
  if (state.editing !== it.id) {
    const row = el("div", "actions");
    const b = (label, fn) => { const x = el("button", null, label); x.onclick = (ev) => { ev.stopPropagation(); state.cur = i; fn(); }; row.append(x); };
    b("accept (a)", () => decide(it, "accept"));
    b("reject (x)", () => decide(it, "reject"));
    state.meta.labels.forEach((lab, k) => b(`${lab} (${k + 1})`, () => decide(it, "relabel", { label: lab })));
    b("edit (e)", () => startEdit(it));
    c.append(row);
  }
  c.addEventListener("click", () => { if (state.cur !== i) { state.cur = i; render(); } });
  return c;
}

function render() {
  const list = $("list");
  list.replaceChildren(...state.items.map(card));
  if (!state.items.length) list.append(el("p", null, "No items match these filters."));
  const pages = Math.max(1, Math.ceil(state.total / LIMIT));
  $("page").textContent = `page ${Math.floor(state.offset / LIMIT) + 1} of ${pages} (${state.total} items)`;
  $("prev").disabled = state.offset === 0;
  $("next").disabled = state.offset + LIMIT >= state.total;
  const cur = list.querySelector(".card.current");
  if (cur) cur.scrollIntoView({ block: "nearest" });
  const ed = $("editor");
  if (ed) ed.focus();
}

function startEdit(it) {
  state.editing = it.id;
  render();
}

// Decisions go out one at a time, in key-press order; the cursor moves on at once, so fast keys act on the next
// item, and each request carries the seq of the decision its item last had (`base`) to detect another tab.
let queue = Promise.resolve();

function decide(it, action, extra) {
  const idx = state.items.indexOf(it);
  state.editing = null;
  it.pending = true;
  const next = state.items.findIndex((x, k) => k > idx && !x.decision && !x.pending);
  if (next >= 0) state.cur = next;
  else if (idx < state.items.length - 1) state.cur = idx + 1;
  render();
  queue = queue.then(() => send(it, action, extra));
  return queue;
}

async function send(it, action, extra) {
  const body = { item_id: it.id, action, reviewer: $("reviewer").value || undefined,
                 base: it.decision ? it.decision.seq : 0, ...(extra || {}) };
  try {
    const d = await api("/api/decisions", body);
    if (d.conflict && d.previous) {
      toast(`Another tab had decided this item (${describeDecision(d.previous)}); both decisions are kept, yours is the latest.`);
    }
    it.decision = { seq: d.seq, action: d.action, label: d.label, text: d.text, reviewer: d.reviewer, at: d.at };
    $("progress").textContent = `${d.progress.reviewed} of ${d.progress.items} reviewed`;
    $("bar").firstElementChild.style.width = (100 * d.progress.reviewed) / d.progress.items + "%";
  } catch (e) {
    toast("Not saved: " + e.message);
    const k = state.items.indexOf(it);
    if (k >= 0) state.cur = k;  // back to the item that was not saved
  } finally {
    it.pending = false;
    render();
  }
}

document.addEventListener("keydown", (ev) => {
  const tag = (ev.target && ev.target.tagName) || "";
  if (["INPUT", "TEXTAREA", "SELECT"].includes(tag) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const it = state.items[state.cur];
  const move = (d) => { state.cur = Math.min(state.items.length - 1, Math.max(0, state.cur + d)); render(); };
  if (ev.key === "j" || ev.key === "ArrowDown") { ev.preventDefault(); move(1); }
  else if (ev.key === "k" || ev.key === "ArrowUp") { ev.preventDefault(); move(-1); }
  else if (!it) return;
  else if (ev.key === "a") decide(it, "accept");
  else if (ev.key === "x") decide(it, "reject");
  else if (ev.key === "e") { ev.preventDefault(); startEdit(it); }
  else if (/^[1-9]$/.test(ev.key) && state.meta.labels[Number(ev.key) - 1] !== undefined) {
    decide(it, "relabel", { label: state.meta.labels[Number(ev.key) - 1] });
  }
});

async function init() {
  state.meta = await api("/api/meta");
  $("run").textContent = "— " + state.meta.run_dir;
  for (const [k, n] of Object.entries(state.meta.kinds)) {
    const o = el("option", null, `${k.replace("_", " ")} (${n})`); o.value = k; $("f-kind").append(o);
  }
  for (const lab of state.meta.labels) { const o = el("option", null, lab); o.value = lab; $("f-label").append(o); }
  const saved = JSON.parse(localStorage.getItem("llmopt-review-view:" + state.meta.run_dir) || "{}");
  for (const k of ["kind", "label", "status"]) if (saved[k] !== undefined) $("f-" + k).value = saved[k];
  $("reviewer").value = localStorage.getItem("llmopt-reviewer") || state.meta.reviewer;
  $("reviewer").addEventListener("change", () => localStorage.setItem("llmopt-reviewer", $("reviewer").value));
  for (const k of ["kind", "label", "status"]) $("f-" + k).addEventListener("change", () => { saveView(); load(0, true); });
  $("prev").onclick = () => load(Math.max(0, state.offset - LIMIT), false);
  $("next").onclick = () => load(state.offset + LIMIT, false);
  await load(0, true);
}

init().catch((e) => { $("progress").textContent = "error: " + e.message; });
