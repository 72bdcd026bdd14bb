// A document in context: one request brings every labeled position of the activation's document; the selected one is
// highlighted, and choosing another position switches locally (its explanation is already here, no request).
"use strict";

let doc = null;

async function showDocument(params) {
  const actId = params.get("act_id") || "";
  say($("doc-status"), "loading the document…");
  $("doc-body").hidden = true;
  try {
    doc = await api("/v1/lake/document", { act_id: actId });
  } catch (e) {
    say($("doc-status"), e.message, true);
    return;
  }
  say($("doc-status"), `document ${doc.doc_id} · base ${doc.base_model} · layer ${doc.layer} · ` +
      `${doc.positions.length} labeled positions`);
  $("doc-body").hidden = false;
  selectPosition(doc.selected, false);
}

function selectPosition(position, focus) {
  const strip = $("doc-strip");
  strip.replaceChildren(...doc.positions.map((p) => {
    const b = el("button", { type: "button", class: "tok" + (p.position === position ? " selected" : ""),
      text: p.token, "data-pos": String(p.position), "aria-pressed": String(p.position === position),
      "aria-label": `position ${p.position}, token ${JSON.stringify(p.token)}, mse ${fmt(p.mse)}`,
      onclick: () => selectPosition(p.position, true) });
    b.style.background = mseColour(p.mse);
    return b;
  }));
  const p = doc.positions.find((x) => x.position === position) || doc.positions[0];
  history.replaceState(null, "", "#/doc?act_id=" + encodeURIComponent(p.act_id));  // the link names this position
  $("doc-context").replaceChildren(contextWithToken(p.context, p.token));
  $("doc-title").textContent = `Position ${p.position}: ${JSON.stringify(p.token)}`;
  $("doc-scores").replaceChildren(el("span", { text: "best mse" }), mseCell(p.mse),
                                  el("span", { text: ` · ${p.explanations} explanation(s)` }));
  $("doc-explanation").textContent = p.explanation ?? "(no scored explanation)";
  if (focus) strip.querySelector(".tok.selected").focus();
}

NLA.views.doc = { section: "document", tab: "browse", show: showDocument };
