// Compare two recipes (AVs or sampling settings) on the activations both explained: the paired difference b - a with
// its 95% interval, its histogram, and the rows that changed most. One request per comparison; the recipe lists come
// from the overview already loaded (or one request when the page opens here).
"use strict";

async function recipeOptions() {
  if (!NLA.lake) NLA.lake = { ...(await api("/v1/lake/recipes")), partial: true };
  return NLA.lake.recipes;
}

async function showCompare(params) {
  let recipes;
  try {
    recipes = await recipeOptions();
  } catch (e) {
    say($("cmp-status"), e.message, true);
    return;
  }
  for (const [id, pick] of [["cmp-a", 0], ["cmp-b", 1]]) {
    const s = $(id);
    s.replaceChildren(...recipes.map((r) => el("option", { value: r.recipe,
                                                           text: `${recipeLabel(r)} · ${int(r.rows)} rows` })));
    s.value = params.get(id.slice(-1)) || (recipes[pick] || {}).recipe || "";
  }
  $("cmp-result").hidden = true;
  if (recipes.length < 2) {
    say($("cmp-status"), `this lake has ${recipes.length} recipe(s); comparing needs two on the same activations ` +
        "(label again with `nla label --from-activations` and another AV or sampling)");
    return;
  }
  if (!params.get("a") || !params.get("b")) {
    say($("cmp-status"), "pick two recipes and press Compare");
    return;
  }
  say($("cmp-status"), "comparing…");
  let c;
  try {
    c = await api("/v1/lake/compare", { a: params.get("a"), b: params.get("b"), top: 20 });
  } catch (e) {
    say($("cmp-status"), e.message, true);
    return;
  }
  renderCompare(c);
}

function renderCompare(c) {
  const better = c.diff < 0 ? "B reconstructs better" : c.diff > 0 ? "A reconstructs better" : "no difference";
  say($("cmp-status"), `${int(c.n)} shared activations · mean mse A ${fmt(c.mse_a)} · B ${fmt(c.mse_b)} · ` +
      `B − A = ${fmt(c.diff)} ± ${fmt(c.ci95)} (95%) · ${better}`);
  $("cmp-result").hidden = false;
  const side = (r, name) => el("div", { class: "card recipe" }, el("div", { class: "card-label", text: name }),
    el("div", { text: r ? recipeLabel(r) : "–" }),
    el("pre", { text: r && r.fields ? JSON.stringify(r.fields.sampling || r.fields, null, 1) :
      "(settings not recorded)" }));
  $("cmp-sides").replaceChildren(side(c.a, "A"), side(c.b, "B"),
    el("div", { class: "card" }, el("div", { class: "card-n", text: `${int(c.b_better)} / ${int(c.a_better)}` }),
       el("div", { class: "card-label", text: "activations where B / A has the lower mse" })));
  histogram($("cmp-hist"), c.histogram.edges, [{ label: "activations", counts: c.histogram.counts }], {
    xLabel: "mse B − mse A (negative: B better)", yLabel: "activations",
    summary: `histogram of the paired difference over ${c.n} activations, mean ${fmt(c.diff)}`,
  });
  table($("cmp-changed"), c.changed, [
    ["document", (r) => docLink(r.act_id, r.act_id.slice(0, 10))],
    ["mse A", (r) => mseCell(r.mse_a)], ["mse B", (r) => mseCell(r.mse_b)], ["B − A", (r) => r.diff, "num"],
    ["explanation A", (r) => oneLine(r.explanation_a)], ["explanation B", (r) => oneLine(r.explanation_b)],
  ], "The rows that changed most");
}

$("cmp-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  go("compare", { a: $("cmp-a").value, b: $("cmp-b").value });
});

NLA.views.compare = { section: "compare", tab: "compare", show: showCompare };
