// The inflor live view. The feed (/events, Server-Sent Events) sends each stream's latest
// state, at most 10 times a second; updates only replace `latest`, and the page is drawn from
// it in the next animation frame, so a busy tab skips states rather than queueing them. No
// frame is asked for while nothing changes: an idle loop would keep the browser drawing.
"use strict";

const ON = [255, 176, 0];
const OFF = [47, 140, 255];
const STALE_MS = 3000;

const latest = new Map(); // stream id -> its last state from the feed
const counters = new Map(); // stream id -> its pipeline counters
const dirty = new Set(); // ids whose card must be redrawn
const cards = new Map(); // stream id -> its card's elements
let ids = [];
let pending = false; // a frame is requested

const main = document.getElementById("streams");
const status = document.getElementById("status");

function setStatus(text, kind) {
  status.textContent = text;
  status.className = "status " + kind;
}

function connect() {
  const feed = new EventSource("events");
  feed.onopen = () => setStatus("live", "live");
  feed.onerror = () => setStatus("reconnecting…", "lost");
  feed.addEventListener("update", (e) => {
    let u;
    try {
      u = JSON.parse(e.data);
    } catch (_) {
      return;
    }
    ids = u.ids || [];
    for (const [id, c] of Object.entries(u.counters || {})) counters.set(id, c);
    for (const s of u.streams || []) {
      s.received = performance.now();
      latest.set(s.stream, s);
      dirty.add(s.stream);
    }
    if (!pending) {
      pending = true;
      requestAnimationFrame(draw);
    }
  });
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function card(id) {
  let c = cards.get(id);
  if (c) return c;
  const node = document.getElementById("card").content.firstElementChild.cloneNode(true);
  node.dataset.stream = id;
  c = {
    node,
    id: node.querySelector(".id"),
    window: node.querySelector(".window"),
    canvas: node.querySelector("canvas"),
    predicted: node.querySelector(".predicted"),
    truth: node.querySelector(".truth"),
    topk: node.querySelector(".topk"),
    figures: node.querySelector(".figures"),
    layers: node.querySelector(".layers"),
    recent: node.querySelector(".recent"),
  };
  c.id.textContent = id;
  cards.set(id, c);
  return c;
}

function layout() {
  const empty = document.getElementById("empty");
  if (empty && ids.length > 0) empty.remove();
  for (const [id, c] of cards) {
    if (!ids.includes(id)) {
      c.node.remove();
      cards.delete(id);
      latest.delete(id);
    }
  }
  // Cards follow the feed's (sorted) order.
  let prev = null;
  for (const id of ids) {
    if (!latest.has(id)) continue;
    const c = card(id);
    const want = prev ? prev.nextSibling : main.firstChild;
    if (c.node !== want) main.insertBefore(c.node, want);
    prev = c.node;
  }
}

function decode(b64) {
  const s = atob(b64);
  const a = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i);
  return a;
}

function drawFrame(c, f) {
  if (!f) return;
  const canvas = c.canvas;
  const ctx = canvas.getContext("2d");
  if (canvas.width !== f.width || canvas.height !== f.height || !c.img) {
    canvas.width = f.width;
    canvas.height = f.height;
    c.img = ctx.createImageData(f.width, f.height);
  }
  const on = decode(f.on);
  const off = decode(f.off);
  const img = c.img;
  const px = img.data;
  for (let i = 0; i < on.length; i++) {
    const a = on[i] / 255;
    const b = off[i] / 255;
    px[4 * i] = Math.min(255, ON[0] * a + OFF[0] * b);
    px[4 * i + 1] = Math.min(255, ON[1] * a + OFF[1] * b);
    px[4 * i + 2] = Math.min(255, ON[2] * a + OFF[2] * b);
    px[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

// Rows are updated in place (text and widths only when they change), so a redraw touches as
// little of the page as it can: the page redraws up to 10 times a second.
function rows(list, items, make, update) {
  while (list.children.length > items.length) list.lastElementChild.remove();
  while (list.children.length < items.length) list.append(make());
  items.forEach((item, i) => update(list.children[i], item));
}

function setText(e, text) {
  if (e.textContent !== text) e.textContent = text;
}

function setClass(e, cls) {
  if (e.className !== cls) e.className = cls;
}

function makeBar(tag) {
  return () => {
    const r = el(tag);
    const b = el("div", "bar");
    b.append(el("b"));
    r.append(el("span"), b, el("span", "num"));
    return r;
  };
}

function setBar(r, label, fraction, value) {
  const [name, b, num] = r.children;
  if (name.textContent !== label) {
    name.textContent = label;
    name.title = label;
  }
  const width = (100 * Math.max(0, Math.min(1, fraction))).toFixed(1) + "%";
  if (b.dataset.width !== width) {
    b.dataset.width = width;
    b.firstChild.style.width = width;
  }
  setText(num, value);
}

function fmt(x, digits) {
  if (!isFinite(x)) return "–";
  if (Math.abs(x) >= 1e6) return (x / 1e6).toFixed(2) + "M";
  if (Math.abs(x) >= 1e4) return (x / 1e3).toFixed(1) + "k";
  return x.toFixed(digits);
}

const FIGURES = [
  "events/s",
  "windows/s",
  "events in window",
  "compute",
  "end to end",
  "queue",
  "dropped win / ev",
  "rate-limited",
];

// The figures' value cells, by name, made once per card.
function figures(c) {
  if (!c.values) {
    c.values = new Map();
    for (const name of FIGURES) {
      const d = el("div");
      const dd = el("dd");
      d.append(el("dt", "", name), dd);
      c.figures.append(d);
      c.values.set(name, dd);
    }
  }
  return (name, value, warn) => {
    const dd = c.values.get(name);
    setText(dd, value);
    setClass(dd, warn ? "warn" : "");
  };
}

function render(id) {
  const s = latest.get(id);
  const o = s && s.output;
  if (!o) return;
  const c = card(id);
  c.node.dataset.window = o.window;
  c.node.dataset.predicted = o.class;
  c.window.textContent = "#" + o.window + (o.gap ? " · gap" : "") + (o.complete ? "" : " · partial");
  drawFrame(c, s.frame);
  c.canvas.classList.toggle("none", !s.frame);
  c.canvas.title = s.frame ? "events of window #" + o.window : "no image: this source keeps no frames";
  c.predicted.textContent = o.class;
  if (o.label !== undefined && o.label !== null) {
    c.truth.textContent = "true: " + o.label;
    c.truth.className = "truth " + (o.label === o.class ? "ok" : "bad");
  } else {
    c.truth.textContent = "";
    c.truth.className = "truth";
  }
  // Scores as a softmax over every logit: the share each top-k class takes.
  const logits = o.logits || [];
  const m = Math.max(...logits);
  const z = logits.reduce((acc, l) => acc + Math.exp(l - m), 0);
  rows(c.topk, o.top_k || [], makeBar("li"), (r, k) =>
    setBar(r, k.name, z > 0 ? Math.exp(k.logit - m) / z : 0, k.logit.toFixed(3)),
  );
  const layers = ((o.stats && o.stats.layers) || []).filter((l) => l.neurons > 0);
  const peak = Math.max(1e-9, ...layers.map((l) => l.firing_rate));
  rows(c.layers, layers, makeBar("div"), (r, l) =>
    setBar(r, l.name, l.firing_rate / peak, l.firing_rate.toFixed(4)),
  );
  const n = counters.get(id) || {};
  const figure = figures(c);
  figure("events/s", fmt(s.events_per_s, 0));
  figure("windows/s", fmt(s.windows_per_s, 1));
  figure("events in window", fmt(o.events, 0));
  figure("compute", (o.latency.compute_us / 1e3).toFixed(2) + " ms");
  figure("end to end", (o.latency.end_to_end_us / 1e3).toFixed(2) + " ms");
  figure("queue", n.queue_depth === undefined ? "–" : String(n.queue_depth));
  const dw = n.windows_dropped || 0;
  const de = n.events_dropped || 0;
  figure("dropped win / ev", fmt(dw, 0) + " / " + fmt(de, 0), dw + de > 0);
  figure("rate-limited", fmt(n.events_rate_limited || 0, 0));
  rows(
    c.recent,
    s.recent || [],
    () => el("li"),
    (li, r) => {
      setText(li, "#" + r.window + " " + r.class);
      let cls = "";
      if (r.label !== undefined) {
        cls = r.label === r.class ? "ok" : "bad";
        li.title = "true: " + r.label;
      }
      setClass(li, r.gap ? cls + " gap" : cls);
    },
  );
}

function draw() {
  pending = false;
  layout();
  for (const id of dirty) render(id);
  dirty.clear();
  fade();
}

// Cards of streams that have gone quiet fade; checked each second, not each frame.
function fade() {
  const now = performance.now();
  for (const [id, c] of cards) {
    const s = latest.get(id);
    c.node.classList.toggle("stale", !s || now - s.received > STALE_MS);
  }
}

connect();
setInterval(fade, 1000);
