// Shared helpers of the dashboard's pages: the JSON API client, the key's scope, formatting.
"use strict";

const Dash = (() => {
  const SCOPES = { read: 1, write: 2, admin: 3 };

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && problem.detail) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem || {};
    }
  }

  function toLogin() {
    const here = location.pathname + location.search;
    if (location.pathname !== "/login") location.assign(`/login?next=${encodeURIComponent(here)}`);
  }

  // fetch a JSON API path; throws ApiError with the problem+json body on failure.
  async function api(path, { method = "GET", json, headers = {}, signal, allow401 = false } = {}) {
    const init = { method, headers: { Accept: "application/json", ...headers }, signal, credentials: "same-origin" };
    if (json !== undefined) {
      init.body = JSON.stringify(json);
      init.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(path, init);
    if (response.status === 401 && !allow401) toLogin();
    if (response.status === 204) return null;
    const text = await response.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = { detail: text }; }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  // The key's scope from GET /v1/whoami (with authentication off: a local admin without a key id).
  // Pages start loading once it is known; without a valid key it never resolves, as the browser is
  // on its way to the login page. The login page itself asks nothing before the key is given.
  let identity = null;
  const ready = (async () => {
    if (location.pathname !== "/login") {
      try {
        identity = await api("/v1/whoami");
      } catch (err) {
        identity = null;
        if (err.status === 401) await new Promise(() => {});
      }
    }
    applyScope();
  })();

  function can(scope) {
    if (!identity || !identity.scope) return true;
    return (SCOPES[identity.scope] || 0) >= (SCOPES[scope] || 99);
  }

  // Hide what the key's scope does not allow (`data-needs="write"`) and show notes meant only for
  // keys that lack a scope (`data-lacks="write"`, hidden until the scope is known).
  function applyScope(root = document) {
    root.querySelectorAll("[data-needs]").forEach((node) => {
      node.classList.toggle("no-scope", !can(node.dataset.needs));
    });
    root.querySelectorAll("[data-lacks]").forEach((node) => {
      node.classList.toggle("no-scope", can(node.dataset.lacks));
    });
    if (root !== document) return;
    // With authentication off the server answers as a local admin without a key id: nothing to log out of.
    if (identity && identity.id) {
      document.getElementById("whoami").textContent = `${identity.name} · ${identity.scope}`;
      document.getElementById("logout").classList.remove("hidden");
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const logout = document.getElementById("logout");
    if (logout) {
      logout.addEventListener("click", async (event) => {
        event.preventDefault();
        try { await api("/v1/session", { method: "DELETE", allow401: true }); } catch (_) { /* already out */ }
        location.assign("/login");
      });
    }
  });

  // POST a JSON body and read the answer as Server-Sent Events (`data: {...}` ... `data: [DONE]`).
  async function postEvents(path, json, onData, signal) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(json),
      credentials: "same-origin",
      signal,
    });
    if (response.status === 401) toLogin();
    if (!response.ok) {
      let problem = null;
      try { problem = await response.json(); } catch (_) { /* not JSON */ }
      throw new ApiError(response.status, problem);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        onData(JSON.parse(data));
      }
    }
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else if (key in node) node[key] = value;
      else node.setAttribute(key, value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function num(value, digits = 2) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
  }

  // A size in binary units, as the command-line client writes it: "512 bytes", "4.00 KiB", "12.3 MiB".
  function bytes(n) {
    if (n === null || n === undefined || !Number.isFinite(n)) return "–";
    const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    if (i === 0) return `${num(n, 0)} bytes`;
    return `${n.toFixed(n < 10 ? 2 : 1)} ${units[i]}`;
  }

  // A length of time, as the command-line client writes it: "45s", "3m 20s", "1h 05m", "2d 3h"
  // (under 10 s to a tenth, under one in milliseconds: "4.2s", "40 ms").
  function seconds(s) {
    if (s === null || s === undefined || !Number.isFinite(s) || s < 0) return "–";
    if (s < 0.9995) return `${Math.round(s * 1000)} ms`;
    if (s < 9.95) return `${s.toFixed(1)}s`;
    const whole = Math.round(s);
    const [d, h, m, sec] = [Math.floor(whole / 86400), Math.floor((whole % 86400) / 3600), Math.floor((whole % 3600) / 60), whole % 60];
    const two = (v) => String(v).padStart(2, "0");
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${two(m)}m`;
    if (m) return `${m}m ${two(sec)}s`;
    return `${sec}s`;
  }

  function age(iso) {
    if (!iso) return "–";
    const stamp = Date.parse(/[zZ]|[+-]\d\d:\d\d$/.test(iso) ? iso : `${iso}Z`);
    const s = Math.max(0, (Date.now() - stamp) / 1000);
    if (s < 60) return `${Math.round(s)} s`;
    if (s < 3600) return `${Math.round(s / 60)} min`;
    if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
    return `${(s / 86400).toFixed(1)} d`;
  }

  function flash(message) {
    const box = document.getElementById("flash");
    box.textContent = message;
    box.classList.toggle("hidden", !message);
  }

  // Datasets by id, fetched once each (null when it cannot be read), and their names.
  const datasets = new Map();
  function dataset(id) {
    if (!datasets.has(id)) datasets.set(id, api(`/v1/datasets/${encodeURIComponent(id)}`).catch(() => null));
    return datasets.get(id);
  }
  function datasetName(id) {
    return dataset(id).then((d) => (d ? d.name : id));
  }

  // A job's tokenizer (from its evaluation, else its dataset's); null when unknown.
  async function jobTokenizer(job) {
    if (job.evaluation && job.evaluation.tokenizer) return job.evaluation.tokenizer;
    const d = await dataset(job.dataset_id);
    return d && d.tokenizer ? d.tokenizer.kind : null;
  }

  // The distinct tokenizers of some jobs (known ones only), sorted: more than one means their
  // per-token perplexities do not compare, and word perplexity is what does.
  function tokenizersOf(jobs) {
    return [...new Set(jobs.map((j) => j.evaluation && j.evaluation.tokenizer).filter(Boolean))].sort();
  }

  // Word perplexity from a per-token perplexity of a split with `tokens` tokens and `words` words:
  // the same log-loss spread over the words, ppl ** (tokens / words).
  function wordPerplexity(ppl, tokens, words) {
    if (!Number.isFinite(ppl) || ppl <= 0 || !tokens || !words) return null;
    return Math.exp((Math.log(ppl) * tokens) / words);
  }

  // The datasets a key may see as the options of a <select>, `wanted` chosen when it is among them.
  async function datasetOptions(select, wanted) {
    const page = await api("/v1/datasets?limit=200");
    select.replaceChildren(
      ...page.items.map((d) =>
        el("option", {
          value: d.id,
          text: `${d.name} (${d.tokenizer ? `${d.tokenizer.kind} tokenizer, ` : ""}${num(d.train_tokens, 0)} train tokens, vocabulary ${num(d.vocab_size, 0)})`,
        }),
      ),
    );
    if (!page.items.length) select.append(el("option", { value: "", text: "no datasets: upload one" }));
    if (wanted) select.value = wanted;
    return page.items;
  }

  // The trained models a key may use (each job, its best checkpoint, aliases) as the options of a <select>.
  async function modelOptions(select, wanted) {
    const { data } = await api("/v1/models");
    const options = [];
    for (const card of data) {
      const label = card.id === card.job_id ? `job ${card.id}` : `alias ${card.id}`;
      options.push(el("option", { value: card.id, text: `${label} · epoch ${card.epoch} · valid ppl ${num(card.valid_ppl)}` }));
      if (card.id === card.job_id) {
        options.push(el("option", { value: card.checkpoint_id, text: `  checkpoint ${card.checkpoint_id} (${card.kind})` }));
      }
    }
    if (!options.length) options.push(el("option", { value: "", text: "no trained models yet" }));
    select.replaceChildren(...options);
    if (wanted) select.value = wanted;
  }

  // POST a multipart form (file uploads) with its upload progress shown in `bar` and `status`;
  // resolves to { status, body } (body: the parsed JSON answer, {} when it is not JSON).
  function upload(path, form, bar, status) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", path);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", (e) => {
        if (!e.lengthComputable) return;
        bar.style.width = `${((e.loaded / e.total) * 100).toFixed(1)}%`;
        status.textContent = `${bytes(e.loaded)} of ${bytes(e.total)}`;
      });
      xhr.addEventListener("load", () => {
        if (xhr.status === 401) toLogin();
        let body = {};
        try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
        bar.style.width = xhr.status < 300 ? "100%" : "0";
        resolve({ status: xhr.status, body });
      });
      xhr.addEventListener("error", () => resolve({ status: 0, body: { detail: "the server did not answer" } }));
      status.textContent = "uploading…";
      bar.style.width = "0";
      xhr.send(form);
    });
  }

  // The pager under a list: keyset pages of the API ("Older" follows `next_cursor`, "Newer" goes
  // back, "Newest" to the first page). `onChange` reloads the list; `shown(next)` after each load.
  function pager(onChange, cursor = null) {
    const before = []; // cursors of the pages before this one
    let next = null;
    const [newest, newer, older] = ["newest", "newer", "older"].map((id) => document.getElementById(id));
    older.addEventListener("click", () => {
      before.push(cursor);
      cursor = next;
      onChange();
    });
    newer.addEventListener("click", () => {
      cursor = before.pop() || null;
      onChange();
    });
    newest.addEventListener("click", () => {
      before.length = 0;
      cursor = null;
      onChange();
    });
    return {
      get cursor() { return cursor; },
      reset() {
        before.length = 0;
        cursor = null;
      },
      shown(nextCursor) {
        next = nextCursor;
        older.disabled = !next;
        newer.disabled = before.length === 0;
        newest.disabled = !cursor;
      },
    };
  }

  // A live list: one keyset page of `path` (query from `params()`), a row each drawn by `row` into
  // `#<table> tbody`, `#empty` when there is none, the pager under it; polled every 2 s (10 s while
  // the tab is hidden). `onItems(items)`, if given, sees each page's items before their rows are drawn.
  // Returns { load, pages }: call `load` to show the list now.
  const LIST_PAGE_SIZE = 50;
  const LIST_POLL_MS = 2000;
  function liveList({ path, params = () => new URLSearchParams(), row, table, what, cursor = null, onItems = null }) {
    let timer = null;
    const pages = pager(load, cursor);
    async function load() {
      clearTimeout(timer);
      const query = params();
      query.set("limit", String(LIST_PAGE_SIZE));
      if (pages.cursor) query.set("cursor", pages.cursor);
      try {
        const page = await api(`${path}?${query}`);
        if (onItems) onItems(page.items);
        document.querySelector(`#${table} tbody`).replaceChildren(...page.items.map(row));
        document.getElementById("empty").classList.toggle("hidden", page.items.length > 0);
        pages.shown(page.next_cursor);
        flash("");
      } catch (err) {
        flash(`could not load the ${what}: ${err.message}`);
      }
      timer = setTimeout(load, document.hidden ? LIST_POLL_MS * 5 : LIST_POLL_MS);
    }
    document.addEventListener("visibilitychange", () => { if (!document.hidden) load(); });
    return { load, pages };
  }

  const TERMINAL = ["succeeded", "failed", "canceled"];
  const PHASE_WORDS = { validate: "validating", test: "testing" };

  // Where a job stands, for its progress bar and label. `progress.fraction` is of the current pass:
  // the epoch's training, then its validation pass (`phase` validate), and after the last epoch the
  // test pass (`phase` test); an evaluation pass counts its epoch as trained and says how far it is.
  function standing(job) {
    const p = job.progress || {};
    const epochs = p.epochs || (job.config && job.config.max_max_epoch) || 1;
    const fraction = Number.isFinite(p.fraction) ? Math.min(1, Math.max(0, p.fraction)) : 0;
    let done = 0;
    if (job.status === "succeeded") done = 1;
    else if (p.epoch && (p.phase === "validate" || p.phase === "test" || p.phase === "done")) done = p.epoch / epochs;
    else if (p.epoch) done = (p.epoch - 1 + fraction) / epochs;
    const word = PHASE_WORDS[p.phase];
    const active = job.status === "running" || job.status === "canceling";
    return {
      done: Math.min(1, Math.max(0, done)),
      epoch: p.epoch || null,
      epochs,
      // "validating 40%" while a validation or test pass runs, so a job never looks stuck at 100%.
      phase: active && word ? `${word} ${Math.floor(fraction * 100)}%` : null,
    };
  }

  return {
    api, ApiError, ready, can, applyScope, postEvents, el, num, bytes, seconds, age, flash, dataset, datasetName, datasetOptions,
    modelOptions, upload, pager, liveList, standing, jobTokenizer, tokenizersOf, wordPerplexity, TERMINAL,
  };
})();
