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

  // The field box a problem's field name is about: "name", "tags.1" (a tag of the list), "dataset_id",
  // "overrides.hidden_size" or a bare config field ("hidden_size"); the form's general box when it
  // names none of them.
  function fieldBox(name) {
    const find = (n) => form.querySelector(`.field[data-field="${CSS.escape(n)}"]`);
    const parts = String(name || "").split(".").filter(Boolean);
    for (let n = parts.length; n > 0; n -= 1) {
      const head = parts.slice(0, n).join(".");
      const box = find(head) || (n === 1 ? find(`overrides.${head}`) : null);
      if (box) return box;
    }
    return find("");
  }

  function showError(name, message) {
    const field = fieldBox(name);
    field.classList.add("invalid");
    const box = field.querySelector(".error");
    if (!box.textContent.split("; ").includes(message)) box.textContent = box.textContent ? `${box.textContent}; ${message}` : message;
  }

  function focusFirstError() {
    const input = form.querySelector(".field.invalid input, .field.invalid select, .field.invalid textarea");
    if (input) input.focus();
  }

  // Every field a problem+json answer is about, each message next to its field: its `errors` list
  // ([{field, message}], or a validation error's {loc, msg}), the unknown `fields`, its `field`
  // ("overrides.hidden_size", "preset", "dataset_id"), or the config field its detail starts with
  // ("hidden_size must be ...").
  function placeProblem(problem) {
    const detail = problem.detail || "request refused";
    let placed = false;
    if (Array.isArray(problem.errors) && problem.errors.length) {
      for (const e of problem.errors) {
        const where = e.field !== undefined ? String(e.field || "") : String(e.loc || "").replace(/^body\.?/, "");
        showError(where, e.message || e.msg || detail);
      }
      placed = true;
    }
    if (Array.isArray(problem.fields) && problem.fields.length) {
      problem.fields.forEach((f) => showError(`overrides.${f}`, `unknown field ${f}`));
      placed = true;
    }
    if (placed) return;
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

  // What the form would submit: name, tags and notes where given, the dataset, preset and overrides.
  function body() {
    const out = { dataset_id: datasetSelect.value, preset: presetSelect.value, overrides: overrides() };
    const name = document.getElementById("name").value.trim();
    const tags = document.getElementById("tags").value.split(/[\s,]+/).filter(Boolean);
    const notes = document.getElementById("notes").value.trim();
    if (name) out.name = name;
    if (tags.length) out.tags = tags;
    if (notes) out.notes = notes;
    return out;
  }

  // --- the estimate, asked for as the fields change (POST /v1/jobs/estimate stores nothing) ---

  const estimateBox = document.getElementById("estimate");
  let estimateTimer = null;
  let estimateTicket = 0;

  function showEstimate(state, ...children) {
    estimateBox.dataset.state = state;
    estimateBox.className = `estimate ${state}`;
    estimateBox.replaceChildren(...children.filter(Boolean));
  }

  // The estimate's numbers on one line, and its warning where the job would be past the job limit
  // (`fits` false: the API's reason, which submitting would get as a refusal).
  function renderEstimate(e) {
    const parts = [
      el("strong", { class: "total", text: `about ${Dash.seconds(e.total_seconds)} in all` }),
      `${Dash.seconds(e.epoch_seconds)} an epoch of ${num(e.steps_per_epoch, 0)} steps`,
      `${num(e.parameters, 0)} parameters`,
      `vocabulary ${num(e.vocab_size, 0)}`,
      `${Dash.bytes(e.train_memory_bytes)} of training memory`,
      `on ${e.basis} ${e.device}`,
    ];
    const line = el("div", { class: "numbers" }, "Estimate: ");
    parts.forEach((part, i) => line.append(...(i ? [" · ", part] : [part])));
    const limit = `the job limit is ${Dash.seconds(e.limit_seconds)}`;
    const warning = e.fits
      ? null
      : el("ul", { class: "warnings" }, el("li", { class: "warning", text: `Past the job limit: ${e.problem || limit}` }));
    line.title = limit;
    showEstimate(e.fits ? "ok" : "warn", line, warning);
  }

  async function estimate() {
    const ticket = ++estimateTicket;
    if (!datasetSelect.value || !presetSelect.value) {
      showEstimate("none", "Choose a dataset for an estimate of the job's time.");
      return;
    }
    try {
      const answer = await api("/v1/jobs/estimate", { method: "POST", json: body() });
      if (ticket !== estimateTicket) return;
      clearErrors(form);
      renderEstimate(answer);
    } catch (err) {
      if (ticket !== estimateTicket) return;
      clearErrors(form);
      if (err instanceof Dash.ApiError && err.status === 422) {
        placeProblem(err.problem);
        const n = form.querySelectorAll(".field.invalid").length;
        showEstimate("invalid", `No estimate: ${n === 1 ? "one field needs" : `${n} fields need`} fixing (marked below).`);
      } else if (err instanceof Dash.ApiError && err.status !== 404) {
        showEstimate("invalid", `No estimate: ${err.message}`);
      } else {
        showEstimate("none", "");
      }
    }
  }

  function estimateSoon() {
    clearTimeout(estimateTimer);
    estimateTimer = setTimeout(estimate, 400);
  }
  form.addEventListener("input", estimateSoon);
  form.addEventListener("change", estimateSoon);

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
    clearTimeout(estimateTimer);
    estimateTicket += 1; // an estimate on its way would clear the errors shown below
    try {
      const job = await api("/v1/jobs", { method: "POST", json: body() });
      location.assign(`/jobs/${job.id}`);
    } catch (err) {
      if (err instanceof Dash.ApiError) placeProblem(err.problem);
      else showError("", err.message);
      focusFirstError();
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
      estimateSoon();
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
      estimateSoon();
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
      return Promise.all([loadDatasets(new URLSearchParams(location.search).get("dataset")), loadPresets()]).then(estimate);
    })
    .catch((err) => flash(`could not load the form: ${err.message}`));
})();
