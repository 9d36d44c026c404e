// The cdc-recon status page: polls the JSON API and draws plain SVG; no library, no CDN.
"use strict";

const REFRESH_MS = Number(new URLSearchParams(location.search).get("refresh") || 5) * 1000;
const COLORS = ["#2e6fdb", "#d9480f", "#12805c", "#7048e8", "#c2255c", "#0b7285", "#5c940d"];
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function token() { return sessionStorage.getItem("cdc-recon-token"); }

async function api(path) {
  const headers = token() ? { Authorization: "Bearer " + token() } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) { $("login").hidden = false; throw new Error("a token is needed"); }
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function fmt(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"); }

function setValue(id, value, shown) {
  const el = $(id);
  el.dataset.value = value === null || value === undefined ? "" : String(value);
  el.textContent = shown !== undefined ? shown : fmt(value);
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 120) return Math.round(seconds) + " s";
  if (seconds < 7200) return Math.round(seconds / 60) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

function cell(text, numeric) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  td.title = td.textContent;
  if (numeric) td.className = "num";
  return td;
}

function fillRows(tableId, rows, columns) {
  const heads = $(tableId).querySelectorAll("thead th");
  columns.forEach(([, numeric], i) => heads[i] && heads[i].classList.toggle("num", !!numeric));
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    columns.forEach(([get, numeric]) => tr.appendChild(cell(get(row), numeric)));
    return tr;
  }));
}

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  Object.entries(attrs).forEach(([k, v]) => el.setAttribute(k, v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// series: [{name, points: [[x, y], ...]}]; bars: draw the first series as bars.
function chart(svgId, series, { bars = false, xLabel = (x) => "", domain = null } = {}) {
  const svg = $(svgId);
  const width = svg.clientWidth || 400, height = svg.clientHeight || 160;
  const pad = { l: 44, r: 8, t: 8, b: 18 };
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const points = series.flatMap((s) => s.points);
  if (!points.length) {
    svg.appendChild(svgEl("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "no data yet"));
    return;
  }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const [x0, x1] = domain || [Math.min(...xs), Math.max(...xs) + (bars ? 1 : 0)];
  const y1 = Math.max(1, ...ys);
  const sx = (x) => pad.l + ((x - x0) / Math.max(x1 - x0, 1e-9)) * (width - pad.l - pad.r);
  const sy = (y) => height - pad.b - (y / y1) * (height - pad.t - pad.b);
  svg.appendChild(svgEl("line", { class: "axis", x1: pad.l, y1: sy(0), x2: width - pad.r, y2: sy(0) }));
  svg.appendChild(svgEl("text", { x: pad.l - 4, y: sy(y1) + 8, "text-anchor": "end" }, fmt(Math.round(y1))));
  svg.appendChild(svgEl("text", { x: pad.l - 4, y: sy(0), "text-anchor": "end" }, "0"));
  svg.appendChild(svgEl("text", { x: pad.l, y: height - 4 }, xLabel(x0)));
  svg.appendChild(svgEl("text", { x: width - pad.r, y: height - 4, "text-anchor": "end" }, xLabel(x1)));
  series.forEach((s, i) => {
    if (bars) {
      const w = Math.max(2, sx(x0 + 1) - sx(x0) - 2);
      s.points.forEach(([x, y]) => svg.appendChild(svgEl("rect", {
        class: "bar", x: sx(x) + 1, y: sy(y), width: w, height: sy(0) - sy(y) })));
      return;
    }
    const d = s.points.map(([x, y], j) => `${j ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
    const color = COLORS[i % COLORS.length];
    svg.appendChild(svgEl("path", { d, fill: "none", stroke: color, "stroke-width": 1.5 }));
    if (s.points.length < 3) s.points.forEach(([x, y]) => svg.appendChild(
      svgEl("circle", { cx: sx(x), cy: sy(y), r: 2.5, fill: color })));
  });
}

const clock = (t) => new Date(t * 1000).toISOString().slice(11, 19);

function drawHistory(history) {
  const names = [...new Set(history.flatMap((h) => Object.keys(h.lag)))].sort();
  const lag = names.map((name) => ({
    name, points: history.filter((h) => h.lag[name] !== null && h.lag[name] !== undefined)
      .map((h) => [h.t, h.lag[name]]) }));
  chart("chart-lag", lag, { xLabel: clock });
  $("legend-lag").replaceChildren(...names.map((name, i) => {
    const span = document.createElement("span");
    span.style.color = COLORS[i % COLORS.length];
    span.textContent = "■ " + name;
    return span;
  }));
  const rate = [];
  for (let i = 1; i < history.length; i++) {
    const dt = history[i].t - history[i - 1].t;
    if (dt > 0) rate.push([history[i].t, Math.max(0, (history[i].applied - history[i - 1].applied) / dt)]);
  }
  chart("chart-rate", [{ name: "applied/s", points: rate }], { xLabel: clock });
  return rate.length ? rate[rate.length - 1][1] : null;
}

function drawStatus(status) {
  $("group").textContent = "group " + status.group_id;
  setValue("v-total-lag", status.total_lag);
  setValue("v-messages", status.processed.messages);
  setValue("v-applied", status.processed.applied);
  setValue("v-ledger", status.ledger.rows, (status.ledger.exact ? "" : "≈") + fmt(status.ledger.rows));
  setValue("v-failures", status.failures.open);
  setValue("v-missed-pending", status.missed.pending);
  setValue("v-missed-replayed", status.missed.replayed);
  setValue("v-missed-failed", status.missed.failed);
  setValue("v-watermark", status.sweeper.watermark_age_seconds, ago(status.sweeper.watermark_age_seconds));
  setValue("v-review", status.review.pending);
  const ok = !status.database_error && !status.kafka_error;
  $("health").textContent = ok ? "healthy" : "degraded";
  $("health").className = "badge " + (ok ? "ok" : "bad");
  $("health").title = [status.database_error, status.kafka_error].filter(Boolean).join("; ");
  fillRows("t-partitions", status.partitions, [[(p) => p.topic], [(p) => p.partition, 1],
    [(p) => p.position, 1], [(p) => p.end_offset, 1], [(p) => p.lag, 1]]);
}

function drawCompleteness(data) {
  const el = $("completeness"), all = data.overall;
  el.dataset.ratio = all.ratio === null ? "" : String(all.ratio);
  el.dataset.missing = String(all.missing);
  if (all.ratio === null) {
    el.textContent = "Completeness: nothing verified yet (the sweeper has not closed a window)";
    el.className = "headline";
    return;
  }
  const tables = data.tables.filter((t) => t.ratio !== null)
    .map((t) => `${t.table} ${(t.ratio * 100).toFixed(3)}%`).join(", ");
  el.textContent = `Completeness ${(all.ratio * 100).toFixed(3)}% of ${fmt(all.verified)} verified ` +
    `changes · ${fmt(all.missing)} still missing · oldest unverified change ` +
    `${ago(all.oldest_unverified_age_seconds)} old` + (tables ? ` (${tables})` : "");
  el.className = "headline " + (all.missing ? "bad" : "ok");
}

const messagesOf = (c) => c.messages.length
  ? c.messages.map((m) => `${m.topic}[${m.partition}]@${m.offset} (${m.seen_by})`).join("; ")
  : "never published";

function drawTrace(trace) {
  const summary = $("trace-summary");
  summary.dataset.known = String(trace.known);
  summary.dataset.changes = String(trace.changes.length);
  if (!trace.known) {
    summary.textContent = trace.error;
    $("t-trace").hidden = $("t-trace-rows").hidden = true;
    return;
  }
  const rows = trace.rows;
  summary.textContent = `${trace.table} key ${trace.key_text}: ${trace.changes.length} change(s) ` +
    `from ${trace.from.slice(0, 19)}; rows ${rows.equal ? "equal" : "differ in " +
    (rows.differing.join(", ") || "presence")}` + (trace.notes.length ? " · " + trace.notes.join(" · ") : "");
  $("t-trace").hidden = $("t-trace-rows").hidden = false;
  fillRows("t-trace", trace.changes, [[(c) => (c.source_ts || "").slice(0, 23)], [(c) => c.tx],
    [(c) => c.op], [messagesOf], [(c) => c.outcome || ""],
    [(c) => c.quarantine.map((q) => `#${q.id} ${q.reason} (${q.status})`).join("; ")],
    [(c) => c.missed ? `${c.missed.status}: ${c.missed.reason}` : ""]]);
  const names = [...new Set([...Object.keys(rows.source || {}), ...Object.keys(rows.target || {})])];
  const shown = (side, name) => side === null ? "(no row)" : JSON.stringify(side[name]);
  fillRows("t-trace-rows", names, [[(n) => (rows.differing.includes(n) ? "* " : "") + n],
    [(n) => shown(rows.source, n)], [(n) => shown(rows.target, n)]]);
  $("t-trace-rows").querySelectorAll("tbody tr").forEach((tr, i) =>
    tr.classList.toggle("diff", rows.differing.includes(names[i])));
}

async function runTrace(event) {
  if (event) event.preventDefault();
  const query = new URLSearchParams({ table: $("trace-table").value, key: $("trace-key").value,
    from: $("trace-from").value || "-7d" });
  const headers = token() ? { Authorization: "Bearer " + token() } : {};
  try {
    const response = await fetch("/api/trace?" + query, { headers, cache: "no-store" });
    const body = await response.json();
    if (!response.ok && response.status !== 404) throw new Error(body.error || "HTTP " + response.status);
    drawTrace(body);
  } catch (err) {
    $("trace-summary").textContent = String(err.message || err);
    $("trace-summary").dataset.known = "error";
  }
}

function drawReview(review) {
  $("review-note").textContent = review.note || "";
  const rows = review.items;
  const columns = rows.length ? Object.keys(rows[0]).slice(0, 8) : [];
  const head = document.createElement("tr");
  columns.forEach((c) => { const th = document.createElement("th"); th.textContent = c; head.appendChild(th); });
  $("t-review").querySelector("thead").replaceChildren(head);
  fillRows("t-review", rows, columns.map((c) => [(r) => r[c] !== null && typeof r[c] === "object" ? JSON.stringify(r[c]) : r[c]]));
}

async function refresh() {
  try {
    const [status, history, sweeps, missed, failures, review, jobs] = await Promise.all([
      api("/api/status"), api("/api/history"), api("/api/sweeps?limit=10"),
      api("/api/missed?limit=1&hours=24"), api("/api/failures?status=open&limit=10"),
      api("/api/review?limit=10"), api("/api/jobs")]);
    drawStatus(status);
    drawCompleteness(status.completeness);
    const rate = drawHistory(history);
    setValue("v-rate", rate === null ? null : Math.round(rate));
    const hours = missed.by_hour.map((h) => [Date.parse(h.hour) / 3600000, h.found]);
    const now = Math.floor(Date.now() / 3600000);
    chart("chart-missed", [{ name: "found", points: hours }], { bars: true, domain: [now - 23, now + 1],
      xLabel: (x) => new Date(x * 3600000).toISOString().slice(11, 16) });
    fillRows("t-sweeps", sweeps.items, [[(s) => s.id, 1], [(s) => s.status],
      [(s) => (s.window_from || "").slice(0, 19) + " .. " + (s.window_to || "").slice(11, 19)],
      [(s) => s.applied, 1], [(s) => s.missed, 1], [(s) => s.replayed, 1], [(s) => s.replay_failed, 1],
      [(s) => s.duration_s === null ? "" : s.duration_s.toFixed(2), 1]]);
    fillRows("t-failures", failures.items, [[(f) => f.id, 1],
      [(f) => `${f.topic}[${f.kafka_partition}]@${f.kafka_offset}`], [(f) => f.reason],
      [(f) => f.detail], [(f) => (f.created_at || "").slice(0, 19)]]);
    drawReview(review);
    fillRows("t-jobs", jobs, [[(j) => j.id.slice(0, 8)], [(j) => j.status],
      [(j) => j.request.from.slice(0, 19) + " .. " + j.request.to.slice(11, 19)],
      [(j) => j.progress.read, 1], [(j) => j.summary && j.summary.applied, 1],
      [(j) => j.summary && j.summary.duplicates, 1], [(j) => j.error]]);
    $("error").hidden = true;
    $("refreshed").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
  } catch (err) {
    $("error").textContent = String(err.message || err);
    $("error").hidden = false;
  }
}

$("trace-form").addEventListener("submit", runTrace);

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("cdc-recon-token", $("token").value);
  $("login").hidden = true;
  refresh();
});

refresh();
setInterval(refresh, REFRESH_MS);
