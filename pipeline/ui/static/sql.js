// SQL console over the read-only query API: one SELECT over the warehouse's tables and views (the
// API refuses anything else), results with readable times, and the whole result as CSV or Parquet.
import { api, app, el, showError } from "./common.js";

const root = app();
const params = new URLSearchParams(window.location.search);
const EXAMPLE = "SELECT rollout_id, status, final_reward, llm_calls, last_span_time_unix_nano\nFROM rollouts ORDER BY last_span_time_unix_nano DESC LIMIT 20";
const editor = el("textarea", { className: "sql", id: "sql", spellcheck: "false", "aria-label": "SQL" });
editor.value = params.get("q") || EXAMPLE;
const run = el("button", { type: "submit", id: "run", text: "Run (Ctrl+Enter)" });
const csv = el("a", { id: "download-csv", text: "Download CSV" });
const parquet = el("a", { id: "download-parquet", text: "Download Parquet" });
const status = el("span", { className: "muted", id: "result-status" });
const result = el("div", { className: "result-wrap", id: "result" });
const form = el("form", { onsubmit: (e) => { e.preventDefault(); execute(); } }, editor,
  el("div", { className: "pager" }, run, csv, parquet, status));
root.replaceChildren(el("h1", { text: "SQL console" }),
  el("p", { className: "muted", text: "Read-only: one SELECT over spans, logs, reward_dimensions, rollout_completions, triplet_payloads and the views llm_calls, rewards, rollouts, attempts, triplets." }),
  form, result);
editor.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); execute(); } });

function links(sql) {
  const q = encodeURIComponent(sql);
  csv.setAttribute("href", `/ui/api/sql/download?format=csv&sql=${q}`);
  parquet.setAttribute("href", `/ui/api/sql/download?format=parquet&sql=${q}`);
}

async function execute() {
  const sql = editor.value;
  history.replaceState(null, "", `/ui/sql?q=${encodeURIComponent(sql)}`);
  links(sql);
  run.disabled = true;
  status.textContent = "running…";
  const started = performance.now();
  try {
    const doc = await api("/ui/api/sql", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ sql }) });
    const ms = Math.round(performance.now() - started);
    status.textContent = `${doc.total_rows} row(s) in ${ms} ms` + (doc.shown_rows < doc.total_rows ? `, first ${doc.shown_rows} shown (download for all)` : "");
    result.replaceChildren(el("table", { id: "result-table" },
      el("thead", {}, el("tr", {}, ...doc.columns.map((c) => el("th", { text: c.name, title: c.type })))),
      el("tbody", {}, ...doc.rows.map((r) => el("tr", {}, ...r.map((v) => el("td", { text: v === null ? "NULL" : v, title: v === null ? undefined : String(v) })))))));
  } catch (error) {
    status.textContent = "";
    showError(result, error);
  } finally {
    run.disabled = false;
    document.body.dataset.loaded = String(Date.now());
  }
}

links(editor.value);
if (params.get("q")) execute();
