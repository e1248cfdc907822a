// The job form (every override with the preset's value as its placeholder, errors next to the
// field they are about) and the corpus upload form (XMLHttpRequest for its upload progress).
"use strict";

(() => {
  const { api, el, num, flash } = Dash;
  const form = document.getElementById("job-form");
  const datasetSelect = document.getElementById("dataset_id");
  const presetSelect = document.getElementById("preset");
  const overridesBox = document.getElementById("overrides");
  let presets = {};
  let fields = [];

  // --- errors next to fields ---

  function clearErrors(scope) {
    scope.querySelectorAll(".field").forEach((f) => f.classList.remove("invalid"));
    scope.querySelectorAll(".error").forEach((e) => { e.textContent = ""; });
  }

  function showError(name, message) {
    const field = form.querySelector(`.field[data-field="${CSS.escape(name)}"]`) || form.querySelector('.field[data-field=""]');
    field.classList.add("invalid");
    const box = field.querySelector(".error");
    box.textContent = box.textContent ? `${box.textContent}; ${message}` : message;
    const input = field.querySelector("input, select");
    if (input) input.focus();
  }

  // Which field a problem+json answer is about: its `field` ("overrides.hidden_size", "preset",
  // "dataset_id"), the unknown `fields`, a validation error's `loc`, or the config field its
  // detail starts with ("hidden_size must be ...").
  function placeProblem(problem) {
    const detail = problem.detail || "request refused";
    if (Array.isArray(problem.fields) && problem.fields.length) {
      problem.fields.forEach((f) => showError(`overrides.${f}`, `unknown field ${f}`));
      return;
    }
    if (Array.isArray(problem.errors) && problem.errors.length) {
      for (const e of problem.errors) {
        const loc = String(e.loc || "").replace(/^body\.?/, "");
        showError(loc.split(".").slice(0, 2).join("."), e.msg || detail);
      }
      return;
    }
    let name = problem.field || "";
    if (name === "overrides") {
      const named = fields.find((f) => detail.startsWith(`${f.name} `));
      if (named) name = `overrides.${named.name}`;
    }
    showError(name, detail);
  }

  // --- datasets and presets ---

  const loadDatasets = (wanted) => Dash.datasetOptions(datasetSelect, wanted);

  function renderOverrides() {
    const config = presets[presetSelect.value] || {};
    for (const f of fields) {
      const input = document.getElementById(`ov-${f.name}`);
      const value = config[f.name];
      if (f.type === "choice") {
        input.options[0].textContent = `(${value})`;
      } else {
        input.placeholder = value === null || value === undefined ? "none" : String(value);
      }
    }
  }

  async function loadPresets() {
    const answer = await api("/v1/presets");
    presets = Object.fromEntries(answer.presets.map((p) => [p.name, p.config]));
    fields = answer.fields;
    presetSelect.replaceChildren(...answer.presets.map((p) => el("option", { value: p.name, text: p.name })));
    presetSelect.value = presets.small ? "small" : answer.presets[0].name;
    overridesBox.replaceChildren(
      ...fields.map((f) => {
        const id = `ov-${f.name}`;
        const input =
          f.type === "choice"
            ? el("select", { id, name: f.name }, el("option", { value: "" }), ...f.choices.map((c) => el("option", { value: c, text: c })))
            : el("input", { id, name: f.name, type: "text", inputMode: f.type === "integer" ? "numeric" : "decimal", autocomplete: "off" });
        return el("div", { class: "field", "data-field": `overrides.${f.name}` }, el("label", { for: id, text: f.name }), input, el("div", { class: "error" }));
      }),
    );
    renderOverrides();
  }

  presetSelect.addEventListener("change", renderOverrides);

  // Typed overrides from the filled-in inputs; the API checks the values (and answers where they are wrong).
  function overrides() {
    const out = {};
    for (const f of fields) {
      const raw = document.getElementById(`ov-${f.name}`).value.trim();
      if (!raw) continue;
      if (f.type === "choice") out[f.name] = raw;
      else if (f.nullable && raw.toLowerCase() === "none") out[f.name] = null;
      else if (f.type === "integer" && /^[+-]?\d+$/.test(raw)) out[f.name] = Number.parseInt(raw, 10);
      else if (f.type === "number" && raw !== "" && Number.isFinite(Number(raw))) out[f.name] = Number(raw);
      else out[f.name] = raw; // sent as text: the API says why it is not a number
    }
    return out;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    if (!datasetSelect.value) {
      showError("dataset_id", "choose a dataset (or upload one)");
      return;
    }
    const button = document.getElementById("submit-job");
    button.disabled = true;
    try {
      const job = await api("/v1/jobs", {
        method: "POST",
        json: { dataset_id: datasetSelect.value, preset: presetSelect.value, overrides: overrides() },
      });
      location.assign(`/jobs/${job.id}`);
    } catch (err) {
      if (err instanceof Dash.ApiError) placeProblem(err.problem);
      else showError("", err.message);
    } finally {
      button.disabled = false;
    }
  });

  // --- upload, with progress ---

  const upload = document.getElementById("upload-form");
  const SUBWORD = ["bpe", "unigram"];
  const tokenizerSelect = document.getElementById("up-tokenizer");

  // A subword tokenizer takes a vocabulary size, a word-level one (or a detected one) a min count.
  function showTokenizerOptions() {
    const subword = SUBWORD.includes(tokenizerSelect.value);
    document.getElementById("up-min-count-field").classList.toggle("hidden", subword);
    document.getElementById("up-vocab-field").classList.toggle("hidden", !subword);
  }
  tokenizerSelect.addEventListener("change", showTokenizerOptions);
  showTokenizerOptions(); // a browser may restore the choice on reload without a change event

  function percent(rate) {
    return rate === null || rate === undefined ? "–" : `${num(rate * 100, 2)}%`;
  }

  upload.addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = document.getElementById("upload-status");
    const body = new FormData(upload);
    const subword = SUBWORD.includes(tokenizerSelect.value);
    for (const name of ["name", "tokenizer", "lowercase", "min_count", "tokenizer_vocab_size"]) {
      if (!body.get(name)) body.delete(name); // left out: the server's default
    }
    body.delete(subword ? "min_count" : "tokenizer_vocab_size"); // the hidden field does not apply
    const answer = await Dash.upload("/v1/datasets", body, document.getElementById("upload-bar"), status);
    if (answer.status === 201) {
      // Chosen in the job form by the time the status says "uploaded".
      await loadDatasets(answer.body.id).catch((err) => flash(`could not list the datasets: ${err.message}`));
      const d = answer.body;
      const t = d.tokenizer || {};
      const valid = d.splits && d.splits.valid;
      status.textContent =
        `uploaded ${d.name}: ${t.kind || "?"} tokenizer${t.lowercase ? ", lower case" : ""}, ` +
        `${num(d.train_tokens, 0)} training tokens, vocabulary ${num(d.vocab_size, 0)}` +
        (valid ? `; valid ${num(valid.words, 0)} words, ${percent(valid.unk_rate)} <unk>` : "");
    } else {
      status.textContent = `upload ${answer.status ? "refused" : "failed"}: ${answer.body.detail || answer.status}`;
    }
  });

  // --- server-side corpora ---

  const builtin = document.getElementById("builtin-form");
  builtin.addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = document.getElementById("builtin-status");
    try {
      const dataset = await api("/v1/datasets/builtin", {
        method: "POST",
        json: { root: document.getElementById("root").value, path: document.getElementById("root-path").value.trim() },
      });
      status.textContent = `registered ${dataset.name}`;
      await loadDatasets(dataset.id);
    } catch (err) {
      status.textContent = `refused: ${err.message}`;
    }
  });

  async function loadRoots() {
    const { roots } = await api("/v1/datasets/roots");
    if (!roots.length) return;
    document.getElementById("root").replaceChildren(...roots.map((r) => el("option", { value: r, text: r })));
    builtin.classList.remove("hidden");
  }

  // A read key may not submit or upload (the forms are hidden); only admins register server-side corpora.
  Dash.ready
    .then(() => {
      if (!Dash.can("write")) return null;
      if (Dash.can("admin")) loadRoots().catch((err) => flash(`could not list the server-side corpora: ${err.message}`));
      return Promise.all([loadDatasets(new URLSearchParams(location.search).get("dataset")), loadPresets()]);
    })
    .catch((err) => flash(`could not load the form: ${err.message}`));
})();
