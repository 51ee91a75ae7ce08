// The live dashboard: plain JavaScript, no build step, nothing fetched from elsewhere.
//
// It reads the statistics (counts per status, orders per second, and the stream
// position they hold for) and the recent orders, then follows the live feed from
// that position, so every transition after the snapshot is applied exactly once.
// On `reset` (the feed no longer holds its position) it starts over.
"use strict";

(() => {
  const API = document.querySelector('meta[name="orders-api"]').content.replace(/\/$/, "");
  const STATUSES = ["PLACED", "PROCESSING", "COMPLETED", "CANCELLED", "FAILED"];
  // Each status is entered from exactly one other, so counts follow the feed exactly.
  const FROM = { PROCESSING: "PLACED", COMPLETED: "PROCESSING", CANCELLED: "PLACED", FAILED: "PROCESSING" };
  const WINDOW = 300; // seconds of rate on the chart
  const ROWS = 50;

  const $ = (id) => document.getElementById(id);
  const tbody = document.querySelector("#orders tbody");
  const money = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD" });

  let counts = {};
  let buckets = new Map(); // second (epoch) -> orders created in it
  let skew = 0; // server clock minus ours, in ms
  const rows = new Map(); // orderId -> {order, tr}
  const mine = new Set();
  let source = null;
  let countsDirty = true;

  const el = (tag, props = {}, ...children) => {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children);
    return node;
  };

  // AUTH_MODE=oidc: a pasted access token, kept in this tab's sessionStorage only, sent as a
  // bearer token; the feed opens with a single-use stream ticket (EventSource sends no headers).
  let token = sessionStorage.getItem("orders-token") || "";
  let lastId = null;

  class Unauthorized extends Error {}

  function authHeaders(extra = {}) {
    return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
  }

  function askToken(message) {
    const form = $("token-form");
    form.hidden = false;
    form.querySelector(".muted").textContent = message;
    setConn("down", "Sign-in needed");
  }

  async function getJSON(path, options = {}) {
    const response = await fetch(path, { ...options, headers: authHeaders({ Accept: "application/json" }) });
    if (response.status === 401 || response.status === 403) {
      const answer = await response.json().catch(() => ({}));
      throw new Unauthorized(answer.message || `HTTP ${response.status}`);
    }
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return (await response.json()).data;
  }

  function setConn(state, text) {
    $("conn").dataset.state = state;
    $("conn-text").textContent = text;
  }

  // --- the table ---------------------------------------------------------------------------

  function shortTime(stamp) {
    return stamp ? new Date(stamp).toLocaleTimeString() : "";
  }

  function lastChange(order) {
    return order.completedAt || order.failedAt || order.cancelledAt || order.processedAt || order.createdAt;
  }

  function statusBadge(status) {
    const badge = el("span", { className: "status", textContent: status });
    badge.dataset.status = status;
    return badge;
  }

  function renderRow(order) {
    const tr = el(
      "tr",
      {},
      el("td", { className: "id", title: order.orderId }, el("code", { textContent: order.orderId.slice(-12) })),
      el("td", { textContent: String(order.userId) }),
      el("td", { className: "product", textContent: order.productName }),
      el("td", { className: "num", textContent: String(order.quantity) }),
      el("td", { className: "num", textContent: money.format(order.totalAmount) }),
      el("td", { className: "state" }, statusBadge(order.status)),
      el("td", { className: "when", textContent: shortTime(lastChange(order)) }),
    );
    tr.dataset.orderId = order.orderId;
    tr.dataset.status = order.status;
    if (mine.has(order.orderId)) tr.classList.add("mine");
    return tr;
  }

  function upsertRow(order, isNew) {
    const known = rows.get(order.orderId);
    if (known) {
      if (known.order.version >= order.version) return;
      const tr = renderRow(order);
      known.tr.replaceWith(tr);
      rows.set(order.orderId, { order, tr });
      flash(tr);
      return;
    }
    if (!isNew) return; // a change to an order older than the table shows
    const tr = renderRow(order);
    tbody.prepend(tr);
    rows.set(order.orderId, { order, tr });
    flash(tr);
    while (rows.size > ROWS) {
      const last = tbody.lastElementChild;
      rows.delete(last.dataset.orderId);
      last.remove();
    }
    $("empty").hidden = true;
  }

  function flash(tr) {
    tr.classList.remove("flash");
    void tr.offsetWidth; // restart the animation
    tr.classList.add("flash");
  }

  // --- counts and rate ---------------------------------------------------------------------

  function renderCounts() {
    if (!countsDirty) return;
    countsDirty = false;
    let total = 0;
    for (const status of STATUSES) {
      $(`count-${status}`).textContent = (counts[status] ?? 0).toLocaleString();
      total += counts[status] ?? 0;
    }
    $("count-total").textContent = total.toLocaleString();
  }

  function apply(order) {
    const status = order.status;
    if (status === "PLACED") {
      counts.PLACED = (counts.PLACED ?? 0) + 1;
      const second = Math.floor(Date.parse(order.createdAt) / 1000);
      buckets.set(second, (buckets.get(second) ?? 0) + 1);
    } else if (FROM[status]) {
      counts[FROM[status]] = Math.max(0, (counts[FROM[status]] ?? 0) - 1);
      counts[status] = (counts[status] ?? 0) + 1;
    }
    countsDirty = true;
    upsertRow(order, status === "PLACED");
  }

  function series() {
    const now = Math.floor((Date.now() + skew) / 1000);
    const values = [];
    for (let s = now - WINDOW + 1; s <= now; s++) values.push(buckets.get(s) ?? 0);
    for (const second of buckets.keys()) if (second <= now - WINDOW) buckets.delete(second);
    return values;
  }

  function drawChart() {
    const canvas = $("chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const values = series();
    const peak = Math.max(...values);
    const recent = values.slice(-10);
    $("rate-now").textContent = (recent.reduce((a, b) => a + b, 0) / recent.length).toFixed(1);
    $("rate-peak").textContent = String(peak);

    const left = 36, right = 8, top = 8, bottom = 22;
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    const scale = niceMax(Math.max(peak, 1));
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#6b7686";
    ctx.strokeStyle = "#e3e8ef";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const y = top + plotH - (plotH * i) / 4;
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y) + 0.5);
      ctx.lineTo(width - right, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.fillText(String(Math.round((scale * i) / 4)), left - 6, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let m = 5; m >= 0; m--) {
      const x = left + plotW * (1 - (m * 60) / WINDOW);
      ctx.fillText(m === 0 ? "now" : `-${m}m`, Math.min(Math.max(x, left + 10), width - right - 12), top + plotH + 6);
    }
    const bar = plotW / values.length;
    const gradient = ctx.createLinearGradient(0, top, 0, top + plotH);
    gradient.addColorStop(0, "#3b6ef5");
    gradient.addColorStop(1, "#7fa1ff");
    ctx.fillStyle = gradient;
    values.forEach((value, i) => {
      if (!value) return;
      const h = (plotH * value) / scale;
      ctx.fillRect(left + i * bar + 0.5, top + plotH - h, Math.max(bar - 1, 1), h);
    });
  }

  function niceMax(value) {
    const step = 10 ** Math.floor(Math.log10(value));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return Math.max(4, m * step);
    return value;
  }

  // --- loading and following ---------------------------------------------------------------

  async function load() {
    if (source) source.close();
    setConn("connecting", "Connecting…");
    try {
      const stats = await getJSON(`/api/orders/stats?seconds=${WINDOW}`);
      const recent = await getJSON(`/api/orders?limit=${ROWS}`);
      counts = { ...stats.counts };
      countsDirty = true;
      skew = stats.now - Date.now();
      buckets = new Map(stats.perSecond.map((n, i) => [stats.since / 1000 + i, n]));
      rows.clear();
      tbody.replaceChildren();
      for (const order of recent) {
        const tr = renderRow(order);
        tbody.append(tr);
        rows.set(order.orderId, { order, tr });
      }
      $("empty").hidden = rows.size > 0;
      await follow(stats.position);
    } catch (error) {
      if (error instanceof Unauthorized) {
        askToken(`${error.message}: paste a staff access token (make -s token USER=1 ROLE=staff).`);
        return;
      }
      setConn("down", "Query service unavailable, retrying…");
      setTimeout(load, 3000);
    }
  }

  async function follow(position) {
    // The query parameter is only for the first connection: EventSource reconnects by
    // itself with the Last-Event-ID header, which the server prefers. With a token, each
    // connection needs a fresh ticket: a closed stream is opened again from the last id.
    lastId = position;
    let url = `/api/orders/events?lastEventId=${encodeURIComponent(position)}`;
    if (token) {
      const issued = await getJSON("/api/orders/events/tickets", { method: "POST" });
      url += `&ticket=${encodeURIComponent(issued.ticket)}`;
    }
    const current = (source = new EventSource(url));
    source.onopen = () => setConn("live", "Live");
    source.onerror = () => {
      setConn("connecting", "Reconnecting…");
      if (token && current.readyState === EventSource.CLOSED && source === current) {
        setTimeout(() => follow(lastId).catch(() => load()), 1000);
      }
    };
    for (const status of STATUSES) {
      source.addEventListener(status, (event) => {
        if (event.lastEventId) lastId = event.lastEventId;
        apply(JSON.parse(event.data));
      });
    }
    source.addEventListener("reset", () => load());
  }

  // --- the order form ----------------------------------------------------------------------

  // The api's productName rule, checked before sending: 1 to 200 characters counted as code
  // points (`[...name]`, not UTF-16 units, so 200 emoji fit), no control characters, no
  // bidirectional embeddings, overrides or isolates, and a visible character: not only
  // separators, format or combining characters, surrogates or the blank-looking fillers.
  const NAME_FORBIDDEN = /[\p{Cc}\u202a-\u202e\u2066-\u2069]/u;
  const NAME_INVISIBLE = /^[\p{Z}\p{Cc}\p{Cf}\p{Cs}\p{M}\u115f\u1160\u2800\u3164\uffa0]*$/u;

  function nameProblem(name) {
    const length = [...name].length;
    if (length < 1 || length > 200) return `must be 1 to 200 characters (it has ${length})`;
    if (NAME_FORBIDDEN.test(name)) return "must not contain control characters or bidirectional controls";
    if (NAME_INVISIBLE.test(name)) return "must not be blank (no visible character)";
    return null;
  }

  async function place(event) {
    event.preventDefault();
    const form = event.target;
    const result = $("result");
    const problem = nameProblem(form.productName.value);
    if (problem) {
      result.className = "result error";
      delete result.dataset.orderId;
      result.textContent = `productName: ${problem}`;
      return;
    }
    const body = {
      userId: Number(form.userId.value),
      productName: form.productName.value,
      quantity: Number(form.quantity.value),
      price: Number(form.price.value),
    };
    $("place").disabled = true;
    result.className = "result";
    result.textContent = "Placing…";
    try {
      const response = await fetch(`${API}/api/orders`, {
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/json" }),
        body: JSON.stringify(body),
      });
      const answer = await response.json();
      if (response.status === 202) {
        const id = answer.data.orderId;
        mine.add(id);
        const row = rows.get(id);
        if (row) row.tr.classList.add("mine");
        result.className = "result ok";
        result.dataset.orderId = id;
        result.textContent = `Accepted: order …${id.slice(-12)}`;
      } else {
        const reasons = (answer.errors || []).map((e) => `${e.field}: ${e.reason}`).join("; ");
        result.className = "result error";
        result.textContent = `${answer.message}${reasons ? ` (${reasons})` : ""}`;
      }
    } catch (error) {
      result.className = "result error";
      result.textContent = `The api at ${API} did not answer (is it running, and does CORS_ORIGINS allow this page?)`;
    } finally {
      $("place").disabled = false;
    }
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = event.target.token.value.trim();
    sessionStorage.setItem("orders-token", token);
    event.target.hidden = true;
    load();
  });
  $("api-url").textContent = API;
  $("order-form").addEventListener("submit", place);
  setInterval(() => {
    renderCounts();
    drawChart();
  }, 1000);
  const frame = () => {
    renderCounts();
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  window.addEventListener("resize", drawChart);
  load().then(drawChart);
})();
