// The dashboard's script. Campaign ids come from S3 keys and Kinesis records, so every value
// shown goes in through textContent or setAttribute, never as markup (the page is served with
// a Content-Security-Policy that refuses inline script).
"use strict";

const fmt = n => Number(n).toLocaleString("en-US");
const SVG = "http://www.w3.org/2000/svg";
let selected = null;

async function getJson(path) {
  const r = await fetch(path, {cache: "no-store"});
  if (!r.ok) throw new Error(path + " -> " + r.status);
  return r.json();
}

function cell(className, text) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

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
  const tr = document.createElement("tr");
  tr.dataset.campaign = c.campaignId;
  const link = document.createElement("a");
  link.href = "#";
  link.className = "campaign";
  link.textContent = c.campaignId;
  link.addEventListener("click", e => { e.preventDefault(); selected = c.campaignId; refresh(); });
  const first = cell("", "");
  first.appendChild(link);
  tr.append(first, cell("verified", fmt(c.verified)), cell("rejected", fmt(c.rejected)),
            cell("selected", fmt(c.selected)));
  return tr;
}

async function refresh() {
  try {
    const list = await getJson("/dashboard/campaigns");
    document.querySelector("#counts tbody").replaceChildren(...list.campaigns.map(countsRow));
    if (!selected && list.campaigns.length) selected = list.campaigns[0].campaignId;
    if (selected) {
      document.getElementById("chart-title").textContent = "Windowed changes — " + selected;
      drawChart(await getJson(`/campaigns/${encodeURIComponent(selected)}/counts/windows`));
    }
    document.body.dataset.loaded = "true";
  } catch (err) {
    document.body.dataset.error = String(err);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("me").textContent = location.host;
  refresh();
  setInterval(refresh, 2000);
});
