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

// Deep trees are drawn to maxLevels levels (?levels=N in the address,
// default 6: 63 VMs of a binary tree); below that a node shows how many
// VMs it hides and in which states. "show all" draws a function whole.
const params = new URLSearchParams(location.search);
const maxLevels = Math.max(1, parseInt(params.get("levels"), 10) || 6);
const expanded = new Set(); // functions drawn whole
let zoom = 0; // 0: each tree fits the page's width; else pixels per unit, scrolled

// layout places each drawn VM: depth down, in-order across (a tidy tree of
// any fan-out). Below levels, a node's subtree is folded into it.
function layout(tree, levels) {
  const byName = {};
  for (const n of tree.nodes) byName[n.vm] = n;
  const pos = {};
  const hidden = {}; // vm -> the VMs folded below it
  let x = 0;
  function below(name, out) {
    for (const k of byName[name].children || []) { out.push(k); below(k, out); }
    return out;
  }
  function visit(name, depth) {
    const n = byName[name];
    let kids = n.children || [];
    if (depth + 1 >= levels && kids.length > 0) {
      hidden[name] = below(name, []);
      kids = [];
    }
    if (kids.length > 0) visit(kids[0], depth + 1);
    pos[name] = { x: x++, y: depth };
    for (const k of kids.slice(1)) visit(k, depth + 1);
  }
  if (tree.root) visit(tree.root, 0);
  return { pos, width: Math.max(x, 1), hidden };
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

// stripeTrees are f's trees: one per stripe, or the tree itself.
function stripeTrees(f) {
  if (f.tree.stripes && f.tree.stripes.length > 0) return f.tree.stripes;
  return [{ stripe: 0, root: f.tree.root, height: f.tree.height, nodes: f.tree.nodes }];
}

function drawFunction(f) {
  const section = el("section", { "data-function": f.function });
  const ready = f.vms.filter((v) => v.state === "ready").length;
  const trees = stripeTrees(f);
  section.append(el("h2", {}, f.function));
  const deepest = Math.max(...trees.map((t) => t.height + 1));
  const meta = el("div", { class: "fn-meta" },
    `${f.image} · ${f.tree.nodes.length} VMs · height ${f.tree.height}` +
    (trees.length > 1 ? ` · ${trees.length} stripes (block i goes down stripe i mod ${trees.length})` : "") +
    ` · ${ready} ready `);
  if (deepest > maxLevels) {
    const whole = expanded.has(f.function);
    const b = el("button", { type: "button", class: "expand", "data-expanded": whole ? "1" : "0" },
      whole ? `fold below ${maxLevels} levels` : `show all ${deepest} levels`);
    b.addEventListener("click", () => {
      if (expanded.has(f.function)) expanded.delete(f.function); else expanded.add(f.function);
      draw(current, true);
    });
    meta.append(b);
  }
  section.append(meta);
  const hist = (readyHistory[f.function] ||= []);
  hist.push(ready);
  if (hist.length > 120) hist.shift();
  section.append(el("div", { class: "timeline", title: "VMs ready, one mark per update" },
    "ready over time: " + hist.map((r) => "▁▂▃▄▅▆▇█"[Math.min(7, Math.floor(8 * r / Math.max(1, f.tree.nodes.length)))]).join("")));
  const vms = {};
  for (const v of f.vms) vms[v.vm] = v;
  const levels = expanded.has(f.function) ? Infinity : maxLevels;
  for (const t of trees) {
    if (trees.length > 1) section.append(el("h3", {}, `stripe ${t.stripe + 1}/${trees.length}: blocks ${t.stripe}, ${t.stripe + trees.length}, … · height ${t.height}`));
    section.append(drawTree(f, t, vms, levels));
  }
  return section;
}

function drawTree(f, tree, vms, levels) {
  const { pos, width, hidden } = layout(tree, levels);
  const rows = Math.min(tree.height + 1, levels);
  const dx = 46, dy = 56, W = width * dx + 20, H = rows * dy + 30;
  const z = zoom || 1.5;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: W * z, height: H * z, role: "img",
    class: zoom ? "zoomed" : "fit", "aria-label": `tree of ${f.function}, stripe ${tree.stripe}`, "data-stripe": tree.stripe });
  const at = (name) => ({ x: 10 + dx / 2 + pos[name].x * dx, y: 20 + pos[name].y * dy });
  for (const n of tree.nodes) {
    if (!n.parent || !pos[n.parent] || !pos[n.vm]) continue;
    const a = at(n.parent), b = at(n.vm), v = vms[n.vm] || {};
    const mbps = rate(f.function, n.vm, v.bytes_from_parent || 0) / (1 << 20);
    svg.append(el("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, "stroke-width": Math.min(8, 1 + mbps) }));
  }
  for (const n of tree.nodes) {
    if (!pos[n.vm]) continue;
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
    if (hidden[n.vm]) svg.append(folded(n.vm, hidden[n.vm], vms, p));
  }
  const box = el("div", { class: "tree" });
  box.append(svg);
  return box;
}

// folded marks the VMs hidden below vm: how many, and how many per state.
function folded(vm, names, vms, p) {
  const count = {};
  for (const name of names) {
    const s = (vms[name] || { state: "assigned" }).state;
    count[s] = (count[s] || 0) + 1;
  }
  const g = el("g", { class: "folded", "data-below": vm, "data-count": names.length });
  const text = Object.keys(states).filter((s) => count[s]).map((s) => `${count[s]}${states[s]}`).join(" ");
  g.append(el("title", {}, `${names.length} VMs below ${vm}: ${text}`));
  g.append(el("text", { x: p.x, y: p.y + 44, class: "more" }, `+${names.length}: ${text}`));
  return g;
}

function fmt(b) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${b.toFixed(i ? 1 : 0)} ${u[i]}`;
}

// draw shows snapshot s; again redraws the current one (a click), keeping
// the previous snapshot for the rates.
function draw(s, again) {
  if (!again) {
    s.at = performance.now();
    previous = current;
    current = s;
  }
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

for (const [id, f] of [["zoom-in", 1.25], ["zoom-out", 0.8]]) {
  document.getElementById(id).addEventListener("click", () => {
    zoom = Math.min(6, Math.max(0.25, (zoom || 1.5) * f));
    if (current) draw(current, true);
  });
}

// A session cookie from before may still be good.
fetch(api + "/events", { method: "HEAD" }).then((r) => (r.ok ? watch() : login()), () => login());
