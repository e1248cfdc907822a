// Compare: the validation perplexity of the chosen jobs, epoch by epoch, on one chart.
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
          return { job, points: page.metrics };
        } catch (err) {
          flash(`${id}: ${err.message}`);
          return null;
        }
      }),
    );
    const shown = jobs.filter(Boolean);
    if (chart) chart.plot && chart.plot.destroy();
    container.replaceChildren();
    chart = new LiveChart(
      container,
      shown.map(({ job }) => ({ key: job.id, label: `${job.id} (${job.preset})`, width: 2 })),
      { logY: logBox.checked, xLabel: "epoch", yLabel: "valid perplexity", height: 360 },
    );
    shown.forEach(({ job, points }) => points.forEach((p, i) => chart.add(job.id, i + 1, p.value)));
    const rows = await Promise.all(
      shown.map(async ({ job, points }) =>
        el(
          "tr",
          {},
          el("td", {}, el("a", { href: `/jobs/${job.id}`, text: job.id })),
          el("td", { text: job.preset }),
          el("td", { text: await Dash.datasetName(job.dataset_id) }),
          el("td", { class: "num", text: points.length }),
          el("td", { class: "num", text: num(job.best_valid_ppl) }),
          el("td", { class: "num", text: num(job.test_ppl) }),
        ),
      ),
    );
    document.querySelector("#summary tbody").replaceChildren(...rows);
  }

  Dash.ready
    .then(() => Promise.all([loadChoices(), draw()]))
    .catch((err) => flash(`could not load: ${err.message}`));
})();
