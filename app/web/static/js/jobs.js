// The jobs list: one page of the API's keyset pages, filtered by status, polled for live updates.
"use strict";

(() => {
  const { el, num, age } = Dash;
  const params = new URLSearchParams(location.search);
  const statuses = params.getAll("status");
  const list = Dash.liveList({
    path: "/v1/jobs",
    params: () => new URLSearchParams(statuses.map((s) => ["status", s])),
    row,
    table: "jobs",
    what: "jobs",
    cursor: params.get("cursor"),
  });

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
    const dataset = el("span", { text: job.dataset_id });
    Dash.datasetName(job.dataset_id).then((name) => { dataset.textContent = name; });
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
      el("td", { class: "num", text: num(wps, 0) }),
      el("td", { text: age(job.created_at) }),
    );
  }

  Dash.ready.then(list.load);
})();
