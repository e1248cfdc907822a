// The job page: status and progress from the job's event stream, curves that gain points live,
// checkpoints, config, attempts, logs, cancel and delete.
"use strict";

(() => {
  const { api, el, num, bytes, age, flash, TERMINAL } = Dash;
  const root = document.getElementById("job");
  const jobId = root.dataset.jobId;
  const base = `/v1/jobs/${encodeURIComponent(jobId)}`;
  const MAX_POINTS = 1000; // per key: the downsampled history a chart starts from

  const group = new ChartGroup(`job-${jobId}`);
  const logBox = document.getElementById("logscale");
  const ppl = new LiveChart(
    document.getElementById("ppl-chart"),
    [
      { key: "train_ppl_running", label: "train (running)", width: 1, points: false, color: "#9bb7ee" },
      { key: "train_ppl", label: "train (epoch)", width: 2, color: "#2f6fdf" },
      { key: "valid_ppl", label: "valid", width: 2, color: "#e0662d" },
    ],
    { logY: logBox.checked, group, yLabel: "perplexity", height: 320 },
  );
  const lr = new LiveChart(document.getElementById("lr-chart"), [{ key: "lr", label: "lr", color: "#2a9d55" }], {
    group,
    height: 180,
  });
  const wps = new LiveChart(document.getElementById("wps-chart"), [{ key: "wps", label: "words/s", color: "#a040c0" }], {
    group,
    height: 180,
  });
  const charts = [ppl, lr, wps];
  logBox.addEventListener("change", () => ppl.setLog(logBox.checked));

  function addPoint(point) {
    for (const chart of charts) chart.add(point.key, point.step, point.value);
  }

  // --- the job itself ---

  let job = null;
  let datasetName = null;

  function render(next) {
    const previous = job;
    job = next;
    const status = document.getElementById("status");
    status.textContent = job.status;
    status.className = `badge ${job.status}`;
    document.getElementById("message").textContent = job.message + (job.error ? ` — ${job.error}` : "");

    const facts = [
      ["preset", job.preset],
      ["dataset", el("span", {}, datasetName || job.dataset_id)],
      ["tokenizer", job.evaluation ? job.evaluation.tokenizer : "–"],
      ["attempt", `${job.attempt} of ${job.max_attempts}`],
      ["worker", job.worker_id || "–"],
      ["created", `${age(job.created_at)} ago`],
      ["started", job.started_at ? `${age(job.started_at)} ago` : "–"],
      ["finished", job.finished_at ? `${age(job.finished_at)} ago` : "–"],
      ["best valid ppl", num(job.best_valid_ppl)],
      ["latest valid ppl", num(job.latest_valid_ppl)],
      ["latest train ppl", num(job.latest_train_ppl)],
    ];
    if (job.queue_position !== null && job.queue_position !== undefined) facts.push(["queue position", job.queue_position]);
    const eta = (job.progress || {}).eta_seconds;
    if (active(job)) facts.push(["ETA", Number.isFinite(eta) ? Dash.seconds(eta) : "not known yet"]);
    if (job.estimate && job.estimate.total_seconds !== undefined) facts.push(["estimated", `${Dash.seconds(job.estimate.total_seconds)} in all`]);
    document.getElementById("facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));

    const p = job.progress || {};
    const { done, epochs, phase } = Dash.standing(job);
    const bar = document.getElementById("bar");
    bar.style.width = `${(done * 100).toFixed(1)}%`;
    bar.className = `bar ${job.status}`;
    const parts = [];
    if (p.epoch) parts.push(`epoch ${p.epoch} of ${epochs}`);
    if (phase) {
      parts.push(phase); // "validating 40%": step and steps are the evaluation pass's
      if (p.steps) parts.push(`batch ${num(p.step, 0)} of ${num(p.steps, 0)}`);
    } else if (p.steps && job.status === "running") {
      parts.push(`step ${num(p.step, 0)} of ${num(p.steps, 0)}`);
    }
    if (p.wps) parts.push(`${num(p.wps, 0)} words/s`);
    if (active(job) && Number.isFinite(p.eta_seconds)) parts.push(`ETA ${Dash.seconds(p.eta_seconds)}`);
    if (p.lr !== null && p.lr !== undefined) parts.push(`lr ${num(p.lr, 4)}`);
    if (p.train_ppl_running) parts.push(`running train ppl ${num(p.train_ppl_running)}`);
    document.getElementById("progress-text").textContent = parts.join(" · ") || job.status;

    renderAbout();
    renderTestPpl();
    renderEvaluation();
    const cancelable = job.status === "queued" || job.status === "running";
    document.getElementById("cancel").classList.toggle("hidden", !cancelable);
    document.getElementById("delete").classList.toggle("hidden", !TERMINAL.includes(job.status));
    renderConfig();

    const changed = (k) => !previous || previous[k] !== job[k];
    const epochMoved = !previous || (previous.progress || {}).epoch !== p.epoch;
    if (changed("status") || changed("latest_valid_ppl") || changed("attempt") || epochMoved) refreshCheckpoints();
    if (!previous || changed("attempt") || changed("status")) renderAttempts();
  }

  function active(j) {
    return j.status === "running" || j.status === "canceling";
  }

  // The paper's test perplexity beside the job's only where the two compare (`paper.comparable`:
  // its preset on the PTB corpus as the paper trained it), else the reason they do not.
  function paperLine() {
    const paper = job.paper;
    if (!paper || (paper.test_ppl === null && !paper.reason)) return null;
    if (paper.comparable) {
      return el("div", { class: "paper comparable" }, `paper (Zaremba et al. 2014, ${job.preset}): ${num(paper.test_ppl)}`);
    }
    return el("div", { class: "paper not-comparable" }, `no paper number to compare: ${paper.reason || "not the paper's setup"}`);
  }

  function renderTestPpl() {
    const box = document.getElementById("test-ppl");
    if (job.test_ppl === null || job.test_ppl === undefined) {
      box.classList.add("hidden");
      return;
    }
    const test = job.evaluation && job.evaluation.test;
    const parts = [
      el("div", { class: "big" }, num(job.test_ppl)),
      el("div", { class: "muted" }, "test perplexity (per token)"),
      test ? el("div", { class: "per-word" }, `word ppl ${num(test.word_perplexity)} · ${num(test.bits_per_byte, 3)} bits/byte`) : null,
      paperLine(),
    ];
    box.replaceChildren(...parts.filter(Boolean)); // replaceChildren would write a null as "null"
    box.classList.remove("hidden");
  }

  // --- name, tags and notes: shown, and edited in place (PATCH, a JSON merge of the three) ---

  const aboutForm = document.getElementById("about-form");
  const aboutView = document.getElementById("about-view");

  function renderAbout() {
    const named = Boolean(job.name);
    const nameBox = document.getElementById("job-name");
    nameBox.textContent = job.name || "";
    nameBox.classList.toggle("hidden", !named);
    document.getElementById("job-title").classList.toggle("subtitle", named);
    document.title = `${job.name || `Job ${job.id}`} · LSTM LM`;
    const tags = (job.tags || []).map((t) => el("a", { class: "chip tag", href: `/?tag=${encodeURIComponent(t)}`, "data-tag": t, text: `#${t}` }));
    document.getElementById("tags").replaceChildren(...tags);
    const notes = document.getElementById("notes");
    notes.textContent = job.notes || "";
    notes.classList.toggle("hidden", !job.notes);
  }

  function editAbout(on) {
    aboutForm.classList.toggle("hidden", !on);
    aboutView.classList.toggle("hidden", on);
    if (!on) return;
    document.getElementById("edit-name").value = job.name || "";
    document.getElementById("edit-tags").value = (job.tags || []).join(" ");
    document.getElementById("edit-notes").value = job.notes || "";
    aboutForm.querySelectorAll(".field").forEach((f) => f.classList.remove("invalid"));
    aboutForm.querySelectorAll(".error").forEach((e) => { e.textContent = ""; });
    document.getElementById("edit-name").focus();
  }

  document.getElementById("edit").addEventListener("click", () => editAbout(true));
  document.getElementById("cancel-about").addEventListener("click", () => editAbout(false));
  aboutForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    aboutForm.querySelectorAll(".field").forEach((f) => f.classList.remove("invalid"));
    aboutForm.querySelectorAll(".error").forEach((e) => { e.textContent = ""; });
    const patch = {
      name: document.getElementById("edit-name").value.trim() || null,
      tags: document.getElementById("edit-tags").value.split(/[\s,]+/).filter(Boolean),
      notes: document.getElementById("edit-notes").value.trim() || null,
    };
    const button = document.getElementById("save-about");
    button.disabled = true;
    try {
      render(await api(base, { method: "PATCH", json: patch }));
      editAbout(false);
    } catch (err) {
      const problem = (err instanceof Dash.ApiError && err.problem) || {};
      const errors = Array.isArray(problem.errors) && problem.errors.length ? problem.errors : [{ field: problem.field || "", message: err.message }];
      for (const e of errors) {
        const where = String(e.field !== undefined ? e.field || "" : String(e.loc || "").replace(/^body\.?/, "")).split(".")[0];
        const field = aboutForm.querySelector(`.field[data-field="${CSS.escape(where)}"]`) || aboutForm.querySelector('.field[data-field=""]');
        field.classList.add("invalid");
        const box = field.querySelector(".error");
        const message = e.message || e.msg || err.message;
        box.textContent = box.textContent ? `${box.textContent}; ${message}` : message;
      }
    } finally {
      button.disabled = false;
    }
  });

  // Validation (best) and test in per-token, per-word and per-byte terms: word perplexity and bits
  // per byte compare with jobs whose tokenizers differ, the per-token perplexity does not.
  function renderEvaluation() {
    const table = document.getElementById("evaluation");
    const ev = job.evaluation;
    const splits = ev ? [["valid", "best valid", ev.valid], ["test", "test", ev.test]].filter(([, , s]) => s) : [];
    table.classList.toggle("hidden", !splits.length);
    table.querySelector("caption").textContent = ev ? `evaluation · ${ev.tokenizer} tokenizer` : "";
    table.querySelector("tbody").replaceChildren(
      ...splits.map(([key, label, s]) =>
        el(
          "tr",
          { "data-split": key },
          el("th", { text: label }),
          el("td", { class: "num", text: num(s.perplexity) }),
          el("td", { class: "num word-ppl", text: num(s.word_perplexity) }),
          el("td", { class: "num bpb", text: num(s.bits_per_byte, 3) }),
          el("td", { class: "num", text: num(s.num_tokens, 0) }),
          el("td", { class: "num", text: num(s.num_words, 0) }),
        ),
      ),
    );
  }

  function renderConfig() {
    const overrides = job.overrides || {};
    const rows = Object.entries(job.config).map(([k, v]) =>
      el("tr", { class: k in overrides ? "override" : "" }, el("th", { text: k }), el("td", { text: v === null ? "null" : String(v) })),
    );
    document.querySelector("#config tbody").replaceChildren(...rows);
  }

  // --- checkpoints ---

  let checkpointTimer = null;
  function refreshCheckpoints() {
    clearTimeout(checkpointTimer);
    checkpointTimer = setTimeout(loadCheckpoints, 300);
  }

  async function loadCheckpoints() {
    let list;
    try {
      list = await api(`${base}/checkpoints`);
    } catch (err) {
      return;
    }
    const rows = list.items.map((c) =>
      el(
        "tr",
        { class: c.is_best ? "best" : "" },
        el("td", { title: c.is_best ? "best: lowest validation perplexity" : "" }, c.is_best ? "★ best" : ""),
        el("td", { class: "num", text: c.epoch }),
        el("td", { class: "num", text: num(c.step, 0) }),
        el("td", { text: c.kind }),
        el("td", { class: "num", text: num(c.valid_ppl) }),
        el("td", { class: "num", text: bytes(c.size_bytes) }),
        el("td", {}, el("a", { href: c.download_url, download: "", text: "download" })),
      ),
    );
    if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 7, class: "muted", text: "none yet" })));
    document.querySelector("#checkpoints tbody").replaceChildren(...rows);
    for (const id of ["play-link", "score-link"]) document.getElementById(id).classList.toggle("hidden", list.items.length === 0);
  }

  // --- logs (GET /v1/jobs/{id}/logs, then `log` events of ?follow=true) and the attempts they tell of ---

  const attempts = new Map(); // attempt -> {worker, first, last}: its first and last log lines
  let lastLineId = 0;
  let logsShown = false;

  function lineTime(line) {
    return String(line.time || "").replace("T", " ").slice(11, 19); // the API's times are UTC
  }

  function addLogLines(lines) {
    const box = document.getElementById("logs");
    const stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    const added = [];
    for (const line of lines) {
      if (line.id <= lastLineId) continue; // already shown (a reconnected stream resends nothing older)
      lastLineId = line.id;
      const level = String(line.level).toLowerCase();
      added.push(
        el(
          "div",
          { class: `log ${level}`, "data-line-id": line.id },
          `${lineTime(line)} ${line.level.padEnd(7)} #${line.attempt} ${line.message}`,
        ),
      );
      const known = attempts.get(line.attempt);
      if (known) known.last = line;
      else attempts.set(line.attempt, { worker: line.worker_id, first: line, last: line });
    }
    if (!added.length) return;
    box.append(...added);
    box.dataset.lines = String(box.childElementCount);
    if (stick) box.scrollTop = box.scrollHeight;
    renderAttempts();
  }

  // The log read so far, then (while the job may still write, or more lines wait) its stream.
  async function loadLogs() {
    let page;
    try {
      page = await api(`${base}/logs?limit=1000`);
    } catch (err) {
      flash(`logs: ${err.message}`);
      return;
    }
    logsShown = true;
    addLogLines(page.items);
    if (TERMINAL.includes(job.status) && !page.next_cursor) return;
    // EventSource resumes after the last `id` it saw (Last-Event-ID) when it reconnects.
    const stream = new EventSource(`${base}/logs?follow=true&cursor=${lastLineId}`);
    stream.addEventListener("log", (event) => addLogLines([JSON.parse(event.data)]));
    stream.addEventListener("end", () => stream.close());
  }

  function renderAttempts() {
    if (!job) return;
    const rows = [];
    for (const [attempt, { worker, first, last }] of [...attempts.entries()].sort((a, b) => a[0] - b[0])) {
      rows.push(
        el("tr", { "data-attempt": attempt }, el("td", { text: attempt }), el("td", { text: worker || "–" }),
          el("td", { text: lineTime(first) }), el("td", { class: `log ${String(last.level).toLowerCase()}`, text: last.message })),
      );
    }
    if (!rows.length && job.attempt > 0 && !logsShown) {
      rows.push(
        el("tr", {}, el("td", { text: `${job.attempt} of ${job.max_attempts}` }), el("td", { text: job.worker_id || "–" }),
          el("td", { text: job.started_at ? `${age(job.started_at)} ago` : "–" }), el("td", { text: job.error || job.message })),
      );
    }
    if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 4, class: "muted", text: "not started" })));
    document.querySelector("#attempts tbody").replaceChildren(...rows);
  }

  // --- actions ---

  document.getElementById("cancel").addEventListener("click", async () => {
    if (!confirm(`Cancel job ${jobId}? A running job stops at its next step and keeps its checkpoints.`)) return;
    try {
      render(await api(`${base}/cancel`, { method: "POST" }));
    } catch (err) {
      flash(`cancel failed: ${err.message}`);
    }
  });

  let deleting = false; // once a delete is sent, nothing reads the job again (it would be a 404)

  document.getElementById("delete").addEventListener("click", async () => {
    if (!confirm(`Delete job ${jobId} with its metrics and checkpoints? This cannot be undone.`)) return;
    deleting = true;
    try {
      await api(base, { method: "DELETE" });
      location.assign("/");
    } catch (err) {
      deleting = false;
      flash(`delete failed: ${err.message}`);
    }
  });

  // --- live data: the stream opens first (without history), then the downsampled history is read ---

  async function loadHistory() {
    const keys = ["train_ppl_running", "train_ppl", "valid_ppl", "lr", "wps"].map((k) => `key=${k}`).join("&");
    const page = await api(`${base}/metrics?${keys}&max_points=${MAX_POINTS}`);
    for (const point of page.metrics) addPoint(point);
  }

  function follow() {
    const stream = new EventSource(`${base}/events?history=false`);
    stream.addEventListener("open", () => loadHistory().catch((err) => flash(`metrics: ${err.message}`)));
    stream.addEventListener("metric", (event) => addPoint(JSON.parse(event.data)));
    stream.addEventListener("status", (event) => render(JSON.parse(event.data)));
    stream.addEventListener("end", (event) => {
      stream.close();
      const end = JSON.parse(event.data);
      if (end.status === "deleted") flash("this job was deleted");
      else if (!deleting) api(base).then(render).catch(() => {});
    });
  }

  // No such job (or not this key's): a page that says so in place of the job's empty skeleton.
  function notFound() {
    root.classList.add("hidden");
    document.getElementById("not-found").classList.remove("hidden");
    document.title = "Not found · LSTM LM";
  }

  async function start() {
    await Dash.ready;
    let first;
    try {
      first = await api(base);
    } catch (err) {
      if (err.status === 404) notFound();
      else flash(`could not load the job: ${err.message}`);
      return;
    }
    datasetName = await Dash.datasetName(first.dataset_id);
    render(first);
    follow();
    loadLogs();
  }

  start();
})();
