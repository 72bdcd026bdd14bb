// The token strip: one request explains and scores every token of a pasted text (POST /v1/strip, one batch), and
// colours each by its round-trip mse, and underlines those with a quality flag. Hover or focus a token to read its
// explanation, scores and flags in the line above the strip (no request);
// click it (or Enter) to pin it and find the nearest labeled activations in the lake (one request).
"use strict";

let stripResults = new Map();  // position -> the AV/AR result, with its vector (base64)

async function explainText() {
  const text = $("text").value;
  $("detail").hidden = true;
  say($("text-status"), "explaining every token…");
  let got;
  try {
    const maxNew = Math.min(200, NLA.limits ? NLA.limits.max_new_tokens : 200);
    got = await api("/v1/strip", { text, temperature: 0, max_new_tokens: maxNew });
  } catch (e) {
    say($("text-status"), e.message, true);
    return;
  }
  stripResults = new Map(got.results.map((r) => [r.position, r]));
  const strip = $("strip");
  strip.replaceChildren();
  for (const t of got.tokens) {
    const r = stripResults.get(t.position);
    if (!r) {
      strip.append(el("span", { class: "tok" + (t.special ? " special" : " unexplained"), text: t.token,
                                "data-pos": String(t.position),
                                title: t.special ? "special token: not explained" : "not explained (server limit)" }));
      continue;
    }
    const flags = r.flags || [];  // the quality flags a live result gets from itself (degenerate, truncated, ...)
    const b = el("button", { type: "button", class: "tok" + (flags.length ? " flagged" : ""), text: t.token,
      "data-pos": String(t.position),
      "aria-label": `token ${JSON.stringify(t.token)} at position ${t.position}: mse ${fmt(r.mse)}, ${r.status}` +
                    (flags.length ? `, flagged ${flags.join(", ")}` : ""),
      onmouseenter: () => hoverToken(r), onfocus: () => hoverToken(r),
      onclick: () => pinToken(b, r) });
    b.style.background = mseColour(r.mse);
    strip.append(b);
  }
  const scored = got.results.filter((r) => r.mse !== null);
  const mean = scored.length ? scored.reduce((a, r) => a + r.mse, 0) / scored.length : null;
  const flagged = got.results.filter((r) => (r.flags || []).length).length;
  say($("text-status"), `${got.tokens.length} tokens, ${got.results.length} explained in one batch, mean mse ` +
      `${fmt(mean)}` + (flagged ? `, ${flagged} flagged (underlined)` : "") + (got.note ? ` (${got.note})` : "") + (got.truncated ? " (text cut to the server's limit)" : "") +
      ". Hover a token to read it; click it for its nearest labeled activations.");
  $("legend").hidden = false;
}

function hoverToken(r) {  // what the pointer or keyboard focus is on, in one line above the strip
  const box = $("hover-line");
  box.replaceChildren(el("strong", { text: JSON.stringify(r.token) }),
    ` @ ${r.position} · mse ${fmt(r.mse)} · cos ${fmt(r.cos)} · `, badges(r), r.status === "ok" ? "" : " · ",
    oneLine(r.explanation ?? r.raw_output));
  box.firstChild.style.background = mseColour(r.mse);
}

function showToken(r) {
  $("detail").hidden = false;
  $("detail-title").textContent = `Token ${JSON.stringify(r.token)} at position ${r.position}`;
  const scores = $("scores");
  scores.replaceChildren(...[["status", r.status], ["mse", fmt(r.mse)], ["cos", fmt(r.cos)]]
    .map(([k, v]) => el("span", { text: `${k} ${v}` })), badges(r));
  // rule of thumb (NLA paper): mse 0.2 / cos 0.9 good, mse 1.0 / cos 0.5 mediocre
  scores.className = "scores " + (r.mse === null ? "" : r.mse < 0.5 ? "good" : r.mse < 1.2 ? "fair" : "poor");
  say($("explanation"), r.explanation ?? `(status ${r.status}) ${r.raw_output}`);
}

async function pinToken(button, r) {
  for (const s of document.querySelectorAll("#strip .tok.selected")) {
    s.classList.remove("selected");
    s.setAttribute("aria-pressed", "false");
  }
  button.classList.add("selected");
  button.setAttribute("aria-pressed", "true");
  showToken(r);
  $("nearest").replaceChildren();
  say($("nearest-status"), "searching the lake…");
  try {
    const near = await api("/v1/search", { vector: r.vector, k: 8 });
    table($("nearest"), near.results, [["similarity", (x) => x.similarity, "num"], ["mse", (x) => mseCell(x.mse)],
      ["context (end)", (x) => el("span", {}, tail(x.context, 60))], ["explanation", (x) => oneLine(x.explanation)],
      ["document", (x) => docLink(x.act_id, "open")]]);
    say($("nearest-status"), near.results.length ? `found by ${near.method}` :
        "the lake has no activations yet (nla label fills it)");
  } catch (e) {
    say($("nearest-status"), e.message, true);
  }
}

$("tokenize").addEventListener("click", explainText);
$("ts-form").addEventListener("submit", async (ev) => {  // search the lake by meaning: the AR turns text into a vector
  ev.preventDefault();
  say($("search-status"), "searching…");
  try {
    const near = await api("/v1/search", { text: $("search-text").value, k: 10 });
    table($("search-results"), near.results, [["similarity", (x) => x.similarity, "num"],
      ["mse", (x) => mseCell(x.mse)], ["explanation", (x) => oneLine(x.explanation)],
      ["document", (x) => docLink(x.act_id, "open")]]);
    say($("search-status"), `nearest to the text: ${near.results.length} rows (found by ${near.method})`);
  } catch (e) {
    say($("search-status"), e.message, true);
  }
});

NLA.views.text = { section: "explain", tab: "text", show: () => {} };
