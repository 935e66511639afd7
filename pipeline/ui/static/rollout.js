// One rollout: the span tree as a waterfall (the hierarchy repaired as the triplet adapter repairs
// it, virtual nodes marked), rewards with a line to the call each one scored and why, the LLM calls
// as chats with their token-id coverage, and the triplets (or why there are none).
import { api, app, el, fmtDuration, fmtNumber, fmtTime, rolloutHref, showError } from "./common.js";

const root = app();
const rolloutId = decodeURIComponent(window.location.pathname.split("/").pop());
const attempt = new URLSearchParams(window.location.search).get("attempt");

function tag(text, kind = "") {
  return el("span", { className: `tag ${kind}`, text });
}

function spanAnchor(spanId, label) {
  return el("a", { href: `#span-${encodeURIComponent(spanId)}`, text: label || spanId, dataset: { span: spanId } });
}

function waterfall(doc) {
  const spans = doc.spans;
  const t0 = Math.min(...spans.map((s) => s.start_time));
  const t1 = Math.max(...spans.map((s) => s.end_time));
  const span = Math.max(t1 - t0, 1e-6);
  const rows = new Map();
  const box = el("div", { className: "waterfall", id: "waterfall" });
  for (const s of spans) {
    const bar = el("div", { className: `wf-bar ${s.virtual ? "" : s.span_type || ""} ${s.status_code === "ERROR" ? "error" : ""}` });
    bar.style.left = `${(100 * (s.start_time - t0)) / span}%`;
    bar.style.width = `${Math.max((100 * (s.end_time - s.start_time)) / span, 0.2)}%`;
    const name = el("div", { className: "wf-name", title: s.name });
    name.style.paddingLeft = `${6 + 14 * s.depth}px`;
    name.append(s.name);
    if (s.virtual) name.append(tag("virtual"));
    if (s.span_type) name.append(tag(s.span_type, s.span_type));
    if (s.reward !== null && s.reward !== undefined) name.append(tag(`reward ${fmtNumber(s.reward)}`, "reward"));
    if (!s.virtual && (s.stored_parent_span_id || null) !== (s.parent_span_id === "virtual-root" ? null : s.parent_span_id)) {
      name.append(tag("moved by repair", "repaired"));
    }
    const row = el("div", {
      className: `wf-row${s.virtual ? " virtual" : ""}`, id: `span-${s.span_id}`, dataset: { span: s.span_id },
      onclick: () => { window.location.hash = `span-${s.span_id}`; },
    }, name, el("div", { className: "wf-track" }, bar));
    rows.set(s.span_id, { row, bar });
    box.append(row);
  }
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.classList.add("links");
  svg.setAttribute("id", "reward-lines");
  box.append(svg);
  const draw = () => {
    svg.replaceChildren();
    const origin = box.getBoundingClientRect();
    svg.setAttribute("width", String(origin.width));
    svg.setAttribute("height", String(origin.height));
    for (const link of doc.reward_links) {
      const from = rows.get(link.reward_span_id);
      const to = link.call_span_id && rows.get(link.call_span_id);
      if (!from || !to) continue;
      const a = from.bar.getBoundingClientRect();
      const b = to.bar.getBoundingClientRect();
      const x1 = a.left - origin.left, y1 = a.top - origin.top + a.height / 2;
      const x2 = b.right - origin.left, y2 = b.top - origin.top + b.height / 2;
      const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
      path.setAttribute("d", `M ${x1} ${y1} C ${x1 - 40} ${y1}, ${x2 + 40} ${y2}, ${x2} ${y2}`);
      path.dataset.reward = link.reward_span_id;
      path.dataset.call = link.call_span_id;
      const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
      title.textContent = link.why;
      path.append(title);
      svg.append(path);
    }
  };
  return { box, draw, rows };
}

function details(s) {
  if (!s) return el("p", { className: "muted", text: "Click a span to see it." });
  const lines = [
    ["span id", s.span_id], ["trace id", s.trace_id], ["parent (stored)", s.stored_parent_span_id],
    ["parent (after repair)", s.parent_span_id], ["start", fmtTime(s.start_time)],
    ["duration", fmtDuration(s.end_time - s.start_time)], ["status", s.status_code], ["status message", s.status_message],
    ["service", s.service_name],
  ].filter(([, v]) => v !== null && v !== undefined && v !== "");
  return el("div", { id: "span-details" },
    el("h2", { text: s.name }),
    el("table", {}, el("tbody", {}, ...lines.map(([k, v]) => el("tr", {}, el("th", { text: k }), el("td", { text: v }))))),
    s.attributes ? el("pre", { className: "attributes", text: JSON.stringify(s.attributes, null, 2) }) : null);
}

function part(p) {
  if (typeof p === "string") return el("pre", { text: p });
  if (p.type === "text" || p.type === "reasoning") return el("pre", { text: p.content ?? "" });
  if (p.type === "tool_call") {
    const args = typeof p.arguments === "string" ? p.arguments : JSON.stringify(p.arguments ?? {}, null, 1);
    return el("div", { className: "part-tool" }, el("strong", { text: `tool call ${p.name ?? ""}` }),
      p.id ? tag(p.id) : null, el("pre", { text: args }));
  }
  if (p.type === "tool_call_response") {
    const res = typeof p.response === "string" ? p.response : JSON.stringify(p.response ?? null, null, 1);
    return el("div", { className: "part-tool" }, el("strong", { text: "tool result" }), p.id ? tag(p.id) : null,
      el("pre", { text: res }));
  }
  return el("pre", { text: JSON.stringify(p) });
}

function message(m) {
  const role = m.role || "message";
  const parts = Array.isArray(m.parts) ? m.parts : m.content !== undefined ? [String(m.content)] : [m];
  return el("div", { className: `msg ${role}` }, el("div", { className: "role", text: role }), ...parts.map(part));
}

function coverage(c) {
  if (!c.prompt_token_ids && !c.response_token_ids) {
    return `no token ids${c.token_ids_missing_reason ? ` (${c.token_ids_missing_reason})` : ""}`;
  }
  const of = (ids, tokens) => tokens ? `${fmtNumber(ids)} of ${fmtNumber(tokens)}` : fmtNumber(ids);
  return `token ids: prompt ${of(c.prompt_token_ids, c.input_tokens)}, response ${of(c.response_token_ids, c.output_tokens)}` +
    (c.has_logprobs ? ", with logprobs" : "");
}

function call(c) {
  return el("div", { className: "call", id: `call-${c.span_id}`, dataset: { span: c.span_id } },
    el("div", { className: "meta" },
      spanAnchor(c.span_id, c.name), ` · ${c.model || "model unknown"}`, c.agent_name ? ` · agent ${c.agent_name}` : "",
      ` · ${c.convention}`, ` · usage ${fmtNumber(c.input_tokens ?? 0)} in / ${fmtNumber(c.output_tokens ?? 0)} out`,
      ` · ${fmtDuration(c.end_time - c.start_time)}`),
    el("div", { className: "meta coverage", text: coverage(c) }),
    el("div", { className: "chat" }, ...c.input_messages.map(message)),
    c.output_messages.length ? el("div", { className: "chat output" }, ...c.output_messages.map(message)) : null);
}

function render(doc) {
  const bySpan = new Map(doc.spans.map((s) => [s.span_id, s]));
  const attemptSelect = el("select", {
    id: "attempt", onchange: () => window.location.assign(`${rolloutHref(rolloutId)}?attempt=${encodeURIComponent(attemptSelect.value)}`),
  }, ...doc.attempts.map((a) => el("option", { value: a.attempt_id ?? "", text: `${a.attempt_id ?? "(none)"} · ${fmtTime(a.start_time)} · ${a.spans} spans` })));
  attemptSelect.value = doc.attempt_id ?? "";
  const wf = waterfall(doc);
  const detailBox = el("div", { className: "details" }, details(null));
  const select = () => {
    const id = decodeURIComponent(window.location.hash.replace(/^#span-/, ""));
    for (const { row } of wf.rows.values()) row.classList.remove("selected");
    const hit = wf.rows.get(id);
    if (hit) {
      hit.row.classList.add("selected");
      detailBox.replaceChildren(details(bySpan.get(id)));
    }
  };
  const linkRows = doc.reward_links.map((l) => el("tr", { dataset: { reward: l.reward_span_id, call: l.call_span_id ?? "" } },
    el("td", {}, spanAnchor(l.reward_span_id, bySpan.get(l.reward_span_id)?.name)),
    el("td", { className: "num", text: fmtNumber(l.value) }),
    el("td", {}, l.call_span_id ? spanAnchor(l.call_span_id, bySpan.get(l.call_span_id)?.name) : "—"),
    el("td", { className: "why", text: l.why })));
  const triplets = doc.triplets.length
    ? el("table", { id: "triplets" }, el("thead", {}, el("tr", {}, ...["LLM call", "reward", "prompt ids", "response ids", "token ids missing because"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...doc.triplets.map((t) => el("tr", { dataset: { span: t.span_id } },
          el("td", {}, spanAnchor(t.span_id)), el("td", { className: "num", text: fmtNumber(t.reward) }),
          el("td", { className: "num", text: t.prompt_token_ids }), el("td", { className: "num", text: t.response_token_ids }),
          el("td", { text: t.token_ids_missing_reason ?? "" })))))
    : el("p", { className: "error", id: "no-triplets", text: `No triplets: ${doc.why_no_triplets || "no LLM call found"}` });
  root.replaceChildren(
    el("h1", {}, `Rollout ${doc.rollout_id}`),
    el("p", {}, el("span", { className: `status-${doc.status}`, id: "status", text: doc.status }),
      doc.mode ? tag(doc.mode) : null, ` · final reward ${fmtNumber(doc.final_reward) || "—"}`,
      ` · ${doc.llm_calls.length} LLM calls · ${doc.triplets.length} triplets · attempt `, attemptSelect),
    el("h2", { text: "Spans" }), wf.box, detailBox,
    el("h2", { text: "Rewards and the calls they scored" }),
    doc.reward_links.length
      ? el("table", { id: "reward-links" }, el("thead", {}, el("tr", {}, ...["reward span", "value", "scored call", "why"].map((h) => el("th", { text: h })))),
          el("tbody", {}, ...linkRows))
      : el("p", { className: "muted", text: "No reward span in this attempt." }),
    el("h2", { text: "Triplets" }), triplets,
    el("h2", { text: `LLM calls (${doc.llm_calls.length})` }),
    el("div", { id: "calls" }, ...doc.llm_calls.map(call)),
  );
  wf.draw();
  window.addEventListener("resize", wf.draw);
  window.addEventListener("hashchange", select);
  select();
  if (window.location.hash) document.getElementById(window.location.hash.slice(1))?.scrollIntoView({ block: "center" });
  document.body.dataset.loaded = "1";
}

api(`/ui/api/rollouts/${encodeURIComponent(rolloutId)}${attempt ? `?attempt=${encodeURIComponent(attempt)}` : ""}`)
  .then(render)
  .catch((error) => {
    showError(root, error.status === 404 ? new Error(`No span of rollout ${rolloutId} is stored.`) : error);
    document.body.dataset.loaded = "error";
  });
