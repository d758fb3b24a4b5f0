// The operator's console. Campaign ids, names, file keys, reasons and raw rows come from S3
// keys, files and Kinesis records: every value goes in through textContent or setAttribute,
// never as markup (the page is served with a Content-Security-Policy that refuses inline
// script and eval).
"use strict";

const fmt = n => Number(n).toLocaleString("en-US");
const SVG = "http://www.w3.org/2000/svg";
const EVERY_MS = 2000;
let selected = null;

async function getJson(path) {
  const r = await fetch(path, {cache: "no-store"});
  if (!r.ok) throw new Error(path + " -> " + r.status);
  return r.json();
}

function cell(className, text) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text == null ? "" : String(text);
  return td;
}

function row(...cells) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  return tr;
}

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) search.set(key, value);
  const text = search.toString();
  return text ? "?" + text : "";
}

// --- campaign counts and windowed changes ---------------------------------------------

function drawChart(series) {
  const svg = document.getElementById("chart");
  svg.replaceChildren();
  const w = series.windows;
  if (!w.length) return;
  const names = ["verified", "rejected", "selected"], colours = ["#2a7", "#c33", "#36c"];
  const max = Math.max(1, ...w.flatMap(x => names.map(n => Math.abs(x[n]))));
  const bw = Math.min(20, Math.max(2, Math.floor(700 / (w.length * 4))));
  w.forEach((x, i) => names.forEach((n, j) => {
    const h = Math.round(Math.abs(x[n]) / max * 190);
    svg.appendChild(svgElement("rect", {
      x: 10 + i * (bw * 4) + j * bw, y: 200 - h, width: bw, height: h,
      fill: colours[j], ["data-" + n]: x[n],
    }));
  }));
  w.forEach((x, i) => {
    if (w.length > 12 && i % Math.ceil(w.length / 12)) return;
    const t = svgElement("text", {x: 10 + i * (bw * 4), y: 214, "font-size": 10});
    t.textContent = new Date(x.start * 1000).toISOString().slice(11, 16);
    svg.appendChild(t);
  });
}

function countsRow(c) {
  const link = document.createElement("a");
  link.href = "#";
  link.className = "campaign";
  link.textContent = c.campaignId;
  link.addEventListener("click", e => { e.preventDefault(); selected = c.campaignId; refresh(); });
  const first = cell("", "");
  first.appendChild(link);
  const tr = row(first, cell("verified", fmt(c.verified)), cell("rejected", fmt(c.rejected)),
                 cell("selected", fmt(c.selected)));
  tr.dataset.campaign = c.campaignId;
  return tr;
}

// The campaigns with the newest runs, as many as the table shows; the answer says how many
// there are in all.
const CAMPAIGNS_SHOWN = 50;

function showCounts(body) {
  const list = body.campaigns;
  document.querySelector("#counts tbody").replaceChildren(...list.campaigns.map(countsRow));
  const total = document.getElementById("counts-total");
  total.textContent = list.total > list.campaigns.length
    ? `newest ${fmt(list.campaigns.length)} of ${fmt(list.total)} campaigns` : "";
  total.dataset.total = String(list.total);
  if (!selected && body.selected) selected = body.selected;
  if (selected && body.selected === selected && body.windows) {
    document.getElementById("chart-title").textContent = "Windowed changes — " + selected;
    if (body.windows.error) throw new Error(body.windows.error);
    drawChart(body.windows);
  }
}

// --- scoring runs ---------------------------------------------------------------------

function runRow(r) {
  const settled = r.settled ? "yes, " + (r.settledAt || "").slice(0, 19).replace("T", " ") : "no";
  const tr = row(cell("file", r.key), cell("campaign", r.campaignId), cell("rows-in", fmt(r.rowsIn)),
                 cell("valid", fmt(r.valid)), cell("invalid", fmt(r.invalid)),
                 cell("applied", fmt(r.applied) + " / " + fmt(r.expected)),
                 cell("settled", settled), cell("report", r.report));
  tr.dataset.run = r.runId;
  tr.dataset.key = r.key;
  return tr;
}

function showRuns(body) {
  document.querySelector("#runs tbody").replaceChildren(...body.runs.runs.map(runRow));
}

// --- dead letters ---------------------------------------------------------------------

function letterRow(d) {
  return row(cell("at", (d.at || "").slice(0, 19).replace("T", " ")), cell("kind", d.kind),
             cell("campaign", d.campaignId), cell("where", d.where),
             cell("reasons", d.reasons.join("; ")), cell("raw", d.raw));
}

function showDeadLetters(body) {
  if (body.deadLetters.error) throw new Error(body.deadLetters.error);
  const letters = body.deadLetters.deadLetters;
  document.querySelector("#dead-letters tbody").replaceChildren(...letters.map(letterRow));
}

// --- throughput and lag ---------------------------------------------------------------

function line(points, colour, className) {
  if (points.length < 2) return null;
  return svgElement("polyline", {
    points: points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "),
    fill: "none", stroke: colour, "stroke-width": 1.5, class: className,
  });
}

function drawActivity(workers) {
  const svg = document.getElementById("activity");
  svg.replaceChildren();
  const now = Date.now() / 1000, span = 300, width = 700, height = 170;
  const x = at => 10 + (1 - Math.min(span, Math.max(0, now - at)) / span) * width;
  // Records per second of all workers, summed per second.
  const rate = new Map();
  for (const w of workers) for (const r of w.rates) {
    const second = Math.round(r.at);
    rate.set(second, (rate.get(second) || 0) + r.perSecond);
  }
  const ratePoints = [...rate.entries()].sort((a, b) => a[0] - b[0]);
  const lags = new Map();
  for (const w of workers) for (const sample of w.lag) {
    for (const [partition, behind] of Object.entries(sample.partitions)) {
      if (!lags.has(partition)) lags.set(partition, []);
      lags.get(partition).push([sample.at, behind]);
    }
  }
  const maxRate = Math.max(1, ...ratePoints.map(p => p[1]));
  const maxLag = Math.max(1, ...[...lags.values()].flat().map(p => p[1]));
  const rateLine = line(ratePoints.map(([at, v]) => [x(at), 185 - v / maxRate * height]),
                        "#36c", "rate");
  if (rateLine) svg.appendChild(rateLine);
  for (const [partition, points] of lags) {
    points.sort((a, b) => a[0] - b[0]);
    const lagLine = line(points.map(([at, v]) => [x(at), 185 - v / maxLag * height]), "#c60", "lag");
    if (lagLine) {
      lagLine.dataset.partition = partition;
      svg.appendChild(lagLine);
    }
  }
  const label = svgElement("text", {x: 12, y: 12, "font-size": 10});
  label.textContent = `max ${fmt(Math.round(maxRate))} records/s, ${fmt(maxLag)} messages behind; last 5 min`;
  svg.appendChild(label);
  svg.dataset.samples = String(ratePoints.length + [...lags.values()].reduce((n, p) => n + p.length, 0));
}

function age(seconds) {
  if (seconds == null) return "";
  const s = Math.round(seconds);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}

// A relay waiting for its destination: what for, since when, the last error, how old the
// oldest record it has not delivered yet is. Every part is text (the error comes from a
// service, a lane from a campaign id).
function waitingText(r) {
  const since = (r.since || "").slice(0, 19).replace("T", " ");
  let text = `${r.relay} waiting for ${r.waitingFor} since ${since}`;
  if (r.lanesWaiting > 1) text += ` (${fmt(r.lanesWaiting)} ${r.laneKind || "lane"}s)`;
  if (r.oldestUndeliveredSeconds != null) {
    text += `, oldest undelivered ${age(r.oldestUndeliveredSeconds)} old`;
  }
  if (r.paused) text += ", reading paused";
  if (r.error) text += `: ${r.error}`;
  return text;
}

function workerRow(w) {
  const last = w.rates.length ? w.rates[w.rates.length - 1].perSecond : 0;
  const refused = (w.alarms && w.alarms.mirrorRefused) || 0;
  const waiting = (w.alarms && w.alarms.relaysWaiting) || [];
  const alarms = [];
  if (refused) alarms.push(`${fmt(refused)} DynamoDB item(s) refused for good`);
  for (const r of waiting) alarms.push(waitingText(r));
  const alarm = cell(alarms.length ? "alarm" : "", alarms.length ? alarms.join("; ") : "none");
  alarm.dataset.waiting = waiting.map(r => r.relay).join(" ");
  return row(cell("worker", w.worker), cell("partitions", w.partitions.join(", ")),
             cell("rate", fmt(last)), alarm);
}

function showActivity(body) {
  const workers = body.workers.workers;
  drawActivity(workers);
  document.querySelector("#workers tbody").replaceChildren(...workers.map(workerRow));
}

// --- fan lookup -----------------------------------------------------------------------

async function lookUpFan(event) {
  event.preventDefault();
  const campaign = document.getElementById("fan-campaign").value.trim();
  const user = document.getElementById("fan-user").value.trim();
  const out = document.getElementById("fan-state");
  try {
    const r = await fetch(`/campaigns/${encodeURIComponent(campaign)}/fans/${encodeURIComponent(user)}`,
                          {cache: "no-store"});
    const body = await r.json();
    out.textContent = JSON.stringify(body, null, 2);
    out.dataset.status = String(r.status);
  } catch (err) {
    out.textContent = String(err);
    out.dataset.status = "error";
  }
}

// One request a refresh: the worker answers the whole page at once (/dashboard/console),
// each part as its own route would (/dashboard/campaigns, /campaigns/{id}/counts/windows,
// /dashboard/runs, /dashboard/dead-letters, /dashboard/workers).
async function refresh() {
  const failed = [];
  try {
    const body = await getJson("/dashboard/console" + query({
      campaign: selected,
      runsCampaign: document.getElementById("runs-campaign").value.trim(),
      lettersCampaign: document.getElementById("letters-campaign").value.trim(),
      kind: document.getElementById("letters-kind").value,
      campaigns: CAMPAIGNS_SHOWN, runs: 100, letters: 20,
    }));
    for (const show of [showCounts, showRuns, showDeadLetters, showActivity]) {
      try {
        show(body);
      } catch (err) {
        failed.push(String(err));
      }
    }
  } catch (err) {
    failed.push(String(err));
  }
  document.body.dataset.error = failed.join("; ");
  document.body.dataset.loaded = "true";
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("me").textContent = location.host;
  document.getElementById("fan-form").addEventListener("submit", lookUpFan);
  for (const id of ["runs-campaign", "letters-campaign", "letters-kind"]) {
    document.getElementById(id).addEventListener("change", refresh);
  }
  // The next refresh is 2 s after the last one answered: a slow worker is not asked again
  // and again before it could answer. A page in a hidden tab does not ask at all.
  const poll = async () => {
    if (!document.hidden) await refresh();
    setTimeout(poll, EVERY_MS);
  };
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  poll();
});
