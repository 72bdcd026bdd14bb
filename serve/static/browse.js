// Browse labels without SQL: filters, a sortable and paged table, each row linking to its document. The URL holds
// the whole view (filters, sort, page), so "Copy link" shares it; every change is one request for one page, which
// the server cuts, counts and returns with the SQL it ran ("Open as SQL").
"use strict";

const FILTERS = ["mse_min", "mse_max", "status", "flag", "source", "recipe", "av", "keyword", "feature"];
const NUMERIC = new Set(["mse_min", "mse_max", "page", "page_size"]);
const SORTABLE = [["mse", "mse"], ["cos", "cos"], ["n_tokens", "tokens"], ["created_at", "written"]];
let lastPage = null;  // the last answer: its sql and the filter it ran

function browseParams(params) {  // URL -> request body
  const body = {};
  for (const k of [...FILTERS, "sort", "page", "page_size"]) {
    const v = params.get(k);
    if (v !== null && v !== "") body[k] = NUMERIC.has(k) ? Number(v) : v;
  }
  if (params.get("descending") !== null) body.descending = params.get("descending") !== "false";
  return body;
}

function fillForm(body) {
  for (const k of FILTERS) $("f-" + k).value = body[k] ?? "";
  $("f-sort").value = body.sort || "mse";
  $("f-descending").value = body.descending === false ? "false" : "true";
  $("f-page_size").value = String(body.page_size || 50);
  const recipes = (NLA.lake && NLA.lake.recipes) || [];
  $("recipe-list").replaceChildren(...recipes.map((r) => el("option", { value: r.recipe, label: recipeLabel(r) })));
}

function formBody() {  // the form -> URL settings (page back to 0: a new filter starts at its first page)
  const body = {};
  for (const k of FILTERS) {
    const v = $("f-" + k).value.trim();
    if (v !== "") body[k] = v;
  }
  body.sort = $("f-sort").value;
  if ($("f-descending").value === "false") body.descending = "false";
  if ($("f-page_size").value !== "50") body.page_size = $("f-page_size").value;
  return body;
}

async function showBrowse(params) {
  const body = browseParams(params);
  fillForm(body);
  say($("br-status"), "loading…");
  $("br-sql").hidden = true;
  try {
    lastPage = await api("/v1/lake/labels", body);
  } catch (e) {
    say($("br-status"), e.message, true);
    $("br-table").replaceChildren();
    return;
  }
  renderBrowse(lastPage, params);
}

function renderBrowse(p, params) {
  for (const [key, id] of [["flags", "f-flag"], ["source", "f-source"]]) {
    $(id).closest(".field").hidden = !p.columns[key];  // the lake has the column, or the filter is not offered
  }
  const first = p.page * p.page_size;
  const sort = p.filter.sort;
  const desc = p.filter.descending !== false;
  const shown = `rows ${int(first + 1)}–${int(first + p.rows.length)} of ${int(p.total)}`;
  say($("br-status"), p.total ? `${shown} · sorted by ${sort} ${desc ? "descending" : "ascending"}` :
      "no label matches these filters");
  const t = $("br-table");
  const sortHeader = (key, label) => {
    const active = key === sort;
    const b = el("button", { type: "button", class: "sort", text: label + (active ? (desc ? " ▼" : " ▲") : ""),
      "aria-label": `sort by ${label}` + (active ? `, now ${desc ? "descending" : "ascending"}` : ""),
      onclick: () => go("browse", { ...Object.fromEntries(params), sort: key, page: 0,
                                    descending: active && desc ? "false" : "" }) });
    return b;
  };
  const cols = [
    ["mse", (r) => mseCell(r.mse)], ["cos", (r) => r.cos, "num"], ["tokens", (r) => int(r.n_tokens)],
    ["status", (r) => el("span", {}, r.status === "ok" ? "ok" : "", badges(r))],
    ["context (end)", (r) => contextWithToken(r.context, r.token, 50)],
    ["explanation", (r) => oneLine(r.explanation ?? r.raw_output)],
    ["recipe", (r) => short(r.recipe)],
    ...(p.columns.source ? [["source", (r) => r.source]] : []),
    ["document", (r) => docLink(r.act_id, `${r.doc_id} @ ${r.position}`)],
  ];
  table(t, p.rows, cols);
  if (t.tHead) {
    for (const th of t.tHead.rows[0].cells) {
      const s = SORTABLE.find(([, label]) => label === th.textContent);
      if (s) {
        th.setAttribute("aria-sort", s[0] === sort ? (desc ? "descending" : "ascending") : "none");
        th.replaceChildren(sortHeader(...s));
      }
    }
  }
  const last = Math.max(0, Math.ceil(p.total / p.page_size) - 1);
  $("br-prev").disabled = p.page <= 0;
  $("br-next").disabled = p.page >= last;
  $("br-page").textContent = `page ${p.page + 1} of ${last + 1}`;
  $("br-sql-text").textContent = p.sql;
  $("br-link").value = location.href;
}

function page(delta) {
  const { params } = parseHash();
  go("browse", { ...Object.fromEntries(params), page: Math.max(0, Number(params.get("page") || 0) + delta) });
}

$("br-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  go("browse", formBody());
});
$("br-clear").addEventListener("click", () => go("browse", {}));
$("br-prev").addEventListener("click", () => page(-1));
$("br-next").addEventListener("click", () => page(1));
$("br-open-sql").addEventListener("click", () => {
  $("br-sql").hidden = !$("br-sql").hidden;
  $("br-open-sql").setAttribute("aria-expanded", String(!$("br-sql").hidden));
});
$("br-copy").addEventListener("click", async () => {
  $("br-link").value = location.href;
  $("br-link").select();
  try {
    await navigator.clipboard.writeText(location.href);
    say($("br-copied"), "link copied");
  } catch {
    say($("br-copied"), "select the link above and copy it");
  }
});

NLA.views.browse = { section: "browse", tab: "browse", show: showBrowse };
