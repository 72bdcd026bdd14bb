// The NLA explorer's core: the API call, the router (the view and its settings live in the URL's #fragment, so a
// link reproduces a view), the header, and small DOM helpers the views share (overview.js, browse.js, compare.js,
// strip.js). Plain JS, no build step, no CDN. Everything from the server is inserted as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const NLA = { limits: null, lake: null, views: {}, current: null };  // lake: the last overview (recipes, columns)

// ---- API ---------------------------------------------------------------------------------------------------------
(function tokenFromFragment() {  // open http://host:port/#token=... once: kept in localStorage, never sent in a URL
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    localStorage.setItem("nla_token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
})();

async function api(path, body) {
  const headers = { "Content-Type": "application/json" };
  const token = localStorage.getItem("nla_token");
  if (token) headers["Authorization"] = "Bearer " + token;
  const res = await fetch(path, body === undefined ? { headers } :
    { method: "POST", headers, body: JSON.stringify(body) });
  const data = await res.json().catch(() => ({ error: res.statusText }));
  if (res.status === 401) $("auth").hidden = false;
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

// ---- helpers -----------------------------------------------------------------------------------------------------
function say(el, message, isError) {
  el.textContent = message;
  el.classList.toggle("error", !!isError);
}

const fmt = (x, digits = 3) => (x === null || x === undefined ? "–" :
  typeof x === "number" ? x.toFixed(digits) : String(x));
const int = (x) => (x === null || x === undefined ? "–" : Number(x).toLocaleString("en-US"));
const tail = (s, n) => (s && s.length > n ? "…" + s.slice(-n) : s || "");
const oneLine = (s) => (s || "").replace(/\s*\n\s*\n\s*/g, " · ");  // features, most important first
const short = (h) => (h ? h.slice(0, 8) : "(none)");
const when = (iso) => (iso ? iso.replace("T", " ").slice(0, 19) + " UTC" : "–");
function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

// mse 0 (perfect) green -> 1 amber -> 2 (orthogonal) red; the same scale everywhere a score is coloured
function mseColour(mse) {
  if (mse === null || mse === undefined) return "";
  const hue = 130 * (1 - Math.min(Math.max(mse, 0), 2) / 2);
  return `hsl(${hue.toFixed(0)} 70% 82%)`;
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k in e && typeof v !== "string") e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// columns: [label, row => value or Node, kind ("num" | "text" | "node")]
function table(t, rows, columns, caption) {
  t.replaceChildren();
  if (caption) t.createCaption().textContent = caption;
  if (!rows.length) return t;
  const head = t.createTHead().insertRow();
  for (const [label] of columns) head.appendChild(el("th", { scope: "col", text: label }));
  const body = t.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const [, get, kind] of columns) {
      const td = tr.insertCell();
      td.className = kind || "text";
      const v = get(row);
      if (v instanceof Node) td.append(v);
      else td.textContent = kind === "num" ? fmt(v) : v ?? "";
    }
  }
  return t;
}

function mseCell(mse) {
  const s = el("span", { class: "score", text: fmt(mse) });
  s.style.background = mseColour(mse);
  return s;
}

function badges(row) {  // status (when not ok) and quality flags (a lake row's, or the ones a live result gets from itself)
  const box = el("span", { class: "badges" });
  if (row.status && row.status !== "ok") box.append(el("span", { class: "badge bad", text: row.status }));
  for (const f of row.flags || []) box.append(el("span", { class: "badge", text: f }));
  return box;
}

// the context (the detokenised text up to and including the token) with the token marked; n: characters kept
function contextWithToken(context, token, n) {
  const text = context || "";
  const tok = token || "";
  const before = tok && text.endsWith(tok) ? text.slice(0, text.length - tok.length) : text + (tok ? " " : "");
  return el("span", { class: "context" }, n ? tail(before, n) : before, el("mark", { text: tok }));
}

function docLink(actId, label = "context") {
  return el("a", { href: "#/doc?act_id=" + encodeURIComponent(actId), text: label,
                   "aria-label": `open the document of activation ${actId.slice(0, 10)}` });
}

// ---- router ------------------------------------------------------------------------------------------------------
function parseHash() {
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  return { view: path || "overview", params: new URLSearchParams(query || "") };
}

function go(view, params) {  // a new URL for the view; the hashchange handler loads it (one request)
  const q = params ? new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== null &&
                                                                         v !== undefined)).toString() : "";
  const hash = `#/${view}${q ? "?" + q : ""}`;
  if (location.hash === hash) route(); else location.hash = hash;
}

function route() {
  const { view, params } = parseHash();
  const known = NLA.views[view] ? view : "overview";
  const section = NLA.views[known].section;
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== section;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.view === NLA.views[known].tab) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (NLA.current && NLA.current !== known && NLA.views[NLA.current].leave) NLA.views[NLA.current].leave();
  NLA.current = known;
  NLA.views[known].show(params);
}

// ---- header ------------------------------------------------------------------------------------------------------
async function loadModels() {
  try {
    const m = await api("/v1/models");
    NLA.limits = m.limits;
    const tables = Object.keys(m.lake.tables || {}).length;
    say($("models"), `AV ${m.av.id} · AR ${m.ar ? m.ar.id : "none"} · layer ${m.layer} · d ${m.d_model} · ` +
        `lake ${m.lake.root} (${tables} tables)`);
  } catch (e) {
    say($("models"), e.message, true);
  }
}

$("auth").addEventListener("submit", (ev) => {
  ev.preventDefault();
  localStorage.setItem("nla_token", $("token").value);
  $("auth").hidden = true;
  loadModels();
  route();
});

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  loadModels();
  route();
});
