// The jobs list: one page of the API's keyset pages, polled for live updates; searched by name or id,
// filtered by tags, status, dataset and preset, sorted by creation or perplexity, all of it in the
// address (a view can be shared); config fields as extra columns, chosen once and remembered.
"use strict";

(() => {
  const { el, num, age } = Dash;
  const initial = new URLSearchParams(location.search);
  const SORTS = ["-created_at", "created_at", "valid_ppl", "test_ppl"];
  const COLUMNS_KEY = "lstmlm.jobs.columns";
  const view = {
    q: initial.get("q") || "",
    tags: initial.getAll("tag"),
    statuses: initial.getAll("status"),
    dataset: initial.get("dataset_id") || "",
    preset: initial.get("preset") || "",
    sort: SORTS.includes(initial.get("sort")) ? initial.get("sort") : "-created_at",
  };
  let columns = readColumns();
  let mixed = false; // the page's jobs have more than one tokenizer: word perplexity is shown

  function readColumns() {
    try {
      const saved = JSON.parse(localStorage.getItem(COLUMNS_KEY) || "[]");
      return Array.isArray(saved) ? saved.filter((c) => typeof c === "string") : [];
    } catch (_) {
      return [];
    }
  }

  // The view as the API's query (and the page's address).
  function query() {
    const q = new URLSearchParams();
    if (view.q) q.set("q", view.q);
    view.tags.forEach((t) => q.append("tag", t));
    view.statuses.forEach((s) => q.append("status", s));
    if (view.dataset) q.set("dataset_id", view.dataset);
    if (view.preset) q.set("preset", view.preset);
    if (view.sort !== "-created_at") q.set("sort", view.sort);
    return q;
  }

  const list = Dash.liveList({
    path: "/v1/jobs",
    params: query,
    row,
    table: "jobs",
    what: "jobs",
    cursor: initial.get("cursor"),
    onItems: showWordPpl,
  });

  // A changed view: its address, the controls and chips, the first page of its jobs.
  function changed() {
    const q = query();
    history.replaceState(null, "", q.toString() ? `/?${q}` : "/");
    showView();
    list.pages.reset();
    list.load();
  }

  // Per-token perplexities compare only between jobs with one tokenizer: when the listed jobs'
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
    document.getElementById("empty").textContent = jobs.length || !query().toString() ? "No jobs yet." : "No job matches these filters.";
  }

  // --- the controls ---

  const form = document.getElementById("filter");
  form.addEventListener("submit", (event) => event.preventDefault());
  const search = document.getElementById("q");
  let typing = null;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      view.q = search.value.trim();
      changed();
    }, 300);
  });
  form.querySelectorAll("input[name=status]").forEach((box) => {
    box.addEventListener("change", () => {
      view.statuses = [...form.querySelectorAll("input[name=status]:checked")].map((b) => b.value);
      changed();
    });
  });
  const datasetSelect = document.getElementById("f-dataset");
  const presetSelect = document.getElementById("f-preset");
  datasetSelect.addEventListener("change", () => { view.dataset = datasetSelect.value; changed(); });
  presetSelect.addEventListener("change", () => { view.preset = presetSelect.value; changed(); });
  document.querySelectorAll("#jobs button.sort").forEach((button) => {
    button.addEventListener("click", () => {
      const key = button.dataset.sort;
      if (key === "created_at") view.sort = view.sort === "-created_at" ? "created_at" : "-created_at";
      else view.sort = view.sort === key ? "-created_at" : key;
      changed();
    });
  });

  function addTag(tag) {
    if (!view.tags.includes(tag)) view.tags.push(tag);
    changed();
  }

  // The controls as the view has them, and a removable chip for each active filter.
  function showView() {
    search.value = view.q;
    form.querySelectorAll("input[name=status]").forEach((box) => { box.checked = view.statuses.includes(box.value); });
    datasetSelect.value = view.dataset;
    presetSelect.value = view.preset;
    document.querySelectorAll("#jobs button.sort").forEach((button) => {
      const key = button.dataset.sort;
      const on = view.sort === key || (key === "created_at" && view.sort.endsWith("created_at"));
      button.classList.toggle("on", on);
      button.dataset.direction = !on ? "" : view.sort === "-created_at" ? "desc" : "asc";
      button.closest("th").setAttribute("aria-sort", !on ? "none" : view.sort === "-created_at" ? "descending" : "ascending");
    });
    const chips = [];
    const chip = (kind, label, remove) => {
      const button = el("button", { type: "button", class: "remove", title: "remove this filter", "aria-label": "remove this filter", text: "×" });
      button.addEventListener("click", () => { remove(); changed(); });
      chips.push(el("span", { class: `chip active-filter ${kind}`, "data-filter": kind }, label, button));
    };
    if (view.q) chip("q", `“${view.q}”`, () => { view.q = ""; });
    view.tags.forEach((t) => chip("tag", `#${t}`, () => { view.tags = view.tags.filter((x) => x !== t); }));
    view.statuses.forEach((s) => chip("status", s, () => { view.statuses = view.statuses.filter((x) => x !== s); }));
    if (view.dataset) {
      const option = [...datasetSelect.options].find((o) => o.value === view.dataset);
      chip("dataset", `dataset ${option ? option.dataset.name || option.textContent : view.dataset}`, () => { view.dataset = ""; });
    }
    if (view.preset) chip("preset", `preset ${view.preset}`, () => { view.preset = ""; });
    if (chips.length > 1) {
      const clear = el("button", { type: "button", class: "link clear", text: "clear all" });
      clear.addEventListener("click", () => {
        Object.assign(view, { q: "", tags: [], statuses: [], dataset: "", preset: "" });
        changed();
      });
      chips.push(clear);
    }
    document.getElementById("active-filters").replaceChildren(...chips);
  }

  // --- the column chooser: config fields as extra columns ---

  const chooser = document.getElementById("columns");
  document.addEventListener("click", (event) => {
    if (chooser.open && !chooser.contains(event.target)) chooser.open = false;
  });

  function chooseColumns(fields) {
    columns = columns.filter((c) => fields.includes(c));
    document.getElementById("column-choices").replaceChildren(
      ...fields.map((f) => {
        const box = el("input", { type: "checkbox", value: f, checked: columns.includes(f) });
        box.addEventListener("change", () => {
          columns = fields.filter((x) => (x === f ? box.checked : columns.includes(x)));
          localStorage.setItem(COLUMNS_KEY, JSON.stringify(columns));
          drawHead();
          list.load();
        });
        return el("label", {}, box, ` ${f}`);
      }),
    );
    drawHead();
  }

  function drawHead() {
    const head = document.querySelector("#jobs thead tr");
    head.querySelectorAll("th.config").forEach((th) => th.remove());
    head.append(...columns.map((c) => el("th", { class: "num config", "data-column": c, text: c })));
  }

  // --- the rows ---

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

  function tagChip(tag) {
    const button = el("button", { type: "button", class: "chip tag", "data-tag": tag, title: `only jobs tagged ${tag}`, text: `#${tag}` });
    button.addEventListener("click", () => addTag(tag));
    return button;
  }

  function jobCell(job) {
    const link = el("a", { href: `/jobs/${job.id}`, class: "job-name", text: job.name || job.id });
    const tags = job.tags && job.tags.length ? el("span", { class: "tags" }, ...job.tags.map(tagChip)) : null;
    return el("td", { class: "job" }, link, job.name ? el("code", { class: "muted job-id", text: job.id }) : null, tags);
  }

  // Training time: from its start to its end (or to now while it runs).
  function duration(job) {
    if (!job.started_at) return null;
    const stamp = (iso) => Date.parse(/[zZ]|[+-]\d\d:\d\d$/.test(iso) ? iso : `${iso}Z`);
    const end = job.finished_at ? stamp(job.finished_at) : Dash.TERMINAL.includes(job.status) ? null : Date.now();
    return end === null ? null : Math.max(0, (end - stamp(job.started_at)) / 1000);
  }

  function row(job) {
    const wps = job.status === "running" && job.progress ? job.progress.wps : null;
    const tokenizer = job.evaluation ? job.evaluation.tokenizer : null;
    const dataset = el("span", { text: job.dataset_id, title: tokenizer ? `tokenizer: ${tokenizer}` : "" });
    Dash.datasetName(job.dataset_id).then((name) => { dataset.textContent = mixed && tokenizer ? `${name} · ${tokenizer}` : name; });
    const valid = job.evaluation ? job.evaluation.valid : null;
    const config = job.config || {};
    return el(
      "tr",
      { "data-job-id": job.id, "data-status": job.status },
      jobCell(job),
      el("td", {}, el("span", { class: `badge ${job.status}`, text: job.status, title: job.message })),
      el("td", { text: job.preset }),
      el("td", {}, dataset),
      progressCell(job),
      el("td", { class: "num best-ppl", text: num(job.best_valid_ppl) }),
      el("td", { class: "num", text: num(job.latest_valid_ppl) }),
      el("td", {
        class: mixed ? "num word-ppl" : "num word-ppl hidden",
        text: num(valid ? valid.word_perplexity : null),
        title: valid ? `${num(valid.perplexity)} per token over ${num(valid.num_tokens, 0)} tokens, ${num(valid.num_words, 0)} words` : "",
      }),
      el("td", { class: "num test-ppl", text: num(job.test_ppl) }),
      el("td", { class: "num duration", text: Dash.seconds(duration(job)) }),
      el("td", { class: "num", text: num(wps, 0) }),
      el("td", { class: "created", text: age(job.created_at), title: job.created_at }),
      ...columns.map((c) => el("td", { class: "num config", "data-column": c, text: c in config ? String(config[c]) : "–" })),
    );
  }

  // --- the options of the dataset and preset filters, the config fields of the column chooser ---

  async function loadOptions() {
    const [datasets, presets] = await Promise.all([Dash.api("/v1/datasets?limit=200"), Dash.api("/v1/presets")]);
    datasetSelect.append(...datasets.items.map((d) => el("option", { value: d.id, text: d.name, "data-name": d.name })));
    presetSelect.append(...presets.presets.map((p) => el("option", { value: p.name, text: p.name })));
    chooseColumns(presets.fields.map((f) => f.name));
    showView();
  }

  showView();
  drawHead();
  Dash.ready.then(() => {
    list.load();
    loadOptions().catch((err) => Dash.flash(`could not load the filters: ${err.message}`));
  });
})();
