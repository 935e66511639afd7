// Training overview: rollouts by status, completions per minute, final reward over completed
// rollouts (a series per mode and model version, with a moving average), token-id coverage and,
// inside a collector, refusals and queue depth. Kept live by Server-Sent Events.
import { app, el, fmtNumber, fmtTime, rolloutHref, showError } from "./common.js";

const root = app();
const WINDOW = 20; // rollouts in the moving average
const COLORS = ["#3056d3", "#c0362c", "#1f8a4c", "#b26b00", "#7a3fc4", "#0f7c8c", "#8a6d1f", "#d0457e"];
let rewardChart = null;
let minuteChart = null;

const cards = el("div", { className: "cards", id: "cards" });
const metrics = el("div", { className: "cards", id: "metrics" });
const rewardCanvas = el("canvas", { id: "reward-chart", "aria-label": "final reward of completed rollouts" });
const minuteCanvas = el("canvas", { id: "minute-chart", "aria-label": "rollouts completed per minute" });
const liveState = el("span", { className: "muted", id: "live-state", text: "connecting…" });
root.replaceChildren(
  el("h1", {}, "Training overview ", liveState),
  cards,
  el("div", { className: "charts" },
    el("div", { className: "chart" }, el("h2", { text: "Final reward of completed rollouts" }), rewardCanvas),
    el("div", { className: "chart" }, el("h2", { text: "Rollouts completed per minute" }), minuteCanvas)),
  el("h2", { text: "Collector" }),
  metrics,
);

function card(label, value, id, title) {
  return el("div", { className: "card", id, title }, el("div", { className: "value", text: value }),
    el("div", { className: "label", text: label }));
}

function movingAverage(points) {
  const out = [];
  let sum = 0;
  points.forEach((p, i) => {
    sum += p.y;
    if (i >= WINDOW) sum -= points[i - WINDOW].y;
    out.push({ x: p.x, y: sum / Math.min(i + 1, WINDOW) });
  });
  return out;
}

function rewardDatasets(rewards) {
  const series = new Map();
  for (const r of rewards) {
    if (r.reward === null || r.reward === undefined) continue;
    const key = r.model_version ? `${r.mode} · ${r.model_version}` : r.mode;
    if (!series.has(key)) series.set(key, []);
    series.get(key).push({ x: r.time, y: r.reward, rollout: r.rollout_id });
  }
  const datasets = [];
  [...series.entries()].sort().forEach(([key, points], i) => {
    const color = COLORS[i % COLORS.length];
    datasets.push({ type: "scatter", label: key, data: points, backgroundColor: color, pointRadius: 3 });
    datasets.push({ type: "line", label: `${key} (moving average of ${WINDOW})`, data: movingAverage(points),
                    borderColor: color, pointRadius: 0, borderWidth: 2, tension: 0.2 });
  });
  return datasets;
}

function drawCharts(doc) {
  const timeAxis = { type: "linear", ticks: { callback: (v) => fmtTime(v).slice(11, 19), maxTicksLimit: 8 } };
  const rewards = rewardDatasets(doc.rewards);
  if (!rewardChart) {
    rewardChart = new Chart(rewardCanvas, {
      data: { datasets: rewards },
      options: {
        animation: false, maintainAspectRatio: false, scales: { x: timeAxis, y: { title: { display: true, text: "reward" } } },
        plugins: { tooltip: { callbacks: { label: (c) => `${c.raw.rollout || c.dataset.label}: ${fmtNumber(c.raw.y)}` } } },
        onClick: (_, items) => {
          const raw = items.length ? rewardChart.data.datasets[items[0].datasetIndex].data[items[0].index] : null;
          if (raw && raw.rollout) window.location.assign(rolloutHref(raw.rollout));
        },
      },
    });
  } else {
    rewardChart.data.datasets = rewards;
    rewardChart.update("none");
  }
  const labels = doc.completed_per_minute.map((m) => fmtTime(m.minute).slice(11, 16));
  const counts = doc.completed_per_minute.map((m) => m.completed);
  if (!minuteChart) {
    minuteChart = new Chart(minuteCanvas, {
      type: "bar",
      data: { labels, datasets: [{ label: "completed", data: counts, backgroundColor: "#3056d3" }] },
      options: { animation: false, maintainAspectRatio: false, plugins: { legend: { display: false } } },
    });
  } else {
    minuteChart.data.labels = labels;
    minuteChart.data.datasets[0].data = counts;
    minuteChart.update("none");
  }
}

function showCounts(doc) {
  const byStatus = doc.rollouts_by_status;
  const total = Object.values(byStatus).reduce((a, b) => a + b, 0);
  const cov = doc.token_ids;
  const share = cov.llm_calls ? `${Math.round((100 * cov.with_token_ids) / cov.llm_calls)}%` : "–";
  const points = doc.rewards.filter((r) => r.reward !== null && r.reward !== undefined).length;
  cards.replaceChildren(
    card("rollouts", fmtNumber(total), "rollouts-total"),
    card("succeeded", fmtNumber(byStatus.succeeded || 0), "rollouts-succeeded"),
    card("failed", fmtNumber(byStatus.failed || 0), "rollouts-failed"),
    card("running", fmtNumber(byStatus.running || 0), "rollouts-running"),
    card("reward points shown", fmtNumber(points), "reward-points"),
    card(`LLM calls with token ids (latest ${cov.rollouts} completed rollouts)`, share, "token-coverage",
         `${cov.with_token_ids} of ${cov.llm_calls} calls`),
  );
}

function showMetrics(m) {
  if (!m) {
    metrics.replaceChildren(el("p", { className: "muted", text: "No collector here (a file or a lake): no live self-metrics." }));
    return;
  }
  const refusedRequests = Object.values(m.refused_requests).reduce((a, b) => a + b, 0);
  const queues = Object.entries(m.queue_size);
  metrics.replaceChildren(
    card("requests refused", fmtNumber(refusedRequests), "refused-requests",
         Object.entries(m.refused_requests).map(([k, v]) => `${k}: ${v}`).join(", ")),
    card("spans refused", fmtNumber(m.refused_spans), "refused-spans"),
    card("rows in the warehouse", fmtNumber(m.warehouse_rows), "warehouse-rows"),
    ...queues.map(([exporter, size]) => card(`queue of ${exporter} (of ${fmtNumber(m.queue_capacity[exporter] || 0)})`,
                                              fmtNumber(size), `queue-${exporter}`)),
  );
}

function update(doc) {
  showCounts(doc);
  drawCharts(doc);
  showMetrics(doc.metrics);
  document.body.dataset.updated = String(Date.now());
}

const source = new EventSource("/ui/api/overview/live");
source.addEventListener("open", () => { liveState.textContent = "live"; });
source.addEventListener("overview", (e) => update(JSON.parse(e.data)));
source.addEventListener("metrics", (e) => showMetrics(JSON.parse(e.data)));
source.addEventListener("failed", (e) => showError(cards, new Error(JSON.parse(e.data).error)));
source.addEventListener("error", () => { liveState.textContent = "reconnecting…"; });
