// Compare: the validation perplexity of the chosen jobs, epoch by epoch, on one chart. Per-token
// perplexities compare only between jobs with one tokenizer: when the jobs' tokenizers differ, every
// point is converted to word perplexity, ppl ^ (tokens / words) of the dataset's validation split.
"use strict";

(() => {
  const { api, el, num, flash } = Dash;
  const chosen = new URLSearchParams(location.search).getAll("job");
  const list = document.getElementById("choices");
  const logBox = document.getElementById("logscale");
  let chart = null;
  let cursor = null;

  function setUrl() {
    const query = new URLSearchParams(chosen.map((id) => ["job", id]));
    history.replaceState(null, "", `/compare${chosen.length ? `?${query}` : ""}`);
  }

  function choice(job) {
    const box = el("input", { type: "checkbox", value: job.id, checked: chosen.includes(job.id) });
    box.addEventListener("change", () => {
      const at = chosen.indexOf(job.id);
      if (box.checked && at < 0) chosen.push(job.id);
      if (!box.checked && at >= 0) chosen.splice(at, 1);
      setUrl();
      draw();
    });
    const name = el("span", { class: "muted" });
    Dash.datasetName(job.dataset_id).then((n) => { name.textContent = ` ${job.preset} · ${n} · ${job.status}`; });
    return el("li", {}, el("label", {}, box, ` ${job.id}`, name));
  }

  async function loadChoices() {
    const query = new URLSearchParams({ limit: "50" });
    if (cursor) query.set("cursor", cursor);
    const page = await api(`/v1/jobs?${query}`);
    list.append(...page.items.map(choice));
    cursor = page.next_cursor;
    document.getElementById("more").classList.toggle("hidden", !cursor);
  }

  document.getElementById("more").addEventListener("click", () => loadChoices().catch((e) => flash(e.message)));
  logBox.addEventListener("change", () => draw());

  // Tokens and words of a job's validation split: from its evaluation, else from its dataset.
  async function validCounts(job) {
    const valid = job.evaluation && job.evaluation.valid;
    if (valid) return { tokens: valid.num_tokens, words: valid.num_words };
    const dataset = await Dash.dataset(job.dataset_id);
    const split = dataset && dataset.splits && dataset.splits.valid;
    return split ? { tokens: split.tokens, words: split.words } : null;
  }

  // What the page shows: per-token perplexity, or word perplexity when the tokenizers differ.
  function showMeasure(kinds, word) {
    const note = document.getElementById("compare-note");
    note.textContent = word
      ? `Tokenizers differ (${kinds.join(", ")}): validation word perplexity is shown, each point converted as ` +
        "ppl ^ (tokens / words) of the dataset's validation split, since per-token perplexities do not compare across tokenizers."
      : kinds.length === 1 ? `One tokenizer (${kinds[0]}): validation perplexity per token.` : "";
    note.classList.toggle("hidden", !note.textContent);
    note.classList.toggle("note", word);
    const unit = word ? "word ppl" : "ppl";
    document.getElementById("last-head").textContent = `last valid ${unit}`;
    document.getElementById("best-head").textContent = `best valid ${unit}`;
    document.getElementById("test-head").textContent = `test ${unit}`;
  }

  // x = epoch (the n-th valid_ppl point is epoch n), so jobs with different step counts line up.
  async function draw() {
    const container = document.getElementById("compare-chart");
    const jobs = await Promise.all(
      chosen.map(async (id) => {
        try {
          const [job, page] = await Promise.all([
            api(`/v1/jobs/${encodeURIComponent(id)}`),
            api(`/v1/jobs/${encodeURIComponent(id)}/metrics?key=valid_ppl&max_points=10000`),
          ]);
          return { job, points: page.metrics, counts: await validCounts(job) };
        } catch (err) {
          flash(`${id}: ${err.message}`);
          return null;
        }
      }),
    );
    const shown = jobs.filter(Boolean);
    const kinds = Dash.tokenizersOf(shown.map(({ job }) => job));
    const word = kinds.length > 1;
    showMeasure(kinds, word);
    const value = ({ counts }, ppl) => (word ? (counts ? Dash.wordPerplexity(ppl, counts.tokens, counts.words) : null) : ppl);
    const tokenizer = (job) => (job.evaluation && job.evaluation.tokenizer) || "?";
    if (chart) chart.plot && chart.plot.destroy();
    container.replaceChildren();
    container.dataset.measure = word ? "word" : "token";
    chart = new LiveChart(
      container,
      shown.map(({ job }) => ({ key: job.id, label: `${job.id} (${job.preset}, ${tokenizer(job)})`, width: 2 })),
      { logY: logBox.checked, xLabel: "epoch", yLabel: word ? "valid word perplexity" : "valid perplexity", height: 360 },
    );
    shown.forEach((one) => one.points.forEach((p, i) => chart.add(one.job.id, i + 1, value(one, p.value))));
    const split = (job, name) => (job.evaluation && job.evaluation[name]) || null;
    const rows = await Promise.all(
      shown.map(async (one) => {
        const { job, points } = one;
        const last = points.length ? value(one, points[points.length - 1].value) : null;
        const best = word ? (split(job, "valid") || {}).word_perplexity : job.best_valid_ppl;
        const test = word ? (split(job, "test") || {}).word_perplexity : job.test_ppl;
        return el(
          "tr",
          { "data-job-id": job.id },
          el("td", {}, el("a", { href: `/jobs/${job.id}`, text: job.id })),
          el("td", { text: job.preset }),
          el("td", { text: await Dash.datasetName(job.dataset_id) }),
          el("td", { class: "tokenizer", text: tokenizer(job) }),
          el("td", { class: "num", text: points.length }),
          el("td", { class: "num last", text: num(last) }),
          el("td", { class: "num best", text: num(best) }),
          el("td", { class: "num test", text: num(test) }),
        );
      }),
    );
    document.querySelector("#summary tbody").replaceChildren(...rows);
  }

  Dash.ready
    .then(() => Promise.all([loadChoices(), draw()]))
    .catch((err) => flash(`could not load: ${err.message}`));
})();
