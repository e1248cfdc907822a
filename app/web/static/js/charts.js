// Live line charts on uPlot: points arrive one by one (or as a downsampled history) keyed by step;
// charts of one group share the step axis (cursor, zoom and range).
"use strict";

const WHOLE_INCREMENTS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 2500, 5e3, 1e4, 2e4, 25e3, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7];
const COLORS = ["#2f6fdf", "#e0662d", "#2a9d55", "#a040c0", "#c9a100", "#d0324a", "#1aa3b5", "#6d6d6d"];

class ChartGroup {
  constructor(key) {
    this.key = key;
    this.charts = [];
    this.syncing = false;
  }

  // The union of the charts' step ranges, so every chart shows the same steps.
  range() {
    let lo = Infinity;
    let hi = -Infinity;
    for (const chart of this.charts) {
      for (const points of chart.points.values()) {
        for (const step of points.keys()) {
          if (step < lo) lo = step;
          if (step > hi) hi = step;
        }
      }
    }
    return lo <= hi ? [lo, hi === lo ? lo + 1 : hi] : null;
  }

  zoom(source, min, max) {
    if (this.syncing) return;
    this.syncing = true;
    for (const chart of this.charts) {
      if (chart !== source && chart.plot) chart.plot.setScale("x", { min, max });
    }
    this.syncing = false;
  }
}

class LiveChart {
  // series: [{key, label}]; options: {logY, height, group, xLabel, yLabel, xValues}
  constructor(container, series, options = {}) {
    this.container = container;
    this.series = series;
    this.options = options;
    this.logY = Boolean(options.logY);
    this.points = new Map(series.map((s) => [s.key, new Map()]));
    this.plot = null;
    this.pending = false;
    this.group = options.group || null;
    if (this.group) this.group.charts.push(this);
    new ResizeObserver(() => {
      if (this.plot) this.plot.setSize(this.size());
    }).observe(container);
  }

  size() {
    return { width: Math.max(200, this.container.clientWidth), height: this.options.height || 300 };
  }

  add(key, step, value) {
    const points = this.points.get(key);
    if (!points || value === null || value === undefined || !Number.isFinite(value)) return;
    points.set(step, value);
    this.schedule();
  }

  count() {
    let n = 0;
    for (const points of this.points.values()) n += points.size;
    return n;
  }

  setLog(logY) {
    this.logY = logY;
    if (this.plot) {
      this.plot.destroy();
      this.plot = null;
    }
    this.schedule();
  }

  // Redraws are batched: a burst of points costs one redraw per animation frame.
  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
      if (this.group) {
        for (const other of this.group.charts) if (other !== this && other.plot) other.plot.redraw(true, true);
      }
    });
  }

  data() {
    const steps = new Set();
    for (const points of this.points.values()) for (const step of points.keys()) steps.add(step);
    const xs = Array.from(steps).sort((a, b) => a - b);
    const columns = this.series.map((s) => {
      const points = this.points.get(s.key);
      return xs.map((x) => (points.has(x) ? points.get(x) : null));
    });
    return [xs, ...columns];
  }

  draw() {
    const data = this.data();
    this.container.dataset.points = String(this.count());
    if (this.plot) {
      this.plot.setData(data);
      return;
    }
    if (data[0].length === 0) return;
    const group = this.group;
    const self = this;
    const opts = {
      ...this.size(),
      cursor: group ? { sync: { key: group.key } } : {},
      scales: {
        x: {
          time: false,
          range: (u, min, max) => (group && group.range()) || [min, max === min ? min + 1 : max],
        },
        y: this.logY ? { distr: 3 } : {},
      },
      axes: [
        // Steps and epochs are whole numbers: ticks only at whole numbers.
        { label: this.options.xLabel || "step", incrs: WHOLE_INCREMENTS },
        { label: this.options.yLabel || "", size: 60 },
      ],
      series: [
        { label: this.options.xLabel || "step" },
        ...this.series.map((s, i) => ({
          label: s.label || s.key,
          stroke: s.color || COLORS[i % COLORS.length],
          width: s.width || 1.5,
          spanGaps: true,
          points: { show: s.points === undefined ? "auto" : s.points },
          value: (u, v) => (v === null || v === undefined ? "–" : Dash.num(v, 3)),
        })),
      ],
      hooks: {
        setScale: [
          (u, key) => {
            if (key === "x" && group) group.zoom(self, u.scales.x.min, u.scales.x.max);
          },
        ],
      },
    };
    this.plot = new uPlot(opts, data, this.container);
  }
}
