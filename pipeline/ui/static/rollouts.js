// Rollouts: a table paged, sorted and filtered on the server; the state lives in the URL so a
// view can be linked.
import { api, app, el, fmtDuration, fmtNumber, fmtTime, rolloutHref, showError } from "./common.js";

const root = app();
const COLUMNS = [
  ["rollout_id", "Rollout"], ["status", "Status"], ["attempts", "Attempts", true], ["final_reward", "Final reward", true],
  ["llm_calls", "LLM calls", true], ["tokens", "Tokens (in / out)", true], ["duration", "Duration", true],
  ["last_span_time", "Last span"],
];
const params = new URLSearchParams(window.location.search);
const state = {
  status: params.get("status") || "", mode: params.get("mode") || "", id: params.get("id") || "",
  since: params.get("since") || "", until: params.get("until") || "",
  sort: params.get("sort") || "last_span_time", dir: params.get("dir") || "desc",
  page: Number(params.get("page") || 0), size: Number(params.get("size") || 50),
};

function select(name, options) {
  const node = el("select", { name, onchange: () => { state[name] = node.value; state.page = 0; load(); } },
    ...options.map(([value, label]) => el("option", { value, text: label })));
  node.value = state[name];
  return node;
}

function timeInput(name) {
  const node = el("input", { type: "datetime-local", name, step: 1 });
  if (state[name]) node.value = new Date(Number(state[name])).toISOString().slice(0, 19);
  node.addEventListener("change", () => {
    state[name] = node.value ? String(Date.parse(node.value + "Z")) : "";
    state.page = 0;
    load();
  });
  return node;
}

const idInput = el("input", { type: "search", name: "id", placeholder: "part of a rollout id", value: state.id });
idInput.addEventListener("change", () => { state.id = idInput.value.trim(); state.page = 0; load(); });
const filters = el("form", { className: "filters", onsubmit: (e) => e.preventDefault() },
  el("label", {}, "Status", select("status", [["", "any"], ["running", "running"], ["succeeded", "succeeded"], ["failed", "failed"]])),
  el("label", {}, "Mode", select("mode", [["", "any"], ["train", "train"], ["val", "val"], ["test", "test"]])),
  el("label", {}, "Rollout id", idInput),
  el("label", {}, "Active since (UTC)", timeInput("since")),
  el("label", {}, "Started before (UTC)", timeInput("until")),
);
const summary = el("span", { className: "muted", id: "summary" });
const prev = el("button", { type: "button", id: "prev", text: "← Previous", onclick: () => { state.page -= 1; load(); } });
const next = el("button", { type: "button", id: "next", text: "Next →", onclick: () => { state.page += 1; load(); } });
const table = el("table", { id: "rollouts" });
const body = el("div", {}, table);
root.replaceChildren(el("h1", { text: "Rollouts" }), filters, el("div", { className: "pager" }, prev, next, summary), body);

function header() {
  return el("thead", {}, el("tr", {}, ...COLUMNS.map(([key, label, num]) => {
    const sorted = state.sort === key ? ` sorted-${state.dir}` : "";
    return el("th", {
      className: `sortable${num ? " num" : ""}${sorted}`, dataset: { sort: key }, text: label,
      onclick: () => {
        state.dir = state.sort === key && state.dir === "desc" ? "asc" : "desc";
        state.sort = key;
        state.page = 0;
        load();
      },
    });
  })));
}

function row(r) {
  const tokens = r.input_tokens === null && r.output_tokens === null ? "" :
    `${fmtNumber(r.input_tokens ?? 0)} / ${fmtNumber(r.output_tokens ?? 0)}`;
  return el("tr", { dataset: { rollout: r.rollout_id } },
    el("td", {}, el("a", { href: rolloutHref(r.rollout_id), text: r.rollout_id }),
       r.mode ? el("span", { className: "tag", text: r.mode }) : null),
    el("td", { className: `status-${r.status}`, text: r.status }),
    el("td", { className: "num", text: r.attempts }),
    el("td", { className: "num", text: fmtNumber(r.final_reward) }),
    el("td", { className: "num", text: r.llm_calls }),
    el("td", { className: "num", text: tokens }),
    el("td", { className: "num", text: fmtDuration(r.duration_ms) }),
    el("td", { text: fmtTime(r.last_span_time) }),
  );
}

async function load() {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(state)) if (v !== "" && v !== null) query.set(k, String(v));
  history.replaceState(null, "", `/ui/rollouts?${query}`);
  prev.disabled = next.disabled = true;
  try {
    const doc = await api(`/ui/api/rollouts?${query}`);
    const first = doc.total ? doc.page * doc.size + 1 : 0;
    const last = doc.page * doc.size + doc.rows.length;
    summary.textContent = `rollouts ${first}–${last} of ${doc.total}`;
    summary.dataset.total = String(doc.total);
    table.replaceChildren(header(), el("tbody", {}, ...doc.rows.map(row)));
    if (!doc.rows.length) table.append(el("tbody", {}, el("tr", {}, el("td", { colspan: COLUMNS.length, className: "muted", text: "No rollout matches." }))));
    prev.disabled = doc.page === 0;
    next.disabled = last >= doc.total;
    document.body.dataset.loaded = query.toString();
  } catch (error) {
    showError(body, error);
    body.append(table);
  }
}

load();
