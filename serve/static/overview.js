// The overview (the page's default view): one request loads counts per table, the mse histogram per recipe, the
// recipes, fve_nrm per run over time, the top features, the recent runs and any running job's progress. While a job
// runs, /v1/lake/progress is polled every POLL_MS (else every IDLE_POLL_MS, to notice a job that starts); when a job
// ends the overview reloads once.
"use strict";

const POLL_MS = 2000;
const IDLE_POLL_MS = 15000;
let pollTimer = null;

function recipeLabel(r) {
  const f = r.fields || {};
  const s = f.sampling || {};
  const sampling = s.temperature === undefined ? "" : s.temperature === 0 ? " · greedy" : ` · T ${s.temperature}`;
  return `${short(r.recipe)} · AV ${r.av}${sampling}`;
}

async function showOverview() {
  say($("ov-status"), "loading the lake…");
  let o;
  try {
    o = await api("/v1/lake/overview");
  } catch (e) {
    say($("ov-status"), e.message, true);
    return;
  }
  NLA.lake = o;
  renderOverview(o);
}

function renderOverview(o) {
  const expl = o.tables.find((t) => t.name === "explanations");
  say($("ov-status"), expl ? `${int(expl.rows)} explanations in ${o.recipes.length} recipe(s)` :
      "this lake has no explanations yet: `nla demo`, or `nla label input=DIR`, fills it");
  const cards = $("ov-counts");
  cards.replaceChildren(...o.tables.map((t) => el("div", { class: "card" },
    el("div", { class: "card-n", text: int(t.rows) }),
    el("div", { class: "card-label", text: `${t.name} (v${t.version})` }))));

  const hist = o.histogram;
  const series = o.recipes.filter((r) => hist.recipes[r.recipe])
    .map((r) => ({ label: recipeLabel(r), counts: hist.recipes[r.recipe] }));
  if (series.length) {
    histogram($("ov-hist"), hist.edges, series, {
      xLabel: "mse (0 perfect, 2 orthogonal)", yLabel: "% of the recipe's rows", shares: true,
      summary: "mse histogram per recipe: " +
        o.recipes.map((r) => `${short(r.recipe)} mean mse ${fmt(r.mean_mse)}`).join("; "),
    });
  } else {
    $("ov-hist").replaceChildren(el("p", { class: "muted", text: "no scored explanations yet" }));
  }
  table($("ov-recipes"), o.recipes, [
    ["recipe", (r) => el("a", { href: `#/browse?recipe=${r.recipe}`, text: short(r.recipe) })],
    ["AV", (r) => r.av], ["AR", (r) => r.ar || "(unscored)"],
    ["sampling", (r) => (r.fields && r.fields.sampling ? JSON.stringify(r.fields.sampling) : "–")],
    ["rows", (r) => int(r.rows), "num"], ["scored", (r) => int(r.scored), "num"],
    ["mean mse", (r) => r.mean_mse, "num"],
  ], "Recipes: what made the explanations (click one to browse its rows)");

  if (o.fve.length) {
    const points = o.fve.map((p) => ({ at: p.at, y: p.fve_nrm }));
    timeline($("ov-fve"), [{ label: "fve_nrm (a dot per run)", points }], {
      yLabel: "fve_nrm",
      summary: "fve_nrm per run: " + o.fve.map((p) => `${p.run_id} ${fmt(p.fve_nrm)}`).join("; "),
    });
  } else {
    $("ov-fve").replaceChildren(el("p", { class: "muted", text: "no finished run with scores recorded yet" }));
  }

  table($("ov-features"), o.features, [
    ["feature", (r) => el("a", { href: "#/browse?" + new URLSearchParams({ feature: r.feature }), text: r.feature })],
    ["explanations", (r) => int(r.n), "num"], ["mean mse", (r) => r.mean_mse, "num"],
  ], o.features_error ? `Most common features: not computed (${o.features_error})` :
     "Most common features (click one to browse its rows)");
  const extra = [["flags", o.flags, "flag"], ["sources", o.sources, "source"]].filter(([, v]) => v && v.length);
  $("ov-values").replaceChildren(...extra.map(([name, rows, key]) => table(el("table"), rows, [
    [key, (r) => el("a", { href: "#/browse?" + new URLSearchParams({ [key]: r[key] }), text: r[key] })],
    ["rows", (r) => int(r.n), "num"],
  ], name)));
  renderRuns(o.runs, o.progress);
}

function renderRuns(runs, progress) {
  table($("ov-runs"), runs, [
    ["run", (r) => r.run_id], ["job", (r) => r.job],
    ["status", (r) => el("span", { class: "badge " + (r.status === "ok" ? "good" : r.status === "running" ? "" : "bad"),
                                  text: r.status })],
    ["started", (r) => when(r.started_at)],
    ["took", (r) => (r.finished_at ? duration((Date.parse(r.finished_at) - Date.parse(r.started_at)) / 1000) : "…")],
    ["activations", (r) => int(r.counts.activations), "num"],
    ["explanations", (r) => int(r.counts.explanations), "num"],
    ["fve_nrm", (r) => r.throughput.fve_nrm, "num"],
  ], "Recent runs");
  const box = $("ov-progress");
  box.hidden = !progress.length;
  box.replaceChildren(el("h3", { text: "Running now" }), ...progress.map((p) => {
    const total = p.shards_total;
    const errors = Object.entries(p.errors).filter(([, n]) => n).map(([k, n]) => `${k.replaceAll("_", " ")} ${n}`);
    const bar = el("progress", { max: total || 1, value: p.shards_committed, "aria-label": `${p.run_id} progress` });
    return el("div", { class: "job" }, el("strong", { text: `${p.run_id} (${p.job})` }), bar,
      el("span", { class: "job-line", text:
        `${p.shards_committed} of ${total ?? "?"} shards committed · ${int(p.rows_committed)} rows · ` +
        (p.stalled ? `no commit for ${duration(p.quiet_s)}: if its driver was killed, the run stays "running" ` +
          "(nothing was left to record its end); the same command again resumes it" :
          p.shards_per_s ? `${(p.shards_per_s * 60).toFixed(1)} shards/min · ETA ${duration(p.eta_s)}` :
          `no shard committed yet (${duration(p.elapsed_s)} in)`) +
        ` · errors: ${errors.length ? errors.join(", ") : "none"}` }));
  }));
  clearTimeout(pollTimer);
  if (NLA.current === "overview") pollTimer = setTimeout(poll, progress.length ? POLL_MS : IDLE_POLL_MS);
}

async function poll() {
  const wasRunning = ((NLA.lake && NLA.lake.progress) || []).length;
  try {
    const p = await api("/v1/lake/progress");
    if (wasRunning && !p.progress.length) return showOverview();  // a job ended: its rows and figures are new
    if (NLA.lake) NLA.lake.progress = p.progress;
    renderRuns(p.runs, p.progress);
  } catch (e) {
    say($("ov-status"), e.message, true);
  }
}

NLA.views.overview = { section: "overview", tab: "overview", show: showOverview,
                       leave: () => clearTimeout(pollTimer) };
