// Feed explorer: plain JavaScript over the public JSON API (no build step, no dependencies).
// The key is kept in localStorage and sent as `Authorization: Bearer <key>`, the header the API checks.
"use strict";

const KEY_STORAGE = "phoenix-recsys.api-key";
// Relative to the page (/ui/), so the explorer also works behind a proxy that adds a path prefix.
const API = new URL("..", window.location.href);
const $ = (id) => document.getElementById(id);

let actions = [];          // action names of the served bundle (from /healthz)
let lastFeed = null;       // the previous feed response, to mark what changed
let blocked = new Set();   // authors blocked from this page, so they can be unblocked

function headers(json) {
  const h = {};
  const key = window.localStorage.getItem(KEY_STORAGE);
  if (key) h["Authorization"] = "Bearer " + key;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function call(method, path, body) {
  const resp = await fetch(new URL(path, API), {
    method, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await resp.json(); } catch (_) { /* non-JSON error body */ }
  if (!resp.ok) {
    let msg = resp.status + " " + resp.statusText;
    const d = data && data.detail;
    if (Array.isArray(d)) msg += ": " + d.map((e) => (e.loc || []).join(".") + ": " + e.msg).join("; ");
    else if (d) msg += ": " + d;
    if (resp.status === 401) msg += " (paste the server's API key above)";
    throw new Error(msg);
  }
  return data;
}

function status(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

const fmt = (x, d = 3) => (x === null || x === undefined ? "-" : Number(x).toPrecision(d));

function age(s) {
  for (const [u, n] of [["d", 86400], ["h", 3600], ["m", 60]]) if (Math.abs(s) >= n) return (s / n).toFixed(1) + u;
  return s + "s";
}

function renderItem(it, isNew) {
  const probs = Object.entries(it.probabilities).sort((a, b) => b[1] - a[1]).slice(0, 3);
  const probRows = probs.map(([name, p]) => el("tr", {},
    el("td", {}, name), el("td", { class: "num" }, fmt(p)),
    el("td", {}, el("span", { class: "pbar", style: "" }))));
  probRows.forEach((row, i) => { row.querySelector(".pbar").style.width = Math.min(1, Math.max(0, probs[i][1])) * 80 + "px"; });

  const contrib = it.top_contributions.map((c) => el("tr", {},
    el("td", {}, c.action), el("td", { class: "num" }, (c.contribution >= 0 ? "+" : "") + fmt(c.contribution))));

  const select = el("select", { class: "action", title: "engagement to send" },
    ...actions.map((a) => el("option", { value: a, selected: a === "favorite" }, a)));
  const engage = el("button", { class: "engage", type: "button", textContent: "Send" });
  engage.addEventListener("click", () => sendEngagement(it.post_id, select.value));
  const block = el("button", { class: "block", type: "button", textContent: "Block author " + it.author_id });
  block.addEventListener("click", () => setBlock(it.author_id, true));

  return el("li", { class: "item" + (isNew ? " fresh" : ""), "data-post-id": it.post_id, "data-author-id": it.author_id },
    el("div", { class: "rank" }, it.rank),
    el("div", { class: "head" },
      el("b", {}, "post " + it.post_id), " by author " + it.author_id,
      el("span", { class: "badge " + it.source, title: "candidate source" }, it.source),
      it.in_network ? el("span", { class: "badge", title: "the viewer follows the author" }, "followed") : "",
      el("div", { class: "muted" }, "age " + age(it.age_s) +
        (it.retrieval_score === null ? "" : " · retrieval " + fmt(it.retrieval_score))),
      el("div", { class: "score" }, "final " + fmt(it.final_score, 4) + " = offset " + fmt(it.offset_score, 4) +
        " × div " + fmt(it.diversity_multiplier) + " × oon " + fmt(it.oon_multiplier)),
      el("div", { class: "muted" }, "weighted " + fmt(it.weighted_score, 4))),
    el("div", {}, el("h4", {}, "top probabilities"), el("table", { class: "probs" }, ...probRows)),
    el("div", {}, el("h4", {}, "score contributions"), el("table", { class: "contrib" }, ...contrib)),
    el("div", { class: "actions" }, select, engage, block));
}

function renderBlocked() {
  const box = $("summary");
  if (!blocked.size) return;
  const span = el("span", {}, " · blocked here: ");
  for (const a of blocked) {
    const b = el("button", { type: "button", class: "unblock", textContent: "unblock " + a });
    b.addEventListener("click", () => setBlock(a, false));
    span.append(b, " ");
  }
  box.append(span);
}

async function loadFeed(note) {
  const user = Number($("user").value), k = Number($("k").value);
  if (!Number.isInteger(user) || user < 0) return status("user id must be a non-negative integer", true);
  if (!Number.isInteger(k) || k < 1) return status("k must be a positive integer", true);
  const url = new URL(window.location.href);
  url.searchParams.set("user", user); url.searchParams.set("k", k);
  window.history.replaceState(null, "", url);
  status("loading ...");
  let feed;
  try { feed = await call("POST", "v1/feed", { user_id: user, k }); } catch (e) { return status(e.message, true); }
  if (lastFeed && lastFeed.user_id !== feed.user_id) blocked = new Set();
  const before = lastFeed && lastFeed.user_id === feed.user_id ? new Set(lastFeed.items.map((i) => i.post_id)) : null;
  const now = new Set(feed.items.map((i) => i.post_id));
  $("feed").replaceChildren(...feed.items.map((it) => renderItem(it, before !== null && !before.has(it.post_id))));
  const sources = Object.entries(feed.sources).map(([s, n]) => s + " " + n).join(", ") || "none";
  const filtered = Object.entries(feed.filtered).filter(([, n]) => n).map(([f, n]) => f + " " + n).join(", ") || "none";
  $("summary").textContent = "user " + feed.user_id + (feed.cold_start ? " (cold start)" : "") + " · history " +
    feed.history_length + " events · sources: " + sources + " · filtered: " + filtered + " · ranked " + feed.ranked +
    " · " + fmt(feed.timings_ms.total || 0) + " ms";
  renderBlocked();
  let changed = "";
  if (before !== null) {
    const gone = [...before].filter((p) => !now.has(p)).length;
    const added = [...now].filter((p) => !before.has(p)).length;
    changed = " (" + gone + " left, " + added + " new, highlighted)";
  }
  status((note ? note + "; " : "") + feed.items.length + " items" + changed);
  lastFeed = feed;
}

async function sendEngagement(postId, action) {
  const user = Number($("user").value);
  try {
    await call("POST", "v1/events", { events: [{ user_id: user, post_id: postId, actions: [action] }] });
  } catch (e) { return status(e.message, true); }
  await loadFeed("sent " + action + " on post " + postId);
}

async function setBlock(author, on) {
  const user = Number($("user").value);
  try { await call(on ? "PUT" : "DELETE", "v1/users/" + user + "/blocks/" + author); }
  catch (e) { return status(e.message, true); }
  if (on) blocked.add(author); else blocked.delete(author);
  await loadFeed((on ? "blocked" : "unblocked") + " author " + author);
}

// Recently active users (GET /v1/users), as buttons that load their feed: a picker for people who
// do not know the ids in their store. Needs a read key like every read; quiet when refused.
async function loadUsers() {
  let body;
  try { body = await call("GET", "v1/users?limit=20"); } catch (_) { $("users").replaceChildren(); return; }
  const nowS = Date.now() / 1000;
  const buttons = body.users.map((u) => {
    const b = el("button", { type: "button", class: "pick", textContent: "user " + u.user_id,
      title: u.last_active === null ? "" : "last active " + age(Math.round(nowS - u.last_active)) + " ago" });
    b.dataset.userId = u.user_id;
    b.addEventListener("click", () => { $("user").value = u.user_id; loadFeed(); });
    return b;
  });
  $("users").replaceChildren(...(buttons.length ? [el("span", {}, "recently active: "), ...buttons] : []));
}

async function init() {
  const params = new URL(window.location.href).searchParams;
  if (params.has("user")) $("user").value = params.get("user");
  if (params.has("k")) $("k").value = params.get("k");
  const stored = window.localStorage.getItem(KEY_STORAGE);
  if (stored) $("apikey").placeholder = "key saved in this browser";
  $("apikey").addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); $("savekey").click(); } });
  $("savekey").addEventListener("click", () => {
    const v = $("apikey").value.trim();
    if (!v) return status("paste a key first", true);
    window.localStorage.setItem(KEY_STORAGE, v);
    $("apikey").value = ""; $("apikey").placeholder = "key saved in this browser";
    status("key saved");
    loadUsers();
  });
  $("clearkey").addEventListener("click", () => {
    window.localStorage.removeItem(KEY_STORAGE);
    $("apikey").placeholder = "PHOENIX_API_KEY (stored in this browser)";
    status("key forgotten");
  });
  $("controls").addEventListener("submit", (ev) => { ev.preventDefault(); loadFeed(); });
  try {
    const h = await call("GET", "healthz");
    actions = h.actions;
    // The bundle id is "kind:sha256|kind:sha256": a short prefix of each is enough to tell bundles apart.
    const bundle = String(h.bundle).split("|").map((part) => part.replace(/:([0-9a-f]{10})[0-9a-f]+/, ":$1")).join(" ");
    $("health").title = h.bundle;
    $("health").textContent = "bundle " + bundle + " · " + (h.index_posts ?? 0) + " indexed posts · writes " +
      (h.writes_enabled ? "on" : "off");
  } catch (e) { status(e.message, true); }
  loadUsers();
  if (params.has("user")) loadFeed();
}

init();
