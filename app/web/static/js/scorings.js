// Scoring jobs: the form (a file, with its upload progress, or a dataset's split), and the list,
// polled for live progress, with each scoring's results, cancel and delete.
"use strict";

(() => {
  const { api, el, num, bytes, age, flash, TERMINAL } = Dash;
  const form = document.getElementById("scoring-form");
  const list = Dash.liveList({ path: "/v1/scorings", row, table: "scorings", what: "scorings" });

  // --- the form ---

  function source() {
    return form.querySelector("input[name=source]:checked").value;
  }

  function showSource() {
    document.getElementById("file-field").classList.toggle("hidden", source() !== "file");
    document.getElementById("dataset-field").classList.toggle("hidden", source() !== "dataset");
  }
  form.querySelectorAll("input[name=source]").forEach((radio) => radio.addEventListener("change", showSource));
  showSource(); // a browser may restore the checked source on reload without a change event

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = document.getElementById("scoring-status");
    const body = new FormData();
    body.set("model", document.getElementById("model").value);
    if (source() === "file") {
      const file = document.getElementById("file").files[0];
      if (!file) {
        status.textContent = "choose a file to score";
        return;
      }
      body.set("file", file);
    } else {
      body.set("dataset_id", document.getElementById("dataset_id").value);
      body.set("split", document.getElementById("split").value);
    }
    for (const name of ["score_eos", "pretokenized", "log10"]) body.set(name, String(form.elements[name].checked));
    const precision = document.getElementById("precision").value;
    if (precision) body.set("precision", precision);
    const name = document.getElementById("scoring-name").value.trim();
    if (name) body.set("name", name);
    document.getElementById("scoring-tags").value.split(/[\s,]+/).filter(Boolean).forEach((t) => body.append("tags", t));
    const button = document.getElementById("submit-scoring");
    button.disabled = true;
    const answer = await Dash.upload("/v1/scorings", body, document.getElementById("scoring-bar"), status);
    button.disabled = false;
    if (answer.status === 201) {
      status.textContent = `queued ${answer.body.id}: ${num(answer.body.total_lines, 0)} lines`;
      list.pages.reset();
      list.load();
    } else {
      status.textContent = `${answer.status ? "refused" : "failed"}: ${answer.body.detail || answer.status}`;
    }
  });

  // --- the list ---

  function progressCell(s) {
    const done = s.status === "succeeded" ? 1 : s.fraction;
    return el(
      "td",
      { class: "progress-cell", title: `${Math.floor(done * 100)}% of the lines` },
      el("div", { class: "progress" }, el("div", { class: `bar ${s.status}`, style: `width: ${(done * 100).toFixed(1)}%` })),
      el("span", {
        class: "muted phase",
        text: `${num(s.lines_done, 0)}/${num(s.total_lines, 0)} lines${Number.isFinite(s.eta_seconds) && !TERMINAL.includes(s.status) ? ` · ETA ${Dash.seconds(s.eta_seconds)}` : ""}`,
      }),
    );
  }

  function textCell(s) {
    if (s.source !== "dataset") return el("td", { text: "uploaded file" });
    const name = el("span", { text: s.dataset_id });
    Dash.datasetName(s.dataset_id).then((n) => { name.textContent = n; });
    return el("td", {}, name, ` · ${s.split}`);
  }

  async function act(s, verb) {
    const question = verb === "cancel"
      ? `Cancel scoring ${s.id}? A running scoring stops after its current chunk of lines.`
      : `Delete scoring ${s.id} with its results? This cannot be undone.`;
    if (!confirm(question)) return;
    try {
      if (verb === "cancel") await api(`/v1/scorings/${s.id}/cancel`, { method: "POST" });
      else await api(`/v1/scorings/${s.id}`, { method: "DELETE" });
      list.load();
    } catch (err) {
      flash(`${verb} failed: ${err.message}`);
    }
  }

  function actions(s) {
    const cell = el("td", { class: "actions" });
    if (s.results_url) cell.append(el("a", { class: "button", href: s.results_url, download: `${s.id}.jsonl`, text: "Results" }));
    if (!TERMINAL.includes(s.status) && s.status !== "canceling") {
      cell.append(el("button", { type: "button", class: "cancel", "data-needs": "write", text: "Cancel", onclick: () => act(s, "cancel") }));
    }
    if (TERMINAL.includes(s.status)) {
      cell.append(el("button", { type: "button", class: "danger delete", "data-needs": "write", text: "Delete", onclick: () => act(s, "delete") }));
    }
    Dash.applyScope(cell);
    return cell;
  }

  // The scoring's <unk> warnings (the share of unknown words over the lines so far), one line each.
  function warningsCell(s) {
    const warnings = s.warnings || [];
    return el("td", { class: "warnings" }, warnings.map((w) => el("div", { class: "warning", title: w.message, text: `⚠ ${w.message}` })));
  }

  function row(s) {
    const a = s.aggregate;
    const ppl = a.num_tokens ? a.corpus_perplexity : null;
    return el(
      "tr",
      { "data-scoring-id": s.id, "data-status": s.status },
      el(
        "td",
        { class: "scoring" },
        s.name ? el("span", { class: "scoring-name", text: s.name }) : null,
        el(s.name ? "code" : "span", { class: s.name ? "muted scoring-id" : "scoring-id", text: s.id }),
        s.tags && s.tags.length ? el("span", { class: "tags" }, ...s.tags.map((t) => el("span", { class: "chip tag", text: `#${t}` }))) : null,
      ),
      el("td", {}, el("span", { class: `badge ${s.status}`, text: s.status, title: s.message || s.error || "" })),
      el("td", {}, s.model.startsWith("job_") ? el("a", { href: `/jobs/${s.model}`, text: s.model }) : s.model),
      textCell(s),
      el("td", { text: s.options.precision }),
      progressCell(s),
      el("td", { class: "num", text: num(ppl) }),
      el("td", { class: "num word-ppl", text: num(a.num_words ? a.word_perplexity : null), title: `${num(a.bits_per_byte, 3)} bits per byte` }),
      warningsCell(s),
      el("td", { class: "num", text: bytes(s.size_bytes) }),
      el("td", { text: age(s.created_at) }),
      actions(s),
    );
  }

  Dash.ready.then(() => {
    list.load();
    if (!Dash.can("write")) return;
    const wanted = new URLSearchParams(location.search).get("model");
    Dash.modelOptions(document.getElementById("model"), wanted).catch((err) => flash(`could not list the models: ${err.message}`));
    Dash.datasetOptions(document.getElementById("dataset_id")).catch((err) => flash(`could not list the datasets: ${err.message}`));
  });
})();
