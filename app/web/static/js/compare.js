// Compare: one metric of the chosen jobs on one chart against the epoch (step / steps per epoch),
// with TensorBoard's smoothing (the raw curve faint behind), the config fields that differ, and the
// points as a CSV file made in the browser. Per-token perplexities compare only between jobs with one
// tokenizer: when the jobs' tokenizers differ, every perplexity point is converted to word perplexity,
// ppl ^ (tokens / words) of the dataset's split (validation for valid_ppl, training for the others).
"use strict";

(() => {
  const { api, el, num, flash } = Dash;
  const query = new URLSearchParams(location.search);
  const chosen = query.getAll("job");
  const list = document.getElementById("choices");
  const logBox = document.getElementById("logscale");
  const metricSelect = document.getElementById("metric");
  const slider = document.getElementById("smoothing");
  const container = document.getElementById("compare-chart");
  const METRICS = {
    valid_ppl: { label: "validation perplexity", split: "valid", ppl: true },
    train_ppl: { label: "training perplexity (epoch)", split: "train", ppl: true },
    train_ppl_running: { label: "training perplexity (running)", split: "train", ppl: true },
    wps: { label: "words per second", ppl: false },
    lr: { label: "learning rate", ppl: false },
  };
  if (METRICS[query.get("metric")]) metricSelect.value = query.get("metric");
  const wantedSmoothing = Number(query.get("smoothing"));
  if (wantedSmoothing > 0 && wantedSmoothing < 1) slider.value = String(wantedSmoothing);
  logBox.checked = query.get("log") === "1";
  let plot = null;
  let cursor = null;
  let shown = []; // [{job, points, spe, counts}] of the chart drawn last
  let word = false;

  function smoothing() {
    const w = Number(slider.value);
    return Number.isFinite(w) ? Math.min(0.99, Math.max(0, w)) : 0;
  }

  function setUrl() {
    const q = new URLSearchParams(chosen.map((id) => ["job", id]));
    if (metricSelect.value !== "valid_ppl") q.set("metric", metricSelect.value);
    if (smoothing() > 0) q.set("smoothing", String(smoothing()));
    if (logBox.checked) q.set("log", "1");
    history.replaceState(null, "", `/compare${q.toString() ? `?${q}` : ""}`);
  }

  function choice(job) {
    const box = el("input", { type: "checkbox", value: job.id, checked: chosen.includes(job.id) });
    box.addEventListener("change", () => {
      const at = chosen.indexOf(job.id);
      if (box.checked && at < 0) chosen.push(job.id);
      if (!box.checked && at >= 0) chosen.splice(at, 1);
      setUrl();
      load();
    });
    const about = el("span", { class: "muted" });
    Dash.datasetName(job.dataset_id).then((n) => { about.textContent = ` ${job.preset} · ${n} · ${job.status}`; });
    const title = job.name ? el("span", {}, ` ${job.name} `, el("code", { class: "muted", text: job.id })) : ` ${job.id}`;
    const tags = (job.tags || []).length ? el("span", { class: "tags" }, ...job.tags.map((t) => el("span", { class: "chip tag", text: `#${t}` }))) : null;
    return el("li", { "data-job-id": job.id }, el("label", {}, box, title, about), tags);
  }

  // The jobs to pick from, 50 at a time: all of them, or those a search names ("#tag" for a tag).
  const search = document.getElementById("choice-q");
  async function loadChoices(fresh = false) {
    const q = new URLSearchParams({ limit: "50" });
    const words = search.value.trim().split(/\s+/).filter(Boolean);
    words.filter((w) => w.startsWith("#") && w.length > 1).forEach((w) => q.append("tag", w.slice(1)));
    const text = words.filter((w) => !w.startsWith("#")).join(" ");
    if (text) q.set("q", text);
    if (cursor && !fresh) q.set("cursor", cursor);
    const page = await api(`/v1/jobs?${q}`);
    if (fresh) list.replaceChildren();
    list.append(...page.items.map(choice));
    cursor = page.next_cursor;
    document.getElementById("more").classList.toggle("hidden", !cursor);
  }
  let typing = null;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => loadChoices(true).catch((e) => flash(`could not find jobs: ${e.message}`)), 300);
  });

  document.getElementById("more").addEventListener("click", () => loadChoices().catch((e) => flash(e.message)));

  // TensorBoard's smoothing: an exponential moving average, debiased so the first points are not
  // pulled towards zero (each point divided by 1 - w^n of the n points so far).
  function ema(values, w) {
    let last = 0;
    let n = 0;
    return values.map((v) => {
      if (v === null || !Number.isFinite(v)) return v;
      last = last * w + (1 - w) * v;
      n += 1;
      return w > 0 ? last / (1 - w ** n) : v;
    });
  }

  // Tokens and words of a job's split: from its evaluation (validation), else from its dataset.
  async function splitCounts(job, split) {
    const evaluated = split === "valid" && job.evaluation && job.evaluation.valid;
    if (evaluated) return { tokens: evaluated.num_tokens, words: evaluated.num_words };
    const dataset = await Dash.dataset(job.dataset_id);
    const s = dataset && dataset.splits && dataset.splits[split];
    return s ? { tokens: s.tokens, words: s.words } : null;
  }

  // Steps per epoch: the job's estimate (what the trainer runs), else the training pass's step count.
  function stepsPerEpoch(job) {
    if (job.estimate && job.estimate.steps_per_epoch > 0) return job.estimate.steps_per_epoch;
    const p = job.progress || {};
    return p.phase === "train" && p.steps > 0 ? p.steps : null;
  }

  function name(job) {
    return job.name || job.id;
  }

  // What the page shows: per-token perplexity, or word perplexity when the tokenizers differ.
  function showMeasure(kinds, metric) {
    const note = document.getElementById("compare-note");
    const ppl = METRICS[metric].ppl;
    note.textContent = word
      ? `Tokenizers differ (${kinds.join(", ")}): word perplexity is shown, each point converted as ` +
        "ppl ^ (tokens / words) of the dataset's split, since per-token perplexities do not compare across tokenizers."
      : ppl && kinds.length === 1 ? `One tokenizer (${kinds[0]}): perplexity per token.` : "";
    note.classList.toggle("hidden", !note.textContent);
    note.classList.toggle("note", word);
    const unit = word ? "word ppl" : "ppl";
    document.getElementById("last-head").textContent = ppl ? `last ${metric.startsWith("valid") ? "valid" : "train"} ${unit}` : `last ${metric}`;
    document.getElementById("best-head").textContent = `best valid ${unit}`;
    document.getElementById("test-head").textContent = `test ${unit}`;
  }

  // Integer ticks for the epoch axis, at most about `most` of them.
  function epochTicks(lo, hi, most = 10) {
    const span = Math.max(1, Math.ceil(hi) - Math.floor(lo));
    const steps = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000];
    const incr = steps.find((s) => span / s <= most) || Math.ceil(span / most);
    const ticks = [];
    for (let t = Math.ceil(lo / incr) * incr; t <= hi + 1e-9; t += incr) ticks.push(t);
    return ticks;
  }

  function draw() {
    const metric = metricSelect.value;
    const w = smoothing();
    document.getElementById("smoothing-value").textContent = w.toFixed(2);
    container.dataset.smoothing = String(w);
    const columns = shown.map((one) => {
      const convert = word && METRICS[metric].ppl;
      const xs = one.points.map((p) => (one.spe ? p.step / one.spe : p.step));
      const ys = one.points.map((p) => (convert ? (one.counts ? Dash.wordPerplexity(p.value, one.counts.tokens, one.counts.words) : null) : p.value));
      return { xs, ys, smooth: w > 0 ? ema(ys, w) : null };
    });
    const xs = [...new Set(columns.flatMap((c) => c.xs))].sort((a, b) => a - b);
    const at = new Map(xs.map((x, i) => [x, i]));
    const data = [xs];
    const series = [{ label: "epoch", value: (u, v) => (v === null || v === undefined ? "–" : num(v, 2)) }];
    const yValue = (u, v) => (v === null || v === undefined ? "–" : num(v, 3));
    columns.forEach((c, i) => {
      const color = COLORS[i % COLORS.length];
      const raw = new Array(xs.length).fill(null);
      c.xs.forEach((x, j) => { raw[at.get(x)] = Number.isFinite(c.ys[j]) ? c.ys[j] : null; });
      const label = name(shown[i].job);
      if (c.smooth) {
        const smooth = new Array(xs.length).fill(null);
        c.xs.forEach((x, j) => { smooth[at.get(x)] = Number.isFinite(c.smooth[j]) ? c.smooth[j] : null; });
        data.push(raw, smooth);
        series.push(
          { label: `${label} (raw)`, stroke: `${color}40`, width: 1, spanGaps: true, points: { show: false }, value: yValue },
          { label, stroke: color, width: 2, spanGaps: true, points: { show: false }, value: yValue },
        );
      } else {
        data.push(raw);
        series.push({ label, stroke: color, width: 2, spanGaps: true, value: yValue });
      }
    });
    container.dataset.points = String(columns.reduce((n, c) => n + c.ys.filter((v) => Number.isFinite(v)).length, 0));
    container.dataset.measure = word && METRICS[metric].ppl ? "word" : "token";
    container.dataset.metric = metric;
    if (plot) plot.destroy();
    plot = null;
    container.replaceChildren();
    container.dataset.xTicks = "";
    if (!xs.length) return;
    const perEpoch = shown.every((one) => one.spe);
    const yLabel = `${METRICS[metric].label}${word && METRICS[metric].ppl ? " per word" : ""}`;
    plot = new uPlot(
      {
        width: Math.max(200, container.clientWidth),
        height: 360,
        scales: {
          x: { time: false, range: (u, lo, hi) => [Math.min(0, Math.floor(lo)), Math.max(1, Math.ceil(hi))] },
          y: logBox.checked ? { distr: 3 } : {},
        },
        axes: [
          {
            label: perEpoch ? "epoch" : "step",
            splits: (u, i, lo, hi) => {
              const ticks = epochTicks(lo, hi);
              container.dataset.xTicks = ticks.join(",");
              return ticks;
            },
            values: (u, ticks) => ticks.map((t) => String(t)),
          },
          { label: yLabel, size: 70 },
        ],
        series,
      },
      data,
      container,
    );
  }

  // The compared points as CSV: job id, name, key, step, epoch and the value as recorded, with the
  // smoothed value when smoothing is on.
  function csv() {
    const w = smoothing();
    const quote = (v) => {
      const s = v === null || v === undefined ? "" : String(v);
      return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
    };
    const lines = [["job_id", "name", "key", "step", "epoch", "value", ...(w > 0 ? ["smoothed"] : [])].join(",")];
    for (const one of shown) {
      const values = one.points.map((p) => p.value);
      const smooth = w > 0 ? ema(values, w) : null;
      one.points.forEach((p, j) => {
        const epoch = one.spe ? Number((p.step / one.spe).toFixed(6)) : "";
        const row = [one.job.id, one.job.name || "", p.key, p.step, epoch, p.value];
        if (smooth) row.push(Number.isFinite(smooth[j]) ? Number(smooth[j].toPrecision(12)) : "");
        lines.push(row.map(quote).join(","));
      });
    }
    return `${lines.join("\n")}\n`;
  }

  document.getElementById("csv").addEventListener("click", () => {
    const url = URL.createObjectURL(new Blob([csv()], { type: "text/csv" }));
    const link = el("a", { href: url, download: `compare-${metricSelect.value}.csv`, class: "hidden" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  });

  // Rows of the config fields (and preset, dataset) whose values are not the same in every job.
  async function configDiff(jobs) {
    const head = document.querySelector("#config-diff thead tr");
    head.replaceChildren(el("th", { text: "field" }), ...jobs.map((j) => el("th", {}, el("a", { href: `/jobs/${j.id}`, text: name(j) }))));
    const fields = [...new Set(jobs.flatMap((j) => Object.keys(j.config || {})))];
    const show = (v) => (v === undefined ? "–" : v === null ? "null" : String(v));
    const names = await Promise.all(jobs.map((j) => Dash.datasetName(j.dataset_id)));
    const rows = [
      ["preset", jobs.map((j) => j.preset)],
      ["dataset", names],
      ...fields.map((f) => [f, jobs.map((j) => (j.config || {})[f])]),
    ].filter(([, values]) => new Set(values.map((v) => JSON.stringify(v === undefined ? null : v))).size > 1);
    document.querySelector("#config-diff tbody").replaceChildren(
      ...rows.map(([field, values]) =>
        el("tr", { "data-field": field }, el("th", { text: field }), ...values.map((v) => el("td", { text: show(v) }))),
      ),
    );
    const same = jobs.length > 1 && !rows.length;
    document.getElementById("config-same").classList.toggle("hidden", !same);
    document.getElementById("config-diff").classList.toggle("hidden", jobs.length < 2 || !rows.length);
  }

  async function summary() {
    const metric = metricSelect.value;
    const ppl = METRICS[metric].ppl;
    const split = (job, s) => (job.evaluation && job.evaluation[s]) || null;
    const tokenizer = (job) => (job.evaluation && job.evaluation.tokenizer) || "?";
    const rows = await Promise.all(
      shown.map(async (one) => {
        const { job, points } = one;
        const lastRaw = points.length ? points[points.length - 1].value : null;
        const last = word && ppl ? (one.counts ? Dash.wordPerplexity(lastRaw, one.counts.tokens, one.counts.words) : null) : lastRaw;
        const best = word ? (split(job, "valid") || {}).word_perplexity : job.best_valid_ppl;
        const test = word ? (split(job, "test") || {}).word_perplexity : job.test_ppl;
        return el(
          "tr",
          { "data-job-id": job.id },
          el("td", {}, el("a", { href: `/jobs/${job.id}`, text: name(job) })),
          el("td", { text: job.preset }),
          el("td", { text: await Dash.datasetName(job.dataset_id) }),
          el("td", { class: "tokenizer", text: tokenizer(job) }),
          el("td", { class: "num", text: one.epochs }),
          el("td", { class: "num last", text: num(last, metric === "lr" ? 4 : 2) }),
          el("td", { class: "num best", text: num(best) }),
          el("td", { class: "num test", text: num(test) }),
        );
      }),
    );
    document.querySelector("#summary tbody").replaceChildren(...rows);
  }

  let loading = 0;
  async function load() {
    const ticket = ++loading;
    const metric = metricSelect.value;
    const jobs = await Promise.all(
      chosen.map(async (id) => {
        try {
          const base = `/v1/jobs/${encodeURIComponent(id)}`;
          const [job, page, epochsPage] = await Promise.all([
            api(base),
            api(`${base}/metrics?key=${metric}&max_points=10000`),
            metric === "valid_ppl" ? null : api(`${base}/metrics?key=valid_ppl&max_points=10000`),
          ]);
          const counts = METRICS[metric].ppl ? await splitCounts(job, METRICS[metric].split) : null;
          const epochs = (epochsPage || page).metrics.length;
          return { job, points: page.metrics, spe: stepsPerEpoch(job), counts, epochs };
        } catch (err) {
          flash(`${id}: ${err.message}`);
          return null;
        }
      }),
    );
    if (ticket !== loading) return; // a newer choice is on its way
    shown = jobs.filter(Boolean);
    const kinds = Dash.tokenizersOf(shown.map(({ job }) => job));
    word = kinds.length > 1;
    showMeasure(kinds, metric);
    draw();
    await Promise.all([summary(), configDiff(shown.map(({ job }) => job))]);
    container.dataset.loaded = chosen.join(",");
  }

  metricSelect.addEventListener("change", () => { setUrl(); load(); });
  logBox.addEventListener("change", () => { setUrl(); draw(); });
  slider.addEventListener("input", () => { setUrl(); draw(); });
  new ResizeObserver(() => { if (plot) plot.setSize({ width: Math.max(200, container.clientWidth), height: 360 }); }).observe(container);

  Dash.ready
    .then(() => Promise.all([loadChoices(), load()]))
    .catch((err) => flash(`could not load: ${err.message}`));
})();
