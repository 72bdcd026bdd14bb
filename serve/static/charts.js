// Charts of the explorer, drawn by the vendored uPlot (uPlot.iife.min.js, MIT, uPlot.LICENSE beside it). Each chart
// takes aggregates the server computed (bin counts, one point per run), never table rows, and carries a text summary
// for screen readers (role="img" + aria-label); the numbers are also in the tables beside it.
"use strict";

const PALETTE = ["#2f6fdb", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c", "#5c940d"];
const charts = new Map();  // container id -> uPlot, resized with the window

function chartFrame(container, summary) {
  const old = charts.get(container.id);
  if (old) old.destroy();
  charts.delete(container.id);
  container.replaceChildren();
  container.setAttribute("role", "img");
  container.setAttribute("aria-label", summary);
  return Math.max(320, container.clientWidth || container.parentElement.clientWidth || 600);
}

function keep(container, plot) {
  charts.set(container.id, plot);
  return plot;
}

// edges: n + 1 bin edges; series: [{label, counts (n)}]; shares: plot each series as % of its own total
function histogram(container, edges, series, { xLabel, yLabel, summary, shares = false }) {
  const width = chartFrame(container, summary);
  const x = edges.slice();  // a step per bin, and the last edge closes the last bin
  const data = [x];
  for (const s of series) {
    const total = s.counts.reduce((a, b) => a + b, 0) || 1;
    const ys = s.counts.map((c) => (shares ? (100 * c) / total : c));
    data.push([...ys, ys[ys.length - 1]]);
  }
  const opts = {
    width, height: 220, legend: { show: true },
    scales: { x: { time: false } },
    axes: [{ label: xLabel }, { label: yLabel, size: 60 }],
    series: [{ label: xLabel, value: (u, v) => (v === null ? "–" : v.toFixed(2)) },
             ...series.map((s, i) => ({
               label: s.label, stroke: PALETTE[i % PALETTE.length], width: 1.5,
               fill: PALETTE[i % PALETTE.length] + "33", paths: uPlot.paths.stepped({ align: 1 }),
               points: { show: false },
               value: (u, v) => (v === null ? "–" : shares ? v.toFixed(1) + "%" : Math.round(v).toString()),
             }))],
  };
  return keep(container, new uPlot(opts, data, container));
}

// points: [{at (ISO), y, label}] per series: one line with a marker per run, over time
function timeline(container, series, { yLabel, summary }) {
  const width = chartFrame(container, summary);
  const times = [...new Set(series.flatMap((s) => s.points.map((p) => Date.parse(p.at) / 1000)))].sort((a, b) => a - b);
  const data = [times];
  for (const s of series) {
    const at = new Map(s.points.map((p) => [Date.parse(p.at) / 1000, p.y]));
    data.push(times.map((t) => (at.has(t) ? at.get(t) : null)));
  }
  const opts = {
    width, height: 200, legend: { show: true },
    // the runs' span with a margin; one run is one instant, shown in the day around it
    scales: { x: { time: true, range: () => {
      const lo = times[0], hi = times[times.length - 1], pad = hi > lo ? (hi - lo) * 0.05 : 43200;
      return [lo - pad, hi + pad];
    } } },
    axes: [{}, { label: yLabel, size: 60 }],
    series: [{}, ...series.map((s, i) => ({
      label: s.label, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: true,
      points: { show: true, size: 7, fill: PALETTE[i % PALETTE.length] },
      value: (u, v) => (v === null ? "–" : v.toFixed(3)),
    }))],
  };
  return keep(container, new uPlot(opts, data, container));
}

window.addEventListener("resize", () => {
  for (const [id, plot] of charts) {
    const box = document.getElementById(id);
    if (box && box.clientWidth) plot.setSize({ width: box.clientWidth, height: plot.height });
  }
});
