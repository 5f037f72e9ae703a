// The live view: reads snapshots from the manager's events stream and
// draws every function's tree. Nothing is fetched from anywhere else.
"use strict";

const api = "/api/v1";
const states = { assigned: "A", fetching: "F", ready: "R", failed: "X" };
let previous = null; // the last snapshot, for bytes per second
const readyHistory = {}; // function -> [[seconds since first seen, ready]]

function el(tag, attrs, text) {
  const ns = ["svg", "line", "circle", "rect", "text", "g", "title", "polygon"].includes(tag)
    ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml";
  const e = document.createElementNS(ns, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// layout places each VM: depth down, in-order across (a tidy binary tree).
function layout(tree) {
  const byName = {};
  for (const n of tree.nodes) byName[n.vm] = n;
  const pos = {};
  let x = 0;
  function visit(name) {
    const n = byName[name];
    const kids = n.children || [];
    if (kids.length > 0) visit(kids[0]);
    pos[name] = { x: x++, y: n.depth };
    for (const k of kids.slice(1)) visit(k);
  }
  if (tree.root) visit(tree.root);
  return { pos, width: Math.max(x, 1), byName };
}

function rate(fn, vm, bytes) {
  if (!previous) return 0;
  const pf = previous.functions.find((f) => f.function === fn);
  const pv = pf && pf.vms.find((v) => v.vm === vm);
  const dt = (current.at - previous.at) / 1000;
  if (!pv || dt <= 0) return 0;
  return Math.max(0, (bytes - pv.bytes_from_parent) / dt);
}

let current = null;

function drawFunction(f) {
  const section = el("section", { "data-function": f.function });
  const ready = f.vms.filter((v) => v.state === "ready").length;
  section.append(el("h2", {}, f.function));
  section.append(el("div", { class: "fn-meta" },
    `${f.image} · ${f.tree.nodes.length} VMs · height ${f.tree.height} · ${ready} ready`));
  const hist = (readyHistory[f.function] ||= []);
  hist.push(ready);
  if (hist.length > 120) hist.shift();
  section.append(el("div", { class: "timeline", title: "VMs ready, one mark per update" },
    "ready over time: " + hist.map((r) => "▁▂▃▄▅▆▇█"[Math.min(7, Math.floor(8 * r / Math.max(1, f.tree.nodes.length)))]).join("")));
  const { pos, width, byName } = layout(f.tree);
  const dx = 46, dy = 56, W = width * dx + 20, H = (f.tree.height + 1) * dy + 20;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: W * 1.5, height: H * 1.5, role: "img", "aria-label": `tree of ${f.function}` });
  const vms = {};
  for (const v of f.vms) vms[v.vm] = v;
  const at = (name) => ({ x: 10 + dx / 2 + pos[name].x * dx, y: 20 + pos[name].y * dy });
  for (const n of f.tree.nodes) {
    if (!n.parent || !pos[n.parent]) continue;
    const a = at(n.parent), b = at(n.vm), v = vms[n.vm] || {};
    const mbps = rate(f.function, n.vm, v.bytes_from_parent || 0) / (1 << 20);
    svg.append(el("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, "stroke-width": Math.min(8, 1 + mbps) }));
  }
  for (const n of f.tree.nodes) {
    const p = at(n.vm), v = vms[n.vm] || { state: "assigned" };
    const g = el("g", { class: "vm", "data-vm": n.vm, "data-state": v.state, "data-parent": n.parent || "" });
    g.append(el("title", {}, `${n.vm}: ${v.state}${v.error ? " — " + v.error : ""}`));
    g.append(el("circle", { cx: p.x, cy: p.y, r: 11, class: v.state }));
    g.append(el("text", { x: p.x, y: p.y + 4, class: "label" }, states[v.state] || "?"));
    g.append(el("text", { x: p.x, y: p.y + 24, class: "name" }, n.vm));
    const share = v.image_bytes > 0 ? Math.min(1, v.bytes_fetched / v.image_bytes) : (v.state === "ready" ? 1 : 0);
    g.append(el("rect", { x: p.x - 15, y: p.y + 28, width: 30, height: 4, fill: "#ddd" }));
    g.append(el("rect", { x: p.x - 15, y: p.y + 28, width: 30 * share, height: 4, fill: "#0072B2" }));
    svg.append(g);
  }
  section.append(svg);
  return section;
}

function fmt(b) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${b.toFixed(i ? 1 : 0)} ${u[i]}`;
}

function draw(s) {
  s.at = performance.now();
  previous = current;
  current = s;
  document.getElementById("summary").textContent =
    `registry sent ${fmt(s.registry_bytes)} · VMs received ${fmt(s.received_bytes)}` +
    (s.registry_bytes > 0 ? ` (${(s.received_bytes / s.registry_bytes).toFixed(1)}x)` : "");
  const main = document.getElementById("functions");
  main.replaceChildren(...s.functions.map(drawFunction));
  document.getElementById("status").textContent = `live · last change ${new Date().toLocaleTimeString()}`;
}

function watch() {
  document.getElementById("login").hidden = true;
  const es = new EventSource(api + "/events");
  es.addEventListener("snapshot", (e) => draw(JSON.parse(e.data)));
  es.onerror = async () => {
    // EventSource hides the status: ask once whether the session is gone.
    const r = await fetch(api + "/events", { method: "HEAD" }).catch(() => null);
    if (r && (r.status === 401 || r.status === 403)) {
      es.close();
      login("the session ended; give a read token again");
    } else {
      document.getElementById("status").textContent = "disconnected, retrying…";
    }
  };
}

function login(msg) {
  const form = document.getElementById("login");
  form.hidden = false;
  document.getElementById("login-error").textContent = msg || "";
  document.getElementById("status").textContent = "";
}

document.getElementById("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = document.getElementById("token");
  const r = await fetch(api + "/ui/session", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: input.value }),
  });
  input.value = ""; // the cookie holds it now, out of the script's reach
  if (r.ok) watch(); else login(`refused (${r.status})`);
});

// A session cookie from before may still be good.
fetch(api + "/events", { method: "HEAD" }).then((r) => (r.ok ? watch() : login()), () => login());
