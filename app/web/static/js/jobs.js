// The jobs list: one page of the API's keyset pages, filtered by status, polled for live updates.
"use strict";

(() => {
  const { el, num, age } = Dash;
  const params = new URLSearchParams(location.search);
  const statuses = params.getAll("status");
  let mixed = false; // the page's jobs have more than one tokenizer: word perplexity is shown
  const list = Dash.liveList({
    path: "/v1/jobs",
    params: () => new URLSearchParams(statuses.map((s) => ["status", s])),
    row,
    table: "jobs",
    what: "jobs",
    cursor: params.get("cursor"),
    onItems: showWordPpl,
  });

  // Per-token perplexities compare only between jobs with one tokenizer; when the listed jobs'
  // tokenizers differ, the "best valid word ppl" column (and a note saying why) appears.
  function showWordPpl(jobs) {
    const kinds = Dash.tokenizersOf(jobs);
    mixed = kinds.length > 1;
    document.getElementById("word-ppl-head").classList.toggle("hidden", !mixed);
    const note = document.getElementById("word-ppl-note");
    note.classList.toggle("hidden", !mixed);
    note.textContent = mixed
      ? `Tokenizers differ (${kinds.join(", ")}): per-token perplexities do not compare across them, ` +
        "so the list also shows the best validation perplexity per word (word ppl = ppl ^ (tokens / words))."
      : "";
  }

  const form = document.getElementById("filter");
  form.querySelectorAll("input[name=status]").forEach((box) => {
    box.checked = statuses.includes(box.value);
    box.addEventListener("change", () => {
      const chosen = [...form.querySelectorAll("input[name=status]:checked")].map((b) => b.value);
      const query = new URLSearchParams(chosen.map((s) => ["status", s]));
      history.replaceState(null, "", query.toString() ? `/?${query}` : "/");
      statuses.splice(0, statuses.length, ...chosen);
      list.pages.reset();
      list.load();
    });
  });

  function progressCell(job) {
    const { done, epoch, epochs, phase } = Dash.standing(job);
    const label = `${epoch || "–"}/${epochs}${phase ? ` ${phase}` : ""}`;
    return el(
      "td",
      { class: "progress-cell", title: `${Math.round(done * 100)}% of the epochs` },
      el("div", { class: "progress" }, el("div", { class: `bar ${job.status}`, style: `width: ${(done * 100).toFixed(1)}%` })),
      el("span", { class: "muted phase", text: label }),
    );
  }

  function row(job) {
    const wps = job.status === "running" && job.progress ? job.progress.wps : null;
    const tokenizer = job.evaluation ? job.evaluation.tokenizer : null;
    const dataset = el("span", { text: job.dataset_id, title: tokenizer ? `tokenizer: ${tokenizer}` : "" });
    Dash.datasetName(job.dataset_id).then((name) => { dataset.textContent = mixed && tokenizer ? `${name} · ${tokenizer}` : name; });
    const valid = job.evaluation ? job.evaluation.valid : null;
    return el(
      "tr",
      { "data-job-id": job.id, "data-status": job.status },
      el("td", {}, el("a", { href: `/jobs/${job.id}`, text: job.id })),
      el("td", {}, el("span", { class: `badge ${job.status}`, text: job.status, title: job.message })),
      el("td", { text: job.preset }),
      el("td", {}, dataset),
      progressCell(job),
      el("td", { class: "num", text: num(job.best_valid_ppl) }),
      el("td", { class: "num", text: num(job.latest_valid_ppl) }),
      el("td", {
        class: mixed ? "num word-ppl" : "num word-ppl hidden",
        text: num(valid ? valid.word_perplexity : null),
        title: valid ? `${num(valid.perplexity)} per token over ${num(valid.num_tokens, 0)} tokens, ${num(valid.num_words, 0)} words` : "",
      }),
      el("td", { class: "num", text: num(wps, 0) }),
      el("td", { text: age(job.created_at) }),
    );
  }

  Dash.ready.then(list.load);
})();
