// The NLA explorer page: plain JS against the same HTTP API as every other client (no build step, no CDN).
// Everything from the server is inserted as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { text: "", limits: null };

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

function say(el, message, isError) {
  el.textContent = message;
  el.classList.toggle("error", !!isError);
}

const fmt = (x) => (x === null || x === undefined ? "–" : typeof x === "number" ? x.toFixed(3) : String(x));
const tail = (s, n) => (s && s.length > n ? "…" + s.slice(-n) : s || "");

function table(el, rows, columns) {
  el.replaceChildren();
  if (!rows.length) return;
  const head = el.createTHead().insertRow();
  for (const [label] of columns) head.appendChild(document.createElement("th")).textContent = label;
  const body = el.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const [, get, kind] of columns) {
      const td = tr.insertCell();
      td.className = kind || "text";
      td.textContent = kind === "num" ? fmt(get(row)) : get(row) ?? "";
    }
  }
}

const oneLine = (s) => (s || "").replace(/\s*\n\s*\n\s*/g, " · ");  // features, most important first
const LABEL_COLUMNS = [
  ["mse", (r) => r.mse, "num"], ["cos", (r) => r.cos, "num"],
  ["context (end)", (r) => tail(r.context, 60)], ["explanation", (r) => oneLine(r.explanation)],
];

// ---- header ------------------------------------------------------------------------------------------------------
async function loadModels() {
  try {
    const m = await api("/v1/models");
    state.limits = m.limits;
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
});

// ---- explain a text ----------------------------------------------------------------------------------------------
async function tokenize() {
  state.text = $("text").value;
  $("detail").hidden = true;
  say($("text-status"), "tokenizing…");
  try {
    const got = await api("/v1/extract", { text: state.text, positions: [] });
    const strip = $("strip");
    strip.replaceChildren();
    for (const t of got.tokens) {
      const span = strip.appendChild(document.createElement("span"));
      span.className = "tok" + (t.special ? " special" : "");
      span.textContent = t.token;
      span.dataset.pos = t.position;
      span.title = `position ${t.position}, id ${t.token_id}`;
      if (!t.special) span.addEventListener("click", () => explainToken(span, t));
    }
    say($("text-status"), `${got.tokens.length} tokens${got.truncated ? " (cut to the server's limit)" : ""}: ` +
        "click one");
  } catch (e) {
    say($("text-status"), e.message, true);
  }
}

async function explainToken(span, tok) {
  for (const s of document.querySelectorAll(".tok.selected")) s.classList.remove("selected");
  span.classList.add("selected");
  $("detail").hidden = false;
  $("detail-title").textContent = `Token ${JSON.stringify(tok.token)} at position ${tok.position}`;
  $("scores").replaceChildren();
  say($("explanation"), "explaining…");
  $("nearest").replaceChildren();
  say($("nearest-status"), "");
  let result;
  try {
    const maxNew = Math.min(200, state.limits ? state.limits.max_new_tokens : 200);
    const got = await api("/v1/explain", { text: state.text, positions: [tok.position], temperature: 0,
                                          max_new_tokens: maxNew, return_vectors: true, encoding: "base64" });
    result = got.results[0];
  } catch (e) {
    say($("explanation"), e.message, true);
    return;
  }
  say($("explanation"), result.explanation ?? `(status ${result.status}) ${result.raw_output}`);
  for (const [k, v] of [["status", result.status], ["mse", fmt(result.mse)], ["cos", fmt(result.cos)]])
    $("scores").appendChild(document.createElement("span")).textContent = `${k} ${v}`;
  // rule of thumb (NLA paper): mse 0.2 / cos 0.9 good, mse 1.0 / cos 0.5 mediocre
  $("scores").className = result.mse === null ? "" : result.mse < 0.5 ? "good" : result.mse < 1.2 ? "fair" : "poor";
  span.title += ` · mse ${fmt(result.mse)}`;
  say($("nearest-status"), "searching the lake…");
  try {
    const near = await api("/v1/search", { vector: result.vector, k: 8 });
    table($("nearest"), near.results, [["similarity", (r) => r.similarity, "num"], ...LABEL_COLUMNS]);
    say($("nearest-status"), near.results.length ? `found by ${near.method}` :
        "the lake has no activations yet (nla label fills it)");
  } catch (e) {
    say($("nearest-status"), e.message, true);
  }
}

$("tokenize").addEventListener("click", tokenize);

// ---- the lake ----------------------------------------------------------------------------------------------------
async function lakeView(label, call) {
  say($("lake-status"), label + "…");
  $("lake-results").replaceChildren();
  try {
    const got = await call();
    const rows = got.rows ?? got;
    table($("lake-results"), rows, [["act_id", (r) => (r.act_id || "").slice(0, 10)], ...LABEL_COLUMNS]);
    say($("lake-status"), `${label}: ${rows.length} rows` + (got.method ? ` (found by ${got.method})` : ""));
  } catch (e) {
    say($("lake-status"), e.message, true);
  }
}

const reconstructed = (order) => async () => (await api("/v1/query", {
  sql: "SELECT act_id, mse, cos, context, explanation FROM labels WHERE status = 'ok' AND mse IS NOT NULL " +
       `ORDER BY mse ${order} LIMIT 20`, limit: 20 })).rows;

$("worst").addEventListener("click", () => lakeView("worst reconstructed", reconstructed("DESC")));
$("best").addEventListener("click", () => lakeView("best reconstructed", reconstructed("ASC")));
$("kw-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const keyword = $("keyword").value;
  lakeView(`keyword ${JSON.stringify(keyword)}`, async () => (await api("/v1/search", { keyword, k: 20 })).results);
});
$("ts-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("search-text").value;
  lakeView("nearest to the text", async () => {
    const near = await api("/v1/search", { text, k: 10 });
    return { rows: near.results, method: near.method };
  });
});

loadModels();
