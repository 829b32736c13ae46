/* sft dashboard: a hash-routed page over the read-only JSON API; no build step.
 *
 * Views: #/runs, #/run/<name>, #/compare?runs=a,b&metric=loss&x=step, #/datasets, #/dataset/<name>?sample=0
 * Live: the current view's refresh() runs every poll_seconds (from /api/health); charts are updated in
 * place with uPlot.setData, the page is never reloaded. All data is inserted with textContent (the API
 * returns training data, which may contain markup).
 * Test hook: window.sftDashboard exposes the chart instances and the current view.
 */
(function () {
  "use strict";

  const COLORS = ["#2f6fdf", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#0b7285", "#e67700", "#495057"];
  const METRICS = {
    loss: "train loss", eval_loss: "eval loss", lr: "learning rate", grad_norm: "grad norm",
    tokens_per_sec: "tokens/s", step_time_sec: "step time (s)", epoch: "epoch",
  };
  const X_AXES = { step: "step", epoch: "epoch", elapsed_h: "elapsed (h)" };
  const state = { pollSeconds: 5, view: null, timer: null, charts: {}, route: null };
  window.sftDashboard = state;

  // ------------------------------------------------------------------------------------------ helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  async function api(path) {
    const response = await fetch(path, { cache: "no-cache", headers: { Accept: "application/json" } });
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(`${response.status} ${path}: ${detail}`);
    }
    return response.json();
  }

  function fmtNum(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    if (typeof value !== "number") return String(value);
    if (value !== 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e6)) return value.toExponential(3);
    const text = value.toFixed(digits === undefined ? 4 : digits);
    return text.includes(".") ? text.replace(/\.?0+$/, "") : text;
  }

  function fmtTick(value) {
    if (value === null || value === undefined) return "";
    if (value !== 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e6)) return value.toExponential(1);
    return fmtNum(value, 4);
  }

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    seconds = Math.max(0, Math.round(seconds));
    const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
    const m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    const hms = `${String(h).padStart(2, "0")}:${String(m).padStart(2, "0")}:${String(s).padStart(2, "0")}`;
    return d ? `${d}d ${hms}` : hms;
  }

  function fmtAgo(iso) {
    if (!iso) return "–";
    const seconds = (Date.now() - Date.parse(iso)) / 1000;
    if (seconds < 90) return `${Math.max(0, Math.round(seconds))} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
    return new Date(iso).toISOString().slice(0, 16).replace("T", " ");
  }

  function pill(status) { return el("span", { class: `pill ${status}`, text: status, "data-status": status }); }

  function progressBar(percentage) {
    const pct = Math.max(0, Math.min(100, percentage || 0));
    return el("div", { class: "bar", title: `${fmtNum(percentage, 1)} %` }, el("span", { style: `width:${pct}%` }));
  }

  function stat(key, value, id) { return el("div", { class: "stat" }, el("div", { class: "k", text: key }),
    el("div", { class: "v", text: value, id: id })); }

  function errorBox(error) { return el("div", { class: "error-box", text: String(error.message || error) }); }

  function setLive(text, isError) {
    const node = document.getElementById("live");
    node.textContent = text;
    node.classList.toggle("error", !!isError);
  }

  function encodeName(name) { return encodeURIComponent(name); }

  // -------------------------------------------------------------------------------------------- charts

  function destroyCharts() {
    for (const chart of Object.values(state.charts)) chart.destroy();
    state.charts = {};
  }

  function nonNullCount(values) { return values.filter((v) => v !== null && v !== undefined).length; }

  /** A line chart in `box` (replaced on first data); later calls only swap the data. */
  function lineChart(key, box, title, xLabel, labels, data, opts) {
    const existing = state.charts[key];
    const usable = data.length > 1 && data[0].length > 0 && data.slice(1).some((s) => nonNullCount(s) > 0);
    box.dataset.points = usable ? String(nonNullCount(data[1])) : "0";
    if (existing && existing.series.length === labels.length + 1) {
      existing.setData(data);
      return existing;
    }
    if (existing) { existing.destroy(); delete state.charts[key]; }
    box.replaceChildren();
    if (!usable) {
      box.append(el("div", { class: "empty", text: `${title}: not logged yet` }));
      return null;
    }
    const width = Math.max(300, box.clientWidth - 12);
    const series = [{ label: xLabel }].concat(labels.map((label, i) => ({
      label, stroke: (opts && opts.colors && opts.colors[i]) || COLORS[i % COLORS.length], width: 1.6,
      spanGaps: true, points: { show: data[0].length < 60 },
      value: (u, v) => fmtNum(v),
    })));
    const chart = new uPlot({
      title, width, height: (opts && opts.height) || 230, series,
      scales: { x: { time: false }, y: (opts && opts.log) ? { distr: 3 } : {} },
      axes: [{ label: xLabel }, { size: 70, values: (u, ticks) => ticks.map(fmtTick) }],
      cursor: { drag: { x: true, y: false } },
      legend: { live: true },
    }, data, box);
    state.charts[key] = chart;
    return chart;
  }

  function barChart(key, box, title, edges, counts) {
    box.replaceChildren();
    if (state.charts[key]) { state.charts[key].destroy(); delete state.charts[key]; }
    if (!counts.length) { box.append(el("div", { class: "empty", text: "no samples" })); return; }
    const centers = counts.map((_, i) => (edges[i] + edges[i + 1]) / 2);
    state.charts[key] = new uPlot({
      title, width: Math.max(300, box.clientWidth - 12), height: 240,
      scales: { x: { time: false, range: [edges[0], edges[edges.length - 1]] } },
      series: [{ label: "tokens" }, { label: "samples", fill: "rgba(47,111,223,0.35)", stroke: COLORS[0],
        paths: uPlot.paths.bars({ size: [0.92, 80] }), points: { show: false } }],
      axes: [{ label: "tokens per sample" }, { label: "samples" }],
    }, [centers, counts], box);
    box.dataset.points = String(counts.length);
  }

  window.addEventListener("resize", () => {
    for (const chart of Object.values(state.charts)) {
      const box = chart.root.parentElement;
      if (box) chart.setSize({ width: Math.max(300, box.clientWidth - 12), height: chart.height });
    }
  });

  /** The chart as a PNG data URL with its title and legend drawn in (uPlot draws those in HTML). */
  function chartPng(chart, title) {
    const source = chart.ctx.canvas;
    const ratio = source.width / chart.width || 1;
    const labels = chart.series.slice(1);
    const header = Math.round(ratio * (34 + 18 * Math.ceil(labels.length / 3)));
    const canvas = document.createElement("canvas");
    canvas.width = source.width; canvas.height = source.height + header;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = "#1d232b"; ctx.font = `${Math.round(15 * ratio)}px sans-serif`;
    ctx.fillText(title, 10 * ratio, 20 * ratio);
    ctx.font = `${Math.round(12 * ratio)}px sans-serif`;
    labels.forEach((series, i) => {
      const x = (10 + (i % 3) * 230) * ratio, y = (40 + Math.floor(i / 3) * 18) * ratio;
      ctx.fillStyle = typeof series.stroke === "function" ? series.stroke(chart, i + 1) : series.stroke;
      ctx.fillRect(x, y - 9 * ratio, 14 * ratio, 4 * ratio);
      ctx.fillStyle = "#1d232b"; ctx.fillText(String(series.label), x + 20 * ratio, y - 3 * ratio);
    });
    ctx.drawImage(source, 0, header);
    return canvas.toDataURL("image/png");
  }

  function download(url, filename) {
    const link = el("a", { href: url, download: filename });
    document.body.append(link); link.click(); link.remove();
  }

  // ----------------------------------------------------------------------------------------- runs list

  const runsView = {
    title: "runs",
    async mount(root) {
      this.table = el("tbody");
      this.problems = el("div");
      const compareButton = el("button", { class: "primary", id: "compare-selected", onclick: () => {
        const names = [...this.table.querySelectorAll("input[type=checkbox]:checked")].map((c) => c.value);
        location.hash = `#/compare?runs=${names.map(encodeName).join(",")}`;
      } }, "Compare selected");
      root.append(
        el("h1", {}, "Runs"),
        el("div", { class: "toolbar" }, compareButton,
          el("span", { class: "muted", id: "runs-source" })),
        el("table", { id: "runs-table" }, el("thead", {}, el("tr", {},
          el("th", {}, ""), el("th", {}, "run"), el("th", {}, "status"), el("th", {}, "progress"),
          el("th", { class: "num" }, "step"), el("th", { class: "num" }, "epoch"),
          el("th", { class: "num" }, "last loss"), el("th", { class: "num" }, "final loss"),
          el("th", { class: "num" }, "ETA"), el("th", {}, "updated"), el("th", {}, "history"))), this.table),
        this.problems);
      this.selected = new Set();
      await this.refresh();
    },
    async refresh() {
      const data = await api("/api/runs");
      document.getElementById("runs-source").textContent = `${data.runs.length} run(s) in ${data.model_root}/ and artifacts/index.yaml`;
      this.table.querySelectorAll("input:checked").forEach((c) => this.selected.add(c.value));
      this.table.querySelectorAll("input:not(:checked)").forEach((c) => this.selected.delete(c.value));
      this.table.replaceChildren(...data.runs.map((run) => el("tr", { "data-run": run.name },
        el("td", {}, el("input", { type: "checkbox", value: run.name, "aria-label": `select ${run.name}`,
          checked: this.selected.has(run.name) })),
        el("td", {}, el("a", { href: `#/run/${encodeName(run.name)}`, class: "run-link" }, run.name)),
        el("td", { title: run.status_reason }, pill(run.status)),
        el("td", {}, progressBar(run.percentage)),
        el("td", { class: "num" }, run.step !== null ? `${fmtNum(run.step, 0)} / ${fmtNum(run.total_steps, 0)}` : "–"),
        el("td", { class: "num" }, fmtNum(run.epoch, 2)),
        el("td", { class: "num" }, fmtNum(run.last_loss)),
        el("td", { class: "num" }, fmtNum(run.final_loss)),
        el("td", { class: "num" }, run.eta_sec !== null ? fmtDuration(run.eta_sec) : "–"),
        el("td", {}, fmtAgo(run.last_update)),
        el("td", { class: "muted" }, run.index ? `${run.index.id} (${run.index.status})${run.attempts > 1 ? ` +${run.attempts - 1}` : ""}` : "not recorded yet"))));
      this.problems.replaceChildren(...data.problems.map((p) => errorBox(p)));
    },
  };

  // -------------------------------------------------------------------------------------------- a run

  const RUN_CHARTS = [
    { key: "loss", title: "Loss", series: ["loss", "eval_loss"], labels: ["train loss", "eval loss"] },
    { key: "lr", title: "Learning rate", series: ["lr"], labels: ["lr"] },
    { key: "grad_norm", title: "Grad norm", series: ["grad_norm"], labels: ["grad norm"] },
    { key: "tokens_per_sec", title: "Throughput (tokens/s)", series: ["tokens_per_sec"], labels: ["tokens/s"] },
    { key: "step_time_sec", title: "Step time (s)", series: ["step_time_sec"], labels: ["s/step"] },
  ];

  const runView = {
    title: "run",
    async mount(root, params) {
      this.name = params.name;
      this.head = el("h1", {}, this.name);
      this.reason = el("div", { class: "muted", id: "status-reason" });
      this.stats = el("div", { class: "stats" });
      this.chartBoxes = {};
      const charts = el("div", { class: "charts" }, RUN_CHARTS.map((c) => {
        const box = el("div", { class: "chart", id: `chart-${c.key}` });
        this.chartBoxes[c.key] = box;
        return box;
      }));
      this.final = el("div");
      this.attempts = el("div");
      this.config = el("div");
      this.dataset = el("div");
      this.log = el("pre", { class: "log", id: "console-log" }, "…");
      this.logPath = el("span", { class: "muted" });
      root.append(this.head, this.reason, el("h2", {}, "Progress"), this.stats, el("h2", {}, "Curves"), charts,
        el("div", { class: "cols" },
          el("div", {}, el("h2", {}, "Final metrics"), this.final, el("h2", {}, "History (index.yaml)"), this.attempts),
          el("div", {}, el("h2", {}, "Dataset"), this.dataset, el("h2", {}, "Config"), this.config)),
        el("h2", {}, "Console log ", this.logPath), this.log);
      await this.refresh(true);
      this.loadOnce().catch((e) => this.config.replaceChildren(errorBox(e)));
    },
    async refresh() {
      const [data, detail] = await Promise.all([
        api(`/api/runs/${encodeName(this.name)}/series`), api(`/api/runs/${encodeName(this.name)}`)]);
      this.render(data, detail);
      const log = await api(`/api/runs/${encodeName(this.name)}/log?lines=300`);
      const atBottom = this.log.scrollTop + this.log.clientHeight >= this.log.scrollHeight - 4;
      this.log.textContent = log.lines.length ? log.lines.join("\n") : (log.note || "(empty)");
      this.logPath.textContent = log.path ? `${log.path}${log.truncated ? " (tail)" : ""}` : "";
      if (atBottom) this.log.scrollTop = this.log.scrollHeight;
    },
    render(data, detail) {
      const s = data.summary, series = data.series;
      this.head.replaceChildren(this.name, " ", pill(s.status));
      this.reason.textContent = s.status_reason;
      const lastTps = [...series.tokens_per_sec].reverse().find((v) => v !== null);
      this.stats.replaceChildren(
        stat("step", s.step !== null ? `${fmtNum(s.step, 0)} / ${fmtNum(s.total_steps, 0)}` : "–", "stat-step"),
        el("div", { class: "stat" }, el("div", { class: "k", text: "progress" }),
          el("div", { class: "v", text: `${fmtNum(s.percentage, 1)} %`, id: "stat-progress" }), progressBar(s.percentage)),
        stat("epoch", fmtNum(s.epoch, 3)),
        stat("last loss", fmtNum(s.last_loss), "stat-last-loss"),
        stat("final loss (mean)", fmtNum(s.final_loss), "stat-final-loss"),
        stat("learning rate", fmtNum(s.last_lr)),
        stat("elapsed", fmtDuration(s.elapsed_sec)),
        stat("ETA", s.status === "running" ? fmtDuration(s.eta_sec) : "–", "stat-eta"),
        stat("tokens/s", fmtNum(lastTps, 1)),
        stat("updated", fmtAgo(s.last_update)));
      for (const c of RUN_CHARTS) {
        const columns = [series.step].concat(c.series.map((k) => series[k]));
        const present = c.series.filter((k) => nonNullCount(series[k]) > 0);
        const labels = c.labels.filter((_, i) => present.includes(c.series[i]));
        const shown = [series.step].concat(present.map((k) => series[k]));
        lineChart(c.key, this.chartBoxes[c.key], c.title, "step", labels.length ? labels : c.labels,
          present.length ? shown : columns);
      }
      const metrics = Object.entries(detail.final_metrics || {});
      this.final.replaceChildren(metrics.length
        ? el("table", { class: "kv", id: "final-metrics" }, metrics.map(([k, v]) => el("tr", {}, el("td", {}, k),
          el("td", { class: "num" }, typeof v === "number" ? fmtNum(v) : JSON.stringify(v)))))
        : el("div", { class: "muted", text: "no train_results.json yet" }));
      const images = (detail.model_files || []).filter((f) => f.endsWith(".png"));
      if (images.length && detail.model_dir) {
        this.final.append(el("div", { class: "muted" }, "plots: ", images.map((f) =>
          el("a", { href: `/files/${detail.model_dir}/${encodeName(f)}`, target: "_blank", rel: "noopener" }, f, " "))));
      }
      this.attempts.replaceChildren(detail.attempts.length
        ? el("table", {}, el("tr", {}, el("th", {}, "id"), el("th", {}, "status"), el("th", {}, "started"),
          el("th", {}, "completed"), el("th", {}, "notes")), detail.attempts.map((a) => el("tr", {},
          el("td", {}, a.id), el("td", {}, pill(a.status === "completed" ? "finished" : a.status)),
          el("td", {}, a.started_at || "–"), el("td", {}, a.completed_at || "–"), el("td", {}, a.notes || ""))))
        : el("div", { class: "muted", text: "not in artifacts/index.yaml yet (recorded when the run ends)" }));
    },
    async loadOnce() {
      const [config, dataset] = await Promise.all([
        api(`/api/runs/${encodeName(this.name)}/config`), api(`/api/runs/${encodeName(this.name)}/dataset`)]);
      const blocks = [];
      if (config.training_yaml) blocks.push(el("details", { open: true }, el("summary", {}, `training YAML: ${config.training_yaml_path}`),
        el("pre", { class: "doc", id: "training-yaml" }, JSON.stringify(config.training_yaml, null, 2))));
      blocks.push(config.config
        ? el("details", {}, el("summary", {}, `config.yaml (${config.config_source}, redacted)`),
          el("pre", { class: "doc", id: "run-config" }, JSON.stringify(config.config, null, 2)))
        : el("div", { class: "muted", text: `config.yaml: ${config.config_source}` }));
      if (config.archive_metadata) blocks.push(el("details", {}, el("summary", {}, "archive metadata.yaml"),
        el("pre", { class: "doc" }, JSON.stringify(config.archive_metadata, null, 2))));
      this.config.replaceChildren(...blocks);
      this.dataset.replaceChildren(dataset.available
        ? el("div", {}, dataset.datasets.map((d) => el("div", {}, `${d.key} → `, d.browsable
          ? el("a", { href: `#/dataset/${encodeName(d.name)}`, class: "dataset-link" }, d.name)
          : el("span", { class: "muted" }, `${d.file_name || "?"} (not browsable)`))))
        : el("div", { class: "muted", text: dataset.reason }));
    },
  };

  // ------------------------------------------------------------------------------------------ compare

  const compareView = {
    title: "compare",
    async mount(root, params) {
      this.selected = new Set((params.query.get("runs") || "").split(",").filter(Boolean));
      this.metric = METRICS[params.query.get("metric")] ? params.query.get("metric") : "loss";
      this.x = X_AXES[params.query.get("x")] ? params.query.get("x") : "step";
      this.picks = el("div", { class: "run-picks card", id: "compare-picks" });
      this.box = el("div", { class: "chart", id: "chart-compare" });
      this.table = el("div");
      const metricSelect = el("select", { id: "compare-metric", onchange: (e) => { this.metric = e.target.value; this.sync(); } },
        Object.entries(METRICS).map(([k, label]) => el("option", { value: k, selected: k === this.metric }, label)));
      const xSelect = el("select", { id: "compare-x", onchange: (e) => { this.x = e.target.value; this.sync(); } },
        Object.entries(X_AXES).map(([k, label]) => el("option", { value: k, selected: k === this.x }, label)));
      root.append(el("h1", {}, "Compare runs"),
        el("div", { class: "two" }, el("div", {}, el("h2", {}, "Runs"), this.picks),
          el("div", {}, el("div", { class: "toolbar" }, "metric ", metricSelect, " x axis ", xSelect,
            el("button", { id: "export-csv", onclick: () => this.exportCsv() }, "Export CSV"),
            el("button", { id: "export-png", onclick: () => this.exportPng() }, "Export PNG")),
          this.box, this.table)));
      await this.refresh();
    },
    sync() {
      const runs = [...this.selected].map(encodeName).join(",");
      history.replaceState(null, "", `#/compare?runs=${runs}&metric=${this.metric}&x=${this.x}`);
      destroyCharts();
      this.refresh().catch((e) => this.table.replaceChildren(errorBox(e)));
    },
    async refresh() {
      const list = await api("/api/runs");
      const names = list.runs.filter((r) => r.has_model_dir).map((r) => r.name);
      this.picks.replaceChildren(...names.map((name) => el("label", {}, el("input", {
        type: "checkbox", value: name, checked: this.selected.has(name), onchange: (e) => {
          if (e.target.checked) this.selected.add(name); else this.selected.delete(name);
          this.sync();
        } }), " ", name)));
      const chosen = [...this.selected].filter((n) => names.includes(n));
      const results = await Promise.all(chosen.map((n) => api(`/api/runs/${encodeName(n)}/series`)));
      this.results = results;
      const tables = results.map((r) => {
        const xs = this.x === "step" ? r.series.step : this.x === "epoch" ? r.series.epoch
          : r.series.elapsed_sec.map((v) => (v === null ? null : v / 3600));
        const ys = r.series[this.metric];
        const pairs = xs.map((x, i) => [x, ys[i]]).filter(([x]) => x !== null).sort((a, b) => a[0] - b[0]);
        const dedup = pairs.filter((p, i) => i === 0 || p[0] !== pairs[i - 1][0]);
        return [dedup.map((p) => p[0]), dedup.map((p) => p[1])];
      });
      if (!tables.length) {
        destroyCharts();
        this.box.replaceChildren(el("div", { class: "empty", text: "tick two or more runs to overlay them" }));
        this.box.dataset.points = "0"; this.box.dataset.series = "0";
        this.table.replaceChildren();
        return;
      }
      const data = tables.length === 1 ? tables[0] : uPlot.join(tables);
      lineChart("compare", this.box, `${METRICS[this.metric]} by ${X_AXES[this.x]}`, X_AXES[this.x], chosen, data,
        { height: 360 });
      this.box.dataset.series = String(chosen.length);
      this.table.replaceChildren(el("table", { id: "compare-table" }, el("tr", {}, el("th", {}, "run"), el("th", {}, "status"),
        el("th", { class: "num" }, "steps"), el("th", { class: "num" }, "last loss"), el("th", { class: "num" }, "final loss"),
        el("th", { class: "num" }, `min ${METRICS[this.metric]}`)),
        results.map((r, i) => el("tr", {}, el("td", {}, el("a", { href: `#/run/${encodeName(r.name)}` }, r.name)),
          el("td", {}, pill(r.summary.status)), el("td", { class: "num" }, fmtNum(r.summary.step, 0)),
          el("td", { class: "num" }, fmtNum(r.summary.last_loss)), el("td", { class: "num" }, fmtNum(r.summary.final_loss)),
          el("td", { class: "num" }, fmtNum(Math.min(...tables[i][1].filter((v) => v !== null))))))));
    },
    exportCsv() {
      const runs = [...this.selected].map(encodeName).join(",");
      download(`/api/compare.csv?runs=${runs}`, `compare_${[...this.selected].join("_")}.csv`);
    },
    exportPng() {
      const chart = state.charts.compare;
      if (!chart) return null;
      const url = chartPng(chart, `${METRICS[this.metric]} by ${X_AXES[this.x]}`);
      download(url, `compare_${this.metric}.png`);
      return url;
    },
  };

  // ----------------------------------------------------------------------------------------- datasets

  const datasetsView = {
    title: "datasets",
    async mount(root) {
      const data = await api("/api/datasets");
      root.append(el("h1", {}, "Datasets"), data.datasets.length
        ? el("table", { id: "datasets-table" }, el("tr", {}, el("th", {}, "data name"), el("th", {}, "dataset_info.json keys")),
          data.datasets.map((d) => el("tr", {}, el("td", {}, el("a", { href: `#/dataset/${encodeName(d.name)}` }, d.name)),
            el("td", {}, d.dataset_keys.join(", ") || "(not registered)"))))
        : el("div", { class: "muted", text: "no dataset in artifacts/data/lf_data/ yet" }));
    },
    async refresh() { /* datasets do not change while a run trains */ },
  };

  /** Markdown subset (headings, tables, lists, code, paragraphs) built with DOM nodes, never innerHTML. */
  function renderMarkdown(text) {
    const root = el("div", { class: "md", id: "dataset-card" });
    const lines = text.split("\n");
    let i = 0;
    const inline = (s) => {
      const node = el("span");
      s.split(/(`[^`]+`|\*\*[^*]+\*\*)/).forEach((part) => {
        if (part.startsWith("`") && part.endsWith("`") && part.length > 1) node.append(el("code", {}, part.slice(1, -1)));
        else if (part.startsWith("**") && part.endsWith("**") && part.length > 3) node.append(el("b", {}, part.slice(2, -2)));
        else node.append(part);
      });
      return node;
    };
    while (i < lines.length) {
      const line = lines[i];
      if (line.startsWith("```")) {
        const body = []; i += 1;
        while (i < lines.length && !lines[i].startsWith("```")) body.push(lines[i++]);
        root.append(el("pre", { class: "doc" }, body.join("\n"))); i += 1; continue;
      }
      const heading = /^(#{1,6})\s+(.*)$/.exec(line);
      if (heading) { root.append(el(`h${Math.min(4, heading[1].length)}`, {}, inline(heading[2]))); i += 1; continue; }
      if (line.trim().startsWith("|")) {
        const rows = [];
        while (i < lines.length && lines[i].trim().startsWith("|")) rows.push(lines[i++]);
        const cells = (r) => r.trim().replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
        const body = rows.filter((r) => !/^\s*\|[\s:|-]+\|\s*$/.test(r));
        root.append(el("table", {}, body.map((r, k) => el("tr", {}, cells(r).map((c) => el(k === 0 ? "th" : "td", {}, inline(c)))))));
        continue;
      }
      if (/^\s*[-*]\s+/.test(line)) {
        const items = [];
        while (i < lines.length && /^\s*[-*]\s+/.test(lines[i])) items.push(lines[i++].replace(/^\s*[-*]\s+/, ""));
        root.append(el("ul", {}, items.map((t) => el("li", {}, inline(t))))); continue;
      }
      if (line.trim()) {
        const para = [];
        while (i < lines.length && lines[i].trim() && !/^(#|\||```|\s*[-*]\s)/.test(lines[i])) para.push(lines[i++]);
        root.append(el("p", {}, inline(para.join(" ")))); continue;
      }
      i += 1;
    }
    return root;
  }

  function shortArgs(args) {
    if (args === null || args === undefined) return "";
    const text = typeof args === "string" ? args : Object.entries(args).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
    return text.length > 90 ? `${text.slice(0, 90)}…` : text;
  }

  function turnNode(turn) {
    const node = el("div", { class: `turn ${turn.role}`, "data-role": turn.role, "data-kind": turn.kind },
      el("div", { class: "head" }, el("span", { class: "role" }, turn.role), `#${turn.index} · ${turn.kind} · ${turn.chars} chars`));
    if (turn.reasoning !== null && turn.reasoning !== undefined) {
      node.append(el("details", { class: "reasoning" }, el("summary", {}, `reasoning (${turn.reasoning.length} chars)`),
        el("pre", {}, turn.reasoning || "(empty think block)")));
    }
    if (turn.role === "tool") {
      const results = turn.results && turn.results.length ? turn.results : [turn.text];
      results.forEach((r, k) => node.append(el("details", { class: "result" },
        el("summary", {}, `tool result${results.length > 1 ? ` ${k + 1}/${results.length}` : ""}: ${(r.split("\n")[0] || "").slice(0, 100)}`),
        el("pre", {}, r))));
    } else if (turn.text) {
      node.append(el("div", { class: "text" }, turn.text));
    }
    for (const call of turn.tool_calls || []) {
      node.append(el("details", { class: "call" },
        el("summary", {}, call.name ? `tool call: ${call.name}(${shortArgs(call.arguments)})` : "tool call (not JSON)"),
        el("pre", {}, call.raw !== undefined ? call.raw : JSON.stringify(call.arguments, null, 2))));
    }
    return node;
  }

  const datasetView = {
    title: "dataset",
    async mount(root, params) {
      this.name = params.name;
      this.position = Math.max(0, parseInt(params.query.get("sample") || "0", 10) || 0);
      const data = await api(`/api/datasets/${encodeName(this.name)}`);
      this.count = data.rows;
      const hist = el("div", { class: "chart", id: "chart-histogram" });
      const statsBox = el("div");
      if (data.stats) {
        const st = data.stats, lens = st.token_lens || {};
        statsBox.append(el("div", { class: "stats" }, stat("rows", fmtNum(data.rows, 0)),
          stat("tokens (max)", fmtNum(lens.max, 0)), stat("tokens (mean)", fmtNum(lens.mean, 1)),
          stat("total tokens", fmtNum(st.total_tokens, 0)), stat("cutoff_len", fmtNum(data.histogram.cutoff_len, 0))),
        el("details", {}, el("summary", {}, `stats: ${data.stats_path}`), el("pre", { class: "doc" }, JSON.stringify(st, null, 2))));
      } else {
        statsBox.append(el("div", { class: "muted", text: `no ${this.name}.stats.json; rows: ${data.rows}` }));
      }
      const turnsBox = el("div", { id: "model-turns" });
      const mt = data.model_turns;
      if (mt) {
        const lostText = (lost) => Object.entries(lost || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "–";
        turnsBox.append(el("div", { class: "muted" }, mt.summary),
          el("table", { class: "samples" },
            el("thead", {}, el("tr", {}, el("th", {}, "agent"), el("th", { class: "num" }, "source"),
              el("th", { class: "num" }, "kept"), el("th", { class: "num" }, "kept %"), el("th", {}, "lost"))),
            el("tbody", {}, ...mt.agents.map((a) => el("tr", {}, el("td", {}, a.agent),
              el("td", { class: "num" }, fmtNum(a.source, 0)), el("td", { class: "num" }, fmtNum(a.output, 0)),
              el("td", { class: "num" }, a.kept_pct === null ? "–" : `${a.kept_pct}%`), el("td", {}, lostText(a.lost)))))),
          el("div", { class: "muted" }, `repairs: ${lostText(mt.repairs).replace(/^–$/, "none")}`));
      } else {
        turnsBox.append(el("div", { class: "muted", text: "model turns: not counted (ready-made data or older stats)" }));
      }
      this.list = el("tbody");
      this.sample = el("div", { id: "sample-view" });
      this.counter = el("span", { id: "sample-counter" });
      const jump = el("input", { type: "number", min: 0, value: this.position, style: "width:90px", id: "sample-index",
        onchange: (e) => this.show(parseInt(e.target.value, 10) || 0) });
      this.jump = jump;
      root.append(el("h1", {}, `Dataset ${this.name}`),
        el("div", { class: "muted" }, `${data.rows_file} · keys: ${data.dataset_keys.join(", ") || "(not registered)"}`),
        el("div", { class: "cols" },
          el("div", {}, el("h2", {}, "Card"), el("div", { class: "card" }, data.card ? renderMarkdown(data.card)
            : el("div", { class: "muted", text: "no card (run the report pipeline)" }))),
          el("div", {}, el("h2", {}, "Token lengths"), hist,
            el("div", { class: "muted", id: "histogram-source" }, `${data.histogram.exact ? "exact counts" : "estimate"}: ${data.histogram.source}`),
            el("h2", {}, "Statistics"), statsBox, el("h2", {}, "Model turns"), turnsBox)),
        el("h2", {}, "Samples"),
        el("div", { class: "two" },
          el("div", {}, el("table", { class: "samples" }, el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "instance"),
            el("th", { class: "num" }, "turns"), el("th", { class: "num" }, "calls"))), this.list),
          el("div", { class: "toolbar" }, el("button", { onclick: () => this.page(-1) }, "◀ page"),
            el("button", { onclick: () => this.page(1) }, "page ▶"))),
          el("div", {}, el("div", { class: "toolbar" },
            el("button", { id: "sample-prev", onclick: () => this.show(this.position - 1) }, "◀ previous"),
            jump, this.counter,
            el("button", { id: "sample-next", onclick: () => this.show(this.position + 1) }, "next ▶"),
            el("button", { id: "expand-all", onclick: () => this.sample.querySelectorAll("details").forEach((d) => { d.open = true; }) }, "unfold all")),
          this.sample)));
      barChart("histogram", hist, "tokens per sample", data.histogram.edges, data.histogram.counts);
      this.offset = Math.floor(this.position / 50) * 50;
      await this.loadList();
      await this.show(this.position);
    },
    async loadList() {
      const page = await api(`/api/datasets/${encodeName(this.name)}/samples?offset=${this.offset}&limit=50`);
      this.list.replaceChildren(...page.items.map((it) => el("tr", { "data-index": it.index, class: it.index === this.position ? "sel" : "",
        onclick: () => this.show(it.index) }, el("td", {}, it.index), el("td", {}, it.instance_id || it.uid || "–"),
        el("td", { class: "num" }, it.turns), el("td", { class: "num" }, it.tool_calls))));
    },
    async page(direction) {
      const next = this.offset + direction * 50;
      if (next < 0 || next >= this.count) return;
      this.offset = next;
      await this.loadList();
    },
    async show(position) {
      if (position < 0 || position >= this.count) return;
      this.position = position;
      this.jump.value = position;
      history.replaceState(null, "", `#/dataset/${encodeName(this.name)}?sample=${position}`);
      const s = await api(`/api/datasets/${encodeName(this.name)}/samples/${position}`);
      this.counter.textContent = `${position + 1} of ${s.count}`;
      this.list.querySelectorAll("tr").forEach((tr) => tr.classList.toggle("sel", tr.dataset.index === String(position)));
      const parts = [];
      const meta = Object.entries(s.meta || {});
      if (meta.length) parts.push(el("div", { class: "muted" }, meta.map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join(" · ")));
      if (s.system) parts.push(el("div", { class: "turn system", "data-role": "system" }, el("div", { class: "head" }, el("span", { class: "role" }, "system"), `${s.system.length} chars`),
        el("details", {}, el("summary", {}, s.system.split("\n")[0].slice(0, 100)), el("pre", {}, s.system))));
      if (s.tools && s.tools.length) parts.push(el("details", { class: "card tools" }, el("summary", {}, `${s.tools.length} tool(s): ${s.tools.map((t) => t.name).join(", ")}`),
        el("pre", {}, JSON.stringify(s.tools, null, 2))));
      parts.push(...s.turns.map(turnNode));
      this.sample.replaceChildren(...parts);
    },
    async refresh() { /* static while browsing */ },
  };

  // ------------------------------------------------------------------------------------------- router

  function parseRoute() {
    const hash = location.hash.replace(/^#/, "") || "/runs";
    const [path, query] = hash.split("?");
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    const params = { query: new URLSearchParams(query || ""), name: parts[1] };
    if (parts[0] === "run" && parts[1]) return [runView, params, "runs"];
    if (parts[0] === "compare") return [compareView, params, "compare"];
    if (parts[0] === "datasets") return [datasetsView, params, "datasets"];
    if (parts[0] === "dataset" && parts[1]) return [datasetView, params, "datasets"];
    return [runsView, params, "runs"];
  }

  async function route() {
    const [view, params, nav] = parseRoute();
    const key = `${view.title}:${params.name || ""}`;
    if (state.route === key && view === compareView) return; // compare keeps its own URL in sync
    state.route = key;
    destroyCharts();
    document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === nav));
    const root = document.getElementById("view");
    root.replaceChildren();
    state.view = view;
    try {
      await view.mount(root, params);
      setLive(`updated ${new Date().toLocaleTimeString()} · every ${state.pollSeconds} s`);
    } catch (error) {
      root.append(errorBox(error));
    }
    document.body.dataset.view = view.title;
  }

  async function poll() {
    if (document.hidden || !state.view) return;
    try {
      await state.view.refresh();
      setLive(`updated ${new Date().toLocaleTimeString()} · every ${state.pollSeconds} s`);
      state.polls = (state.polls || 0) + 1;
    } catch (error) {
      setLive(`refresh failed: ${error.message}`, true);
    }
  }

  async function start() {
    try {
      const health = await api("/api/health");
      state.pollSeconds = health.poll_seconds || 5;
      document.getElementById("project").textContent = health.project;
    } catch (error) {
      setLive(`server unreachable: ${error.message}`, true);
    }
    window.addEventListener("hashchange", route);
    await route();
    state.timer = setInterval(poll, state.pollSeconds * 1000);
  }

  state.exportComparePng = () => compareView.exportPng();
  start();
})();
