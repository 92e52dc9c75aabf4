// AICraft live map: one canvas, batched drawing, a virtualised list. No build step.
//
// Data: /ws/viewer on the msgpack subprotocol with the page's ?token=. Each NPC keeps the
// position it was drawn at and the latest one, and markers glide between them over tick_ms.
// The view asks the gateway only for what it shows (subscribe with the visible rectangle plus
// a margin; everything in the dimension when zoomed far out).

import { decode } from "./msgpack.js";

const ROLE_COLORS = {
  miner: "#f59e0b",
  builder: "#38bdf8",
  scout: "#a78bfa",
  farmer: "#a3e635",
  guard: "#f87171",
  unknown: "#94a3b8",
};
const OFFLINE_COLOR = "#64748b";
const SELECT_COLOR = "#5eead4";
const DIMS = ["overworld", "the_nether", "the_end"];
const DIM_BG = { overworld: "#0b1016", the_nether: "#150b0b", the_end: "#0f0b16" };
const TRAIL = 8; // points kept per NPC (one per update): about 4 s at the default tick
const TRAIL_LINES_MAX = 400; // up to this many markers on screen, trails are lines; beyond, dots
const LABEL_MAX_VISIBLE = 250; // above this, only the selected and hovered names
const FAR_BLOCKS = 2500; // a view wider than this subscribes to the whole dimension
const ROW_H = 36;
const EVENTS_MAX = 60;
const SNAP_DISTANCE = 48; // farther than this in one update is a teleport: no glide
const DIRECTORY_MS = 5000; // how often the whole registry is read again over REST
const LABEL_CELL = 64; // px: the grid that finds colliding labels

const params = new URLSearchParams(location.search);
// The page's token: from its URL, renewed before it expires (see renewToken).
let token = params.get("token") || "";
const RENEW_AT = 0.2; // renew when this fraction of the token's remaining lifetime is left
const RENEW_RETRY_MS = 5000; // at most this long between attempts after a failed renewal

// -- state ------------------------------------------------------------------------------------
const state = {
  npcs: new Map(), // id → NPC
  all: [], // the same NPCs, for tight loops
  tickMs: 500,
  dim: params.get("dim") || "overworld",
  dims: new Set(DIMS),
  selected: null, // id
  following: false,
  hover: null, // id
  roleOff: new Set(),
  statusFilter: "",
  search: "",
  onlineOnly: true,
  conn: "connecting",
  view: { cx: 0, cz: 0, scale: 2 }, // scale: CSS px per block
  viewFitted: false,
  subscription: null, // what was last sent: {dim, area|null}
  lastViewChange: 0,
  filtered: [], // NPCs in the side list, sorted
  listDirty: true,
  rowsDirty: true,
  stats: { fps: 0, drawn: 0, rafs: 0, connects: 0, renewals: 0, recoveries: 0, recoveryFailures: 0, recoveredEvents: 0, frames: 0, updates: 0, ups: 0, snapshots: 0, lastFrameTs: 0, subscribes: 0 },
};

// -- DOM ----------------------------------------------------------------------------------------
const $ = (id) => document.getElementById(id);
const canvas = $("map");
const ctx = canvas.getContext("2d", { alpha: false });
const listEl = $("list");
const spacer = $("list-spacer");
const tooltip = $("tooltip");
const card = $("card");

// -- NPC records --------------------------------------------------------------------------------
function makeNpc(id) {
  return {
    id, name: id, role: "unknown", status: "unknown", online: false, dim: null, hasPos: false,
    x0: 0, z0: 0, x1: 0, z1: 0, y: 0, yaw: 0, t0: 0,
    trail: new Float64Array(TRAIL * 2), trailHead: 0, trailLen: 0,
    sx: 0, sy: 0, vis: false, match: true, lastEvent: null, meta: false,
  };
}

function upsert(id) {
  let npc = state.npcs.get(id);
  if (!npc) {
    npc = makeNpc(id);
    state.npcs.set(id, npc);
    state.all.push(npc);
    state.listDirty = true;
    requestMeta(npc);
  }
  return npc;
}

function inSubscription(sub, u) {
  if (sub.dim && u.dim !== sub.dim) return false;
  if (!sub.area) return true;
  const [x0, z0, x1, z1] = sub.area;
  return u.x >= x0 && u.x <= x1 && u.z >= z0 && u.z <= z1;
}

function rebuildAll() {
  state.all = Array.from(state.npcs.values());
  state.listDirty = true;
}

function interp(npc, now) {
  const t = Math.min(1, (now - npc.t0) / state.tickMs);
  return t >= 1 ? [npc.x1, npc.z1] : [npc.x0 + (npc.x1 - npc.x0) * t, npc.z0 + (npc.z1 - npc.z0) * t];
}

function setPosition(npc, u, now) {
  const dimChanged = npc.dim !== u.dim;
  if (!npc.hasPos || dimChanged || Math.abs(u.x - npc.x1) + Math.abs(u.z - npc.z1) > SNAP_DISTANCE) {
    npc.x0 = u.x; npc.z0 = u.z; npc.trailLen = 0;
  } else {
    // Glide from where the marker is drawn now, so a late frame never makes it jump back.
    const [x, z] = interp(npc, now);
    npc.x0 = x; npc.z0 = z;
  }
  npc.x1 = u.x; npc.z1 = u.z; npc.y = u.y ?? npc.y; npc.yaw = u.yaw ?? npc.yaw;
  npc.t0 = now;
  if (dimChanged) {
    npc.dim = u.dim;
    if (u.dim) state.dims.add(u.dim);
    state.listDirty = true;
  }
  npc.hasPos = true;
  // Ring buffer: O(1) per update, fixed memory per NPC.
  const h = npc.trailHead;
  npc.trail[h * 2] = u.x; npc.trail[h * 2 + 1] = u.z;
  npc.trailHead = (h + 1) % TRAIL;
  if (npc.trailLen < TRAIL) npc.trailLen++;
}

function applyMap(npc, m, now) {
  npc.name = m.name || m.id; npc.role = m.role || "unknown"; npc.status = m.status || "unknown";
  npc.online = !!m.online; npc.meta = true;
  if (m.x != null && m.z != null) setPosition(npc, { x: m.x, y: m.y, z: m.z, yaw: m.yaw, dim: m.dim || "overworld" }, now);
  npc.match = matches(npc);
}

// NPCs first seen in a positions frame or `joined` (newly registered): fetch their name and role.
const metaQueue = [];
let metaBusy = 0;
function requestMeta(npc) {
  if (npc.meta || !token) return;
  npc.meta = true;
  metaQueue.push(npc.id);
  pumpMeta();
}
function pumpMeta() {
  while (metaBusy < 4 && metaQueue.length) {
    const id = metaQueue.shift();
    metaBusy++;
    fetch(`/api/npcs/${encodeURIComponent(id)}`, { headers: { Authorization: `Bearer ${token}` } })
      .then((r) => (r.ok ? r.json() : null))
      .then((m) => {
        const npc = state.npcs.get(id);
        if (!m || !npc) return;
        npc.name = m.name || id; npc.role = m.role || "unknown";
        if (npc.status === "unknown" && m.status) npc.status = m.status;
        npc.match = matches(npc); state.listDirty = true;
      })
      .catch(() => {})
      .finally(() => { metaBusy--; pumpMeta(); });
  }
}

// -- the registry: every NPC, over REST ----------------------------------------------------------
// The socket carries the area on screen only. Search, the list while searching and the ONLINE
// counter are about every NPC, so the page also reads GET /api/npcs (every page) on connect and
// every few seconds. NPCs outside the area are "far" records, listed but not drawn.
const directory = { byId: new Map(), far: new Map(), loaded: false, fetching: false, at: 0 };

async function refreshDirectory() {
  if (directory.fetching || !token) return;
  directory.fetching = true;
  try {
    const next = new Map();
    let cursor = null;
    do {
      const q = new URLSearchParams({ limit: "500" });
      if (cursor) q.set("cursor", cursor);
      const r = await fetch(`/api/npcs?${q}`, { headers: { Authorization: `Bearer ${token}` } });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const page = await r.json();
      for (const m of page.npcs || []) next.set(m.id, m);
      cursor = page.next_cursor;
    } while (cursor);
    directory.byId = next;
    const now = performance.now();
    for (const [id, npc] of directory.far) {
      const m = next.get(id);
      if (m) applyMap(npc, m, now); else directory.far.delete(id);
    }
    directory.loaded = true;
    state.listDirty = true;
  } catch (err) {
    console.warn("reading the NPC registry failed:", err.message);
  } finally {
    directory.at = performance.now();
    directory.fetching = false;
  }
}

// A registry NPC that the socket does not show (outside the area): a record for the list.
function farNpc(m) {
  let npc = directory.far.get(m.id);
  if (!npc) {
    npc = makeNpc(m.id);
    npc.meta = true;
    applyMap(npc, m, performance.now());
    directory.far.set(m.id, npc);
  }
  return npc;
}

function lookup(id) {
  return state.npcs.get(id) || directory.far.get(id) || null;
}

// -- messages -----------------------------------------------------------------------------------
function handle(msg) {
  const now = performance.now();
  switch (msg.type) {
    case "welcome":
      state.tickMs = msg.tick_ms > 0 ? msg.tick_ms : 100;
      setConn("connected");
      scheduleRenewal(false);
      refreshDirectory();
      if (state.subscription) sendSubscription(state.subscription, true);
      break;
    case "snapshot": {
      // The gateway's word on what this subscription holds: replace, but keep the glide and
      // trail of NPCs we already had so a re-subscribe does not make markers jump.
      const next = new Map();
      for (const m of msg.npcs || []) {
        const npc = state.npcs.get(m.id) || makeNpc(m.id);
        applyMap(npc, m, now);
        next.set(m.id, npc);
      }
      state.npcs = next;
      rebuildAll();
      state.stats.snapshots++;
      if (!state.viewFitted) fitView(true);
      break;
    }
    case "positions": {
      const ups = msg.updates || [];
      const sub = state.subscription;
      let left = false;
      for (let i = 0; i < ups.length; i++) {
        const u = ups[i];
        if (sub && !inSubscription(sub, u)) {
          // It left the area we subscribed to (contract §6.2): its last word until it is back.
          if (state.npcs.delete(u.id)) left = true;
          if (state.selected === u.id) state.following = false;
          continue;
        }
        const npc = upsert(u.id);
        if (!npc.online) { npc.online = true; npc.match = matches(npc); state.listDirty = true; }
        setPosition(npc, u, now);
      }
      if (left) rebuildAll();
      state.stats.updates += ups.length;
      state.stats.frames++;
      state.stats.lastFrameTs = msg.ts || Date.now();
      break;
    }
    case "status": {
      const npc = upsert(msg.id);
      const was = npc.match;
      npc.status = msg.status;
      npc.match = matches(npc);
      // The list is sorted by name: a new status only re-sorts it when it changes who is listed
      // (or is new to the status filter); otherwise the visible rows are just redrawn.
      if (was !== npc.match || !statusesSeen.has(msg.status)) state.listDirty = true;
      else state.rowsDirty = true;
      break;
    }
    case "joined":
    case "left": {
      const npc = upsert(msg.id);
      npc.online = msg.type === "joined";
      npc.match = matches(npc);
      state.listDirty = true;
      break;
    }
    case "event": {
      // Where the stream was left: the next connection resumes after it (contract §6.5).
      if (typeof msg.epoch === "string" && Number.isInteger(msg.seq)) {
        resumeFrom = { epoch: msg.epoch, seq: msg.seq };
      }
      const npc = state.npcs.get(msg.npc);
      if (npc) npc.lastEvent = msg;
      pushEvent(msg);
      break;
    }
    case "recovered":
      if (msg.ok) {
        state.stats.recoveries++;
        state.stats.recoveredEvents += msg.count || 0;
      } else {
        // The history no longer reaches back: say so in the log rather than hide the gap.
        state.stats.recoveryFailures++;
        pushEvent({ npc: "", name: "(events missed while disconnected)", data: {}, gap: true });
      }
      break;
    case "auth_ok":
      if (pendingToken) adoptToken(pendingToken);
      pendingToken = null;
      state.stats.renewals++;
      scheduleRenewal(false);
      break;
    case "error":
      if (msg.ref === "auth") { pendingToken = null; scheduleRenewal(true); break; }
      console.warn("gateway error", msg.code, msg.message);
      break;
  }
}

// -- connection ---------------------------------------------------------------------------------
let ws = null;
let attempt = 0;
let reconnectTimer = 0;
let welcomed = false;
let resumeFrom = null; // {epoch, seq} of the last event received

function connect() {
  clearTimeout(reconnectTimer);
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  let url = `${proto}//${location.host}/ws/viewer?token=${encodeURIComponent(token)}`;
  // Resume the event stream where it was left: the events emitted while the page was away
  // arrive first (after `recovered`), so the event log has no gap (contract §6.5).
  if (resumeFrom) url += `&since=${encodeURIComponent(resumeFrom.epoch)}:${resumeFrom.seq}`;
  setConn(attempt ? "reconnecting" : "connecting");
  welcomed = false;
  ws = new WebSocket(url, ["aicraft.v1.msgpack"]);
  ws.binaryType = "arraybuffer";
  ws.onmessage = (ev) => {
    let msg;
    try {
      msg = typeof ev.data === "string" ? JSON.parse(ev.data) : decode(ev.data);
    } catch (err) {
      console.error("undecodable frame", err);
      return;
    }
    if (msg.type === "welcome") { welcomed = true; attempt = 0; state.stats.connects++; }
    handle(msg);
  };
  ws.onclose = (ev) => {
    ws = null;
    clearTimeout(renewTimer);
    pendingToken = null;
    if (!welcomed) checkToken(); // a rejected upgrade looks like any other failure from here
    scheduleReconnect(ev.code);
  };
}

// -- tokens over time (contract §6.1) --------------------------------------------------------------
// A socket closes at its token's `exp` (4401). Before that the page trades its token for a new
// one of the same lifetime at POST /api/token and sends it over the socket as `auth`; the new
// token also replaces the one in the address bar, so a reload keeps working. A deployment with
// its own sign-in would hand out the page link with a short-lived token the same way.
let renewTimer = 0;
let pendingToken = null;

function tokenExp(t) {
  try {
    const part = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(part)).exp;
    return Number.isFinite(exp) ? exp : null;
  } catch { return null; }
}

function scheduleRenewal(retry) {
  clearTimeout(renewTimer);
  const exp = tokenExp(token);
  if (exp === null) return;
  const left = exp * 1000 - Date.now();
  const delay = retry ? Math.min(RENEW_RETRY_MS, Math.max(100, left / 4)) : Math.max(0, left * (1 - RENEW_AT));
  renewTimer = setTimeout(renewToken, delay);
}

async function renewToken() {
  try {
    const r = await fetch("/api/token", { method: "POST", headers: { Authorization: `Bearer ${token}` } });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const body = await r.json();
    if (!ws || ws.readyState !== WebSocket.OPEN) { adoptToken(body.token); return; }
    pendingToken = body.token;
    sendMsgpack({ type: "auth", token: body.token, ref: "auth" });
  } catch (err) {
    console.warn("token renewal failed:", err.message);
    scheduleRenewal(true);
  }
}

function adoptToken(t) {
  token = t;
  const url = new URL(location.href);
  url.searchParams.set("token", t);
  history.replaceState(history.state, "", url);
}

function scheduleReconnect(code) {
  if (state.conn === "unauthorized") return;
  attempt++;
  // Jittered exponential backoff, capped: a restarting gateway is not stampeded.
  const delay = Math.min(15000, 500 * 2 ** Math.min(attempt - 1, 5)) * (0.5 + Math.random() / 2);
  setConn("reconnecting", `reconnecting in ${(delay / 1000).toFixed(1)} s${code ? ` (code ${code})` : ""}`);
  reconnectTimer = setTimeout(connect, delay);
}

async function checkToken() {
  try {
    const r = await fetch("/api/npcs?limit=1", { headers: { Authorization: `Bearer ${token}` } });
    if (r.status === 401 || r.status === 403) {
      clearTimeout(reconnectTimer);
      setConn("unauthorized", "token rejected");
      showBanner(token ? "The token was rejected or has expired: open the page with a fresh ?token=…" : "Open this page with ?token=<viewer token>");
    }
  } catch { /* the gateway is down: keep retrying */ }
}

function setConn(s, text) {
  state.conn = s;
  const el = $("conn");
  el.dataset.state = s;
  $("conn-text").textContent = text || s;
  if (s === "connected") hideBanner();
}

// Frames must match the negotiated encoding, so what the page sends is msgpack too.
function sendMsgpack(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(encodeSmall(obj));
}

// -- a tiny msgpack encoder for the messages the page sends (subscribe, auth): fixmap, fixarray,
// str up to 65,535 bytes, float64, nil -------------------------------------------------------------
function encodeSmall(value) {
  const out = [];
  const te = new TextEncoder();
  const f64 = new DataView(new ArrayBuffer(8));
  (function enc(v) {
    if (v === null || v === undefined) out.push(0xc0);
    else if (typeof v === "string") {
      const b = te.encode(v);
      if (b.length < 32) out.push(0xa0 | b.length);
      else if (b.length < 256) out.push(0xd9, b.length);
      else if (b.length < 65536) out.push(0xda, b.length >> 8, b.length & 0xff);
      else throw new RangeError("string too long for this encoder");
      for (const x of b) out.push(x);
    } else if (typeof v === "number") {
      f64.setFloat64(0, v);
      out.push(0xcb);
      for (let i = 0; i < 8; i++) out.push(f64.getUint8(i));
    } else if (Array.isArray(v)) {
      if (v.length > 15) throw new RangeError("array too long for this encoder");
      out.push(0x90 | v.length);
      v.forEach(enc);
    } else {
      const keys = Object.keys(v).filter((k) => v[k] !== undefined);
      if (keys.length > 15) throw new RangeError("map too large for this encoder");
      out.push(0x80 | keys.length);
      for (const k of keys) { enc(k); enc(v[k]); }
    }
  })(value);
  return new Uint8Array(out);
}

// -- subscription -------------------------------------------------------------------------------
function viewBounds() {
  const w = canvas.clientWidth / state.view.scale, h = canvas.clientHeight / state.view.scale;
  return { x0: state.view.cx - w / 2, z0: state.view.cz - h / 2, x1: state.view.cx + w / 2, z1: state.view.cz + h / 2 };
}

function desiredSubscription() {
  const b = viewBounds();
  const w = b.x1 - b.x0, h = b.z1 - b.z0;
  if (Math.max(w, h) > FAR_BLOCKS) return { dim: state.dim, area: null };
  const m = Math.max(w, h) * 0.5; // margin: panning a little needs no new snapshot
  return { dim: state.dim, area: [Math.floor(b.x0 - m), Math.floor(b.z0 - m), Math.ceil(b.x1 + m), Math.ceil(b.z1 + m)] };
}

function covers(sub, want) {
  if (!sub || sub.dim !== want.dim) return false;
  if (!sub.area) return true; // the whole dimension covers any view of it
  if (!want.area) return false;
  const b = viewBounds();
  const [x0, z0, x1, z1] = sub.area;
  return b.x0 >= x0 && b.z0 >= z0 && b.x1 <= x1 && b.z1 <= z1;
}

function sendSubscription(sub, force = false) {
  if (!force && state.subscription && JSON.stringify(state.subscription) === JSON.stringify(sub)) return;
  state.subscription = sub;
  const msg = { type: "subscribe", dim: sub.dim };
  if (sub.area) msg.area = sub.area;
  sendMsgpack(msg);
  state.stats.subscribes++;
  updateListLabel();
}

// Checked a few times a second: re-subscribe at once when the view leaves the subscribed
// rectangle; otherwise only once the view has been still for a moment (debounce) and the
// subscription is much larger or smaller than what is shown.
function checkSubscription() {
  if (!state.viewFitted || state.conn !== "connected") return;
  const want = desiredSubscription();
  const cur = state.subscription;
  if (!covers(cur, want)) return sendSubscription(want);
  if (performance.now() - state.lastViewChange < 300) return;
  if (cur.area && !want.area) return sendSubscription(want);
  if (cur.area && want.area) {
    const area = (a) => (a[2] - a[0]) * (a[3] - a[1]);
    if (area(cur.area) > 6 * area(want.area)) sendSubscription(want);
  } else if (!cur.area && want.area) {
    sendSubscription(want); // zoomed back in from "everything"
  }
}

function viewChanged() {
  state.lastViewChange = performance.now();
}

// -- filters and the side list ------------------------------------------------------------------
function matches(npc) {
  if (state.roleOff.has(npc.role)) return false;
  if (state.onlineOnly && !npc.online) return false;
  if (state.statusFilter && npc.status !== state.statusFilter) return false;
  if (state.search) {
    const q = state.search;
    if (!npc.name.toLowerCase().includes(q) && !npc.id.toLowerCase().includes(q)) return false;
  }
  return true;
}

function refilter() {
  for (const npc of state.all) npc.match = matches(npc);
  for (const npc of directory.far.values()) npc.match = matches(npc);
  state.listDirty = true;
}

function inDim(npc) {
  return !npc.hasPos || npc.dim === state.dim;
}

const statusesSeen = new Set();
const collator = new Intl.Collator(undefined, { numeric: true }); // "Ada 2" before "Ada 10"

function rebuildList() {
  const rows = [];
  const roles = {};
  const statuses = new Set();
  // Searching lists the whole registry (every dimension); otherwise the list is what the map
  // shows. ONLINE always counts every online NPC the gateway knows.
  const searching = state.search !== "";
  let online = 0;
  for (const npc of state.all) {
    if (npc.online) online++;
    if (!searching && !inDim(npc)) continue;
    statuses.add(npc.status);
    roles[npc.role] = (roles[npc.role] || 0) + 1;
    if (npc.match) rows.push(npc);
  }
  if (directory.loaded) {
    for (const m of directory.byId.values()) {
      if (state.npcs.has(m.id)) continue;
      if (m.online) online++;
      if (!searching) continue;
      const npc = farNpc(m);
      if (npc.match) rows.push(npc);
    }
  }
  rows.sort((a, b) => collator.compare(a.name, b.name) || collator.compare(a.id, b.id));
  state.filtered = rows;
  state.listDirty = false;
  state.rowsDirty = true;
  $("list-count").textContent = rows.length;
  $("c-online").textContent = online;
  renderChips(roles);
  for (const st of statuses) statusesSeen.add(st);
  renderStatusOptions(statuses);
  spacer.style.height = `${rows.length * ROW_H}px`;
}

function updateListLabel() {
  const sub = state.subscription;
  $("list-label").textContent = state.search
    ? "NPCs matching, in the whole registry"
    : sub && sub.area ? "NPCs in the area shown" : `NPCs in ${state.dim.replace("the_", "")}`;
}

const rowPool = [];
function renderRows() {
  state.rowsDirty = false;
  const top = listEl.scrollTop;
  const first = Math.max(0, Math.floor(top / ROW_H) - 2);
  const count = Math.ceil(listEl.clientHeight / ROW_H) + 4;
  const rows = state.filtered;
  const last = Math.min(rows.length, first + count);
  let used = 0;
  for (let i = first; i < last; i++, used++) {
    let el = rowPool[used];
    if (!el) {
      el = document.createElement("div");
      el.className = "row";
      el.setAttribute("role", "option");
      el.innerHTML = '<span class="swatch"></span><span class="who"><span class="name"></span><span class="id"></span></span><span class="badge"></span>';
      el.addEventListener("click", () => select(el.dataset.id, true));
      listEl.appendChild(el);
      rowPool.push(el);
    }
    const npc = rows[i];
    el.hidden = false;
    el.dataset.id = npc.id;
    el.dataset.role = npc.role;
    el.style.transform = `translateY(${i * ROW_H}px)`;
    el.style.setProperty("--c", ROLE_COLORS[npc.role] || ROLE_COLORS.unknown);
    el.classList.toggle("sel", npc.id === state.selected);
    el.classList.toggle("off", !npc.online);
    el.setAttribute("aria-selected", npc.id === state.selected);
    el.children[1].children[0].textContent = npc.name;
    el.children[1].children[1].textContent = `${npc.id} · ${npc.role}`;
    const status = npc.online ? npc.status : "offline";
    const badge = el.children[2];
    badge.textContent = status;
    badge.className = `badge s-${status}`;
  }
  for (let i = used; i < rowPool.length; i++) rowPool[i].hidden = true;
}

let chipsKey = "";
function renderChips(counts) {
  const roles = Object.keys(ROLE_COLORS).filter((r) => r !== "unknown" || counts.unknown);
  for (const r of Object.keys(counts)) if (!roles.includes(r)) roles.push(r);
  const key = roles.map((r) => `${r}:${counts[r] || 0}:${state.roleOff.has(r)}`).join("|");
  if (key === chipsKey) return;
  chipsKey = key;
  const box = $("roles");
  box.replaceChildren(
    ...roles.map((r) => {
      const b = document.createElement("button");
      b.className = "chip";
      b.dataset.role = r;
      b.setAttribute("aria-pressed", String(!state.roleOff.has(r)));
      b.title = "Click to show/hide; double-click to show only this role";
      b.style.setProperty("--c", ROLE_COLORS[r] || ROLE_COLORS.unknown);
      b.innerHTML = `<span class="swatch"></span><span class="label"></span><span class="n">${counts[r] || 0}</span>`;
      b.querySelector(".label").textContent = r;
      return b;
    }),
  );
}

let statusKey = "";
function renderStatusOptions(statuses) {
  if (state.statusFilter) statuses.add(state.statusFilter);
  const list = [...statuses].filter(Boolean).sort();
  const key = list.join("|");
  if (key === statusKey) return;
  statusKey = key;
  const sel = $("status");
  sel.replaceChildren(new Option("all statuses", ""), ...list.map((s) => new Option(s, s)));
  sel.value = state.statusFilter;
}

function renderLegend() {
  const items = Object.entries(ROLE_COLORS)
    .map(([r, c]) => `<div class="item"><span class="swatch" style="--c:${c}"></span>${r}</div>`)
    .join("");
  $("legend").innerHTML =
    `<div class="title">Roles</div>${items}` +
    `<div class="item"><span class="swatch hollow" style="--c:${OFFLINE_COLOR}"></span>offline</div>` +
    `<div class="item"><span class="swatch ring"></span>selected</div>`;
}

// -- events -------------------------------------------------------------------------------------
const pendingEvents = [];
function pushEvent(msg) {
  pendingEvents.push(msg);
  if (pendingEvents.length > EVENTS_MAX) pendingEvents.splice(0, pendingEvents.length - EVENTS_MAX);
}
function flushEvents() {
  if (!pendingEvents.length) return;
  const box = $("events");
  const frag = document.createDocumentFragment();
  for (const msg of pendingEvents.splice(0).reverse()) {
    const li = document.createElement("li");
    const name = String(msg.name);
    li.className = msg.gap ? "fail" : name.endsWith(":completed") ? "ok" : name.endsWith(":failed") ? "fail" : "";
    if (Number.isInteger(msg.seq)) li.dataset.seq = String(msg.seq);
    const npc = state.npcs.get(msg.npc);
    const who = document.createElement("b");
    who.textContent = npc ? npc.name : msg.npc;
    const ev = document.createElement("b");
    ev.className = "ev";
    ev.textContent = name;
    const data = msg.data && typeof msg.data === "object" ? msg.data : {};
    const detail = data.text != null ? `“${data.text}”` : Object.entries(data).slice(0, 4).map(([k, v]) => `${k}=${typeof v === "number" ? +v.toFixed(1) : v}`).join(" ");
    li.append(new Date().toLocaleTimeString(), " ", who, " ", ev, " ", detail);
    li.title = li.textContent;
    li.addEventListener("click", () => select(msg.npc, true));
    frag.appendChild(li);
  }
  box.prepend(frag);
  while (box.childElementCount > EVENTS_MAX) box.lastElementChild.remove();
}

// -- selection, hover, card ---------------------------------------------------------------------
function select(id, follow) {
  state.selected = id;
  state.following = !!(id && follow);
  state.rowsDirty = true;
  const npc = id && lookup(id);
  if (npc && npc.hasPos && npc.dim && npc.dim !== state.dim) switchDim(npc.dim, false);
  if (npc && npc.hasPos && !state.npcs.has(id)) {
    // Found in the registry, outside the area shown: go there; the new area's snapshot has it.
    state.view.cx = npc.x1; state.view.cz = npc.z1; viewChanged();
  }
  if (npc && state.following && state.view.scale < 2) { state.view.scale = 4; viewChanged(); }
  renderCard();
}

function renderCard() {
  const npc = state.selected && lookup(state.selected);
  if (!npc) { card.hidden = true; card.dataset.id = ""; return; }
  card.hidden = false;
  if (card.dataset.id !== npc.id) {
    // Built once per selection, then only its text changes: a click on its buttons is
    // never lost to a rebuild.
    card.dataset.id = npc.id;
    card.innerHTML = `<h3><span class="swatch"></span><span data-f="name"></span></h3>
      <dl><dt>id</dt><dd data-f="id"></dd><dt>role</dt><dd data-f="role"></dd>
      <dt>status</dt><dd data-f="status"></dd><dt>position</dt><dd data-f="pos"></dd>
      <dt>dimension</dt><dd data-f="dim"></dd><dt>facing</dt><dd data-f="facing"></dd>
      <dt>last event</dt><dd data-f="event"></dd></dl>
      <div class="actions"><button data-act="follow"></button><button data-act="close">Close</button></div>`;
  }
  const set = (f, text) => { const el = card.querySelector(`[data-f="${f}"]`); if (el.textContent !== text) el.textContent = text; };
  card.querySelector(".swatch").style.background = ROLE_COLORS[npc.role] || ROLE_COLORS.unknown;
  set("name", npc.name);
  set("id", npc.id);
  set("role", npc.role);
  set("status", npc.online ? npc.status : `${npc.status} (offline)`);
  set("pos", npc.hasPos ? `${npc.x1.toFixed(1)}, ${Number(npc.y).toFixed(0)}, ${npc.z1.toFixed(1)}` : "unknown");
  set("dim", npc.dim || "–");
  set("facing", facing(npc.yaw));
  set("event", npc.lastEvent ? npc.lastEvent.name : "–");
  card.querySelector('[data-act="follow"]').textContent = state.following ? "Unfollow" : "Follow";
}

function facing(yaw) {
  // Minecraft yaw: 0 faces south (+z), 90 west (−x).
  const dirs = ["south", "west", "north", "east"];
  return dirs[Math.round((((yaw % 360) + 360) % 360) / 90) % 4];
}

function pick(px, py, radius = 12) {
  let best = null, bestD = radius * radius;
  for (const npc of state.all) {
    if (!npc.vis) continue;
    const dx = npc.sx - px, dy = npc.sy - py;
    const d = dx * dx + dy * dy;
    if (d < bestD) { bestD = d; best = npc; }
  }
  return best;
}

// -- view ---------------------------------------------------------------------------------------
function fitView(initial = false) {
  let x0 = Infinity, z0 = Infinity, x1 = -Infinity, z1 = -Infinity, n = 0;
  const counts = {};
  for (const npc of state.all) {
    if (!npc.hasPos) continue;
    counts[npc.dim] = (counts[npc.dim] || 0) + 1;
    if (npc.dim !== state.dim || !npc.match) continue;
    x0 = Math.min(x0, npc.x1); x1 = Math.max(x1, npc.x1);
    z0 = Math.min(z0, npc.z1); z1 = Math.max(z1, npc.z1);
    n++;
  }
  if (!n && initial) {
    // Nothing here: open the dimension where the NPCs are.
    const best = Object.entries(counts).sort((a, b) => b[1] - a[1])[0];
    if (best && best[0] !== state.dim) { switchDim(best[0], false); return fitView(true); }
  }
  if (!n) { if (initial) state.viewFitted = true; return; }
  // Room for the labels right of the markers and for the overlays at the edges.
  const padL = 50, padR = 120, padY = 50;
  const w = Math.max(x1 - x0, 32), h = Math.max(z1 - z0, 32);
  const scale = clampScale(Math.min((canvas.clientWidth - padL - padR) / w, (canvas.clientHeight - padY * 2) / h));
  state.view = { cx: (x0 + x1) / 2 + (padR - padL) / 2 / scale, cz: (z0 + z1) / 2, scale };
  state.viewFitted = true;
  state.following = false;
  viewChanged();
}

function clampScale(s) {
  return Math.min(64, Math.max(0.005, s));
}

function zoomAt(factor, px, py) {
  const v = state.view;
  const wx = v.cx + (px - canvas.clientWidth / 2) / v.scale;
  const wz = v.cz + (py - canvas.clientHeight / 2) / v.scale;
  v.scale = clampScale(v.scale * factor);
  if (!state.following) {
    v.cx = wx - (px - canvas.clientWidth / 2) / v.scale;
    v.cz = wz - (py - canvas.clientHeight / 2) / v.scale;
  }
  viewChanged();
}

function switchDim(dim, fit = true) {
  if (dim === state.dim) return;
  state.dim = dim;
  // Whatever was under the pointer is in the other dimension now.
  state.hover = null;
  tooltip.hidden = true;
  state.dims.add(dim);
  renderDims();
  state.listDirty = true;
  if (fit) {
    state.viewFitted = false; // the next snapshot of the new dimension fits the view
    sendSubscription({ dim, area: null });
  }
  if (state.selected) {
    const npc = state.npcs.get(state.selected);
    if (npc && npc.dim !== dim) select(null);
  }
}

function renderDims() {
  const sel = $("dim");
  const key = [...state.dims].join("|");
  if (sel.dataset.key !== key) {
    sel.dataset.key = key;
    sel.replaceChildren(...[...state.dims].map((d) => new Option(d.replace(/_/g, " "), d)));
  }
  sel.value = state.dim;
}

// -- drawing ------------------------------------------------------------------------------------
let dpr = 1;
function resize() {
  dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    viewChanged();
  }
}

function niceStep(minBlocks) {
  const steps = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];
  return steps.find((s) => s >= minBlocks) || 131072;
}

// -- terrain: the shared world model's heightmap under the NPCs (§6.6) ---------------------------
// The top solid block of every column of the area on screen (plus a margin), fetched from
// GET /api/world/{dim}/heightmap, drawn as one image of one pixel per column: shaded by height
// (darker low, lighter high) and lit from the north-west so slopes read as relief. Re-fetched
// when the view leaves the fetched area and every TERRAIN_MS while it stays, so new sections
// bots report appear by themselves. Views wider than 512 blocks (the endpoint's limit) show none.
const TERRAIN_MAX = 512;
const TERRAIN_MS = 3000;
const terrain = { c: document.createElement("canvas"), area: null, dim: null, at: 0, busy: false, known: 0, fetches: 0 };

function terrainWanted() {
  const b = viewBounds();
  const m = 32;
  const x0 = Math.floor(b.x0 - m), z0 = Math.floor(b.z0 - m);
  const x1 = Math.ceil(b.x1 + m), z1 = Math.ceil(b.z1 + m);
  if (x1 - x0 + 1 > TERRAIN_MAX || z1 - z0 + 1 > TERRAIN_MAX) return null;
  return [x0, z0, x1, z1];
}

async function refreshTerrain() {
  if (terrain.busy || !token || state.conn !== "connected") return;
  const want = terrainWanted();
  if (!want) { terrain.area = null; return; }
  const a = terrain.area;
  const inside = a && terrain.dim === state.dim && want[0] >= a[0] && want[1] >= a[1] && want[2] <= a[2] && want[3] <= a[3];
  if (inside && performance.now() - terrain.at < TERRAIN_MS) return;
  // Fetch a little more than the screen so panning does not refetch at once.
  const pad = 64;
  const cx = (want[0] + want[2]) / 2, cz = (want[1] + want[3]) / 2;
  const half = Math.min(TERRAIN_MAX, Math.max(want[2] - want[0], want[3] - want[1]) + 1 + 2 * pad) / 2;
  const area = [Math.floor(cx - half), Math.floor(cz - half), Math.floor(cx - half) + 2 * half - 1, Math.floor(cz - half) + 2 * half - 1];
  const dim = state.dim;
  terrain.busy = true;
  try {
    const r = await fetch(`/api/world/${encodeURIComponent(dim)}/heightmap?area=${area.join(",")}`, { headers: { Authorization: `Bearer ${token}` } });
    if (r.ok) paintTerrain(await r.json(), dim);
  } catch (_) {
    /* the next slow tick tries again */
  } finally {
    terrain.busy = false;
    terrain.at = performance.now();
  }
}

function paintTerrain(hm, dim) {
  const [w, h] = hm.size, heights = hm.heights;
  let lo = Infinity, hi = -Infinity, known = 0;
  for (const y of heights) if (y !== null) { known++; if (y < lo) lo = y; if (y > hi) hi = y; }
  terrain.c.width = w; terrain.c.height = h;
  const g = terrain.c.getContext("2d");
  const img = g.createImageData(w, h);
  const px = img.data;
  const span = Math.max(8, hi - lo);
  for (let z = 0; z < h; z++) {
    for (let x = 0; x < w; x++) {
      const i = z * w + x, y = heights[i];
      if (y === null) continue; // unknown: the background shows through
      const t = (y - lo) / span; // 0 low .. 1 high
      const n = x > 0 && z > 0 ? heights[i - w - 1] : null; // the north-west neighbour
      const light = n === null ? 0 : Math.max(-1, Math.min(1, (y - n) / 2)) * 22;
      const k = 4 * i;
      px[k] = 40 + 90 * t + light;
      px[k + 1] = 70 + 110 * t + light;
      px[k + 2] = 45 + 60 * t + light;
      px[k + 3] = 255;
    }
  }
  g.putImageData(img, 0, 0);
  terrain.area = [hm.origin[0], hm.origin[1], hm.origin[0] + w - 1, hm.origin[1] + h - 1];
  terrain.dim = dim;
  terrain.known = known;
  terrain.fetches++;
}

function drawTerrain() {
  const a = terrain.area;
  if (!a || terrain.dim !== state.dim || !terrain.known) return;
  const v = state.view, W = canvas.clientWidth, H = canvas.clientHeight;
  ctx.imageSmoothingEnabled = false; // one block, one crisp square
  ctx.drawImage(terrain.c, (a[0] - v.cx) * v.scale + W / 2, (a[1] - v.cz) * v.scale + H / 2, (a[2] - a[0] + 1) * v.scale, (a[3] - a[1] + 1) * v.scale);
}

function drawGrid(W, H) {
  const v = state.view;
  const step = niceStep(48 / v.scale);
  const major = step * 4;
  const b = viewBounds();
  const toX = (x) => (x - v.cx) * v.scale + W / 2;
  const toY = (z) => (z - v.cz) * v.scale + H / 2;
  ctx.lineWidth = 1;
  for (const [s, color] of [[step, "#ffffff0a"], [major, "#ffffff16"]]) {
    ctx.beginPath();
    for (let x = Math.ceil(b.x0 / s) * s; x <= b.x1; x += s) { const p = Math.round(toX(x)) + 0.5; ctx.moveTo(p, 0); ctx.lineTo(p, H); }
    for (let z = Math.ceil(b.z0 / s) * s; z <= b.z1; z += s) { const p = Math.round(toY(z)) + 0.5; ctx.moveTo(0, p); ctx.lineTo(W, p); }
    ctx.strokeStyle = color;
    ctx.stroke();
  }
  // The axes through the origin.
  ctx.beginPath();
  const ox = Math.round(toX(0)) + 0.5, oz = Math.round(toY(0)) + 0.5;
  if (ox > 0 && ox < W) { ctx.moveTo(ox, 0); ctx.lineTo(ox, H); }
  if (oz > 0 && oz < H) { ctx.moveTo(0, oz); ctx.lineTo(W, oz); }
  ctx.strokeStyle = "#5eead433";
  ctx.stroke();
  // Coordinates of the major lines along the top and left edges.
  ctx.fillStyle = "#8593a6";
  ctx.font = "11px system-ui, sans-serif";
  ctx.textBaseline = "top";
  for (let x = Math.ceil(b.x0 / major) * major; x <= b.x1; x += major) ctx.fillText(`x ${x}`, toX(x) + 4, 4);
  ctx.textBaseline = "middle";
  for (let z = Math.ceil(b.z0 / major) * major; z <= b.z1; z += major) ctx.fillText(`z ${z}`, 4, toY(z) - 8);
  // Compass.
  ctx.fillStyle = "#5eead4aa";
  ctx.font = "bold 12px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.fillText("N", W / 2, 12);
  ctx.textAlign = "left";
}

// -- markers: stamped into a pixel buffer --------------------------------------------------------
// Thousands of arcs (or drawImage calls) per frame are slow in a software-rendered canvas; writing
// each marker's few dozen pixels into one buffer and blitting the part that changed is not. The
// stamp is rendered once per colour and size with the canvas itself, so it looks the same as a
// vector marker. The buffer is an offscreen canvas: the page still shows one canvas.
const markers = { c: document.createElement("canvas"), g: null, img: null, buf: null, w: 0, h: 0, box: null };

function markerBuffer() {
  const w = canvas.width, h = canvas.height;
  if (markers.w !== w || markers.h !== h) {
    markers.c.width = w; markers.c.height = h;
    markers.g = markers.c.getContext("2d");
    markers.img = new ImageData(w, h);
    markers.buf = new Uint32Array(markers.img.data.buffer);
    markers.w = w; markers.h = h; markers.box = null;
  } else if (markers.box) {
    const [, y0, , y1] = markers.box; // clear only the rows the last frame wrote
    markers.buf.fill(0, y0 * w, (y1 + 1) * w);
  }
  return markers;
}

const stamps = new Map();
function markerStamp(color, r) {
  const q = Math.round(r * 2) / 2; // half-pixel steps: a handful of stamps per colour
  const key = `${color}|${q}|${dpr}`;
  let st = stamps.get(key);
  if (st) return st;
  const px = Math.ceil((q + 2) * 2 * dpr) | 1;
  const c = document.createElement("canvas");
  c.width = c.height = px;
  const g = c.getContext("2d", { willReadFrequently: true });
  g.scale(dpr, dpr);
  const mid = px / dpr / 2;
  g.beginPath();
  g.arc(mid, mid, q, 0, Math.PI * 2);
  if (color === OFFLINE_COLOR) {
    g.strokeStyle = color; g.lineWidth = 1.5; g.stroke();
  } else {
    g.strokeStyle = "#05080c"; g.lineWidth = 2; g.stroke(); // a dark rim: contrast on any background
    g.fillStyle = color; g.fill();
  }
  const pixels = new Uint32Array(g.getImageData(0, 0, px, px).data.buffer);
  const out = [];
  const half = px >> 1;
  for (let y = 0; y < px; y++) {
    for (let x = 0; x < px; x++) {
      const v = pixels[y * px + x];
      if (v >>> 24 > 24) out.push(x - half, y - half, v); // (dx, dy, RGBA as one word)
    }
  }
  st = { cells: new Int32Array(out), half, offs: null, colors: null, width: 0 };
  stamps.set(key, st);
  return st;
}

function trailWords(color) {
  // One RGBA word per trail age, oldest faintest (little-endian: ABGR in the Uint32).
  let words = trailWordCache.get(color);
  if (words) return words;
  const v = parseInt(color.slice(1), 16);
  const rgb = ((v & 0xff) << 16) | (v & 0xff00) | ((v >> 16) & 0xff);
  words = new Uint32Array(TRAIL);
  for (let i = 0; i < TRAIL; i++) words[i] = ((Math.round(40 + (150 * i) / TRAIL) << 24) | rgb) >>> 0;
  trailWordCache.set(color, words);
  return words;
}
const trailWordCache = new Map();

function drawMarkers(r, dots) {
  const m = markerBuffer();
  const { buf, w, h } = m;
  let x0 = w, y0 = h, x1 = -1, y1 = -1;
  if (dots) {
    // Trails as fading dots (one per stored point) when there are too many for lines.
    const { cx, cz, scale } = state.view;
    const k = scale * dpr, ox = (canvas.clientWidth / 2) * dpr, oy = (canvas.clientHeight / 2) * dpr;
    const size = dpr >= 2 ? 2 : 1;
    for (const [color, list] of buckets) {
      const words = trailWords(color);
      for (const npc of list) {
        const n = npc.trailLen - 1; // the newest point is under the marker
        const start = (npc.trailHead - npc.trailLen + TRAIL) % TRAIL;
        for (let i = 0; i < n; i++) {
          const j = ((start + i) % TRAIL) * 2;
          const x = Math.round((npc.trail[j] - cx) * k + ox), y = Math.round((npc.trail[j + 1] - cz) * k + oy);
          if (x < 0 || y < 0 || x + size > w || y + size > h) continue;
          const word = words[TRAIL - n + i];
          buf[y * w + x] = word;
          if (size === 2) { buf[y * w + x + 1] = word; buf[(y + 1) * w + x] = word; buf[(y + 1) * w + x + 1] = word; }
          if (x < x0) x0 = x;
          if (x > x1) x1 = x;
          if (y < y0) y0 = y;
          if (y > y1) y1 = y;
        }
      }
    }
  }
  for (const [color, list] of buckets) {
    if (!list.length) continue;
    const st = markerStamp(color, r);
    const { cells, half } = st;
    if (st.width !== w) {
      // Pixel offsets for this buffer width: the inner loop is one add, one read, one write.
      const k = cells.length / 3;
      st.offs = new Int32Array(k);
      st.colors = new Uint32Array(k);
      for (let j = 0; j < k; j++) {
        st.offs[j] = cells[j * 3 + 1] * w + cells[j * 3];
        st.colors[j] = cells[j * 3 + 2];
      }
      st.width = w;
    }
    const { offs, colors } = st;
    const n = offs.length;
    for (let i = 0; i < list.length; i++) {
      const cx = Math.round(list[i].sx * dpr), cy = Math.round(list[i].sy * dpr);
      if (cx - half < 0 || cy - half < 0 || cx + half >= w || cy + half >= h) {
        for (let j = 0; j < cells.length; j += 3) { // at the edge: clip per pixel
          const x = cx + cells[j], y = cy + cells[j + 1];
          if (x >= 0 && y >= 0 && x < w && y < h) buf[y * w + x] = cells[j + 2];
        }
      } else {
        const base = cy * w + cx;
        for (let j = 0; j < n; j++) buf[base + offs[j]] = colors[j];
      }
      if (cx < x0) x0 = cx;
      if (cx > x1) x1 = cx;
      if (cy < y0) y0 = cy;
      if (cy > y1) y1 = cy;
    }
  }
  if (x1 < 0) { m.box = null; return; }
  const pad = 24;
  x0 = Math.max(0, x0 - pad); y0 = Math.max(0, y0 - pad);
  x1 = Math.min(w - 1, x1 + pad); y1 = Math.min(h - 1, y1 + pad);
  m.box = [x0, y0, x1, y1];
  const bw = x1 - x0 + 1, bh = y1 - y0 + 1;
  m.g.putImageData(m.img, 0, 0, x0, y0, bw, bh);
  ctx.drawImage(m.c, x0, y0, bw, bh, x0 / dpr, y0 / dpr, bw / dpr, bh / dpr);
}

// Reused per-frame buckets: visible NPCs grouped by fill colour, so each colour is one path.
const buckets = new Map();
function bucket(color) {
  let b = buckets.get(color);
  if (!b) { b = []; buckets.set(color, b); }
  return b;
}

let lastFrame = performance.now();
let fpsAcc = 0, fpsN = 0, fpsT = performance.now();

function frame(now) {
  resize();
  const W = canvas.clientWidth, H = canvas.clientHeight;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = DIM_BG[state.dim] || DIM_BG.overworld;
  ctx.fillRect(0, 0, W, H);
  drawTerrain();
  drawGrid(W, H);

  const v = state.view;
  const sel = state.selected ? state.npcs.get(state.selected) : null;
  if (sel && state.following && sel.hasPos) {
    const [x, z] = interp(sel, now);
    if (x !== v.cx || z !== v.cz) { v.cx = x; v.cz = z; viewChanged(); }
  }
  for (const b of buckets.values()) b.length = 0;
  const halfW = W / 2, halfH = H / 2, scale = v.scale, cx = v.cx, cz = v.cz;
  const all = state.all;
  let drawn = 0;
  for (let i = 0; i < all.length; i++) {
    const npc = all[i];
    if (!npc.hasPos || !npc.match || npc.dim !== state.dim) { npc.vis = false; continue; }
    const t = Math.min(1, (now - npc.t0) / state.tickMs);
    const x = npc.x0 + (npc.x1 - npc.x0) * t, z = npc.z0 + (npc.z1 - npc.z0) * t;
    const sx = (x - cx) * scale + halfW, sy = (z - cz) * scale + halfH;
    npc.sx = sx; npc.sy = sy;
    if (sx < -20 || sy < -20 || sx > W + 20 || sy > H + 20) { npc.vis = false; continue; }
    npc.vis = true;
    drawn++;
    bucket(npc.online ? ROLE_COLORS[npc.role] || ROLE_COLORS.unknown : OFFLINE_COLOR).push(npc);
  }

  // Trails: with few markers on screen, lines (one stroke per colour and half, the older half
  // fainter); with many, dots in the marker buffer (see drawMarkers).
  const lines = drawn <= TRAIL_LINES_MAX;
  ctx.lineWidth = Math.max(1, Math.min(3, scale * 0.35));
  ctx.lineJoin = "round";
  for (const [color, list] of buckets) {
    if (!lines) break;
    for (let pass = 0; pass < 2; pass++) {
      ctx.beginPath();
      for (const npc of list) traceTrail(npc, pass, cx, cz, scale, halfW, halfH);
      ctx.strokeStyle = color;
      ctx.globalAlpha = pass === 0 ? 0.25 : 0.6;
      ctx.stroke();
    }
  }
  if (!lines && sel && sel.vis) {
    for (let pass = 0; pass < 2; pass++) {
      ctx.beginPath();
      traceTrail(sel, pass, cx, cz, scale, halfW, halfH);
      ctx.strokeStyle = SELECT_COLOR;
      ctx.globalAlpha = pass === 0 ? 0.3 : 0.7;
      ctx.stroke();
    }
  }
  ctx.globalAlpha = 1;

  // Markers, all at once (see drawMarkers).
  const r = Math.max(2, Math.min(8, 2.5 + scale * 0.5));
  const heading = scale >= 3;
  drawMarkers(r, !lines);
  if (heading) {
    // Facing ticks (Minecraft yaw: 0 = +z, 90 = −x).
    ctx.beginPath();
    for (const list of buckets.values()) {
      for (const npc of list) {
        const a = (npc.yaw * Math.PI) / 180;
        const dx = -Math.sin(a), dy = Math.cos(a);
        ctx.moveTo(npc.sx + dx * (r + 1), npc.sy + dy * (r + 1));
        ctx.lineTo(npc.sx + dx * (r + 5), npc.sy + dy * (r + 5));
      }
    }
    ctx.strokeStyle = "#e2e8f0cc";
    ctx.lineWidth = 1.5;
    ctx.stroke();
  }

  // Hover and selection rings.
  const hov = state.hover ? state.npcs.get(state.hover) : null;
  for (const [npc, color, w] of [[hov, "#ffffffaa", 1.5], [sel, SELECT_COLOR, 2.5]]) {
    if (!npc || !npc.vis) continue;
    ctx.beginPath();
    ctx.arc(npc.sx, npc.sy, r + 4, 0, Math.PI * 2);
    ctx.strokeStyle = color;
    ctx.lineWidth = w;
    ctx.stroke();
  }

  // Labels: everyone's when few are shown, else only the selected and hovered.
  ctx.font = "600 12px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  ctx.lineWidth = 3;
  ctx.strokeStyle = "#0b0f14";
  ctx.fillStyle = "#e2e8f0";
  // Labels: the selected and hovered first, then everyone's when few are shown; a label that
  // would overlap one already placed is left out, so a crowd stays readable.
  placeLabels.reset();
  for (const npc of [sel, hov]) if (npc && npc.vis) placeLabels.tryPlace(npc, r);
  if (drawn <= LABEL_MAX_VISIBLE && scale >= 1) {
    for (const list of buckets.values()) for (const npc of list) if (npc !== sel && npc !== hov) placeLabels.tryPlace(npc, r);
  }
  if (hov && !hov.vis) { state.hover = null; tooltip.hidden = true; }

  // Frame-rate bookkeeping.
  const dt = now - lastFrame;
  lastFrame = now;
  fpsAcc += dt; fpsN++;
  if (now - fpsT >= 500) {
    state.stats.fps = fpsN / (fpsAcc / 1000);
    fpsAcc = 0; fpsN = 0; fpsT = now;
  }
  state.stats.drawn = drawn;
  state.stats.rafs++;
  requestAnimationFrame(frame);
}

// Greedy label placement on a coarse grid of screen cells: a candidate is checked only against
// labels in the cells it touches. `placed` is kept for the next frame's reader (tests).
const placeLabels = {
  placed: [],
  grid: new Map(),
  widths: new Map(),
  reset() { this.placed = []; this.grid.clear(); },
  width(name) {
    let w = this.widths.get(name);
    if (w === undefined) {
      w = ctx.measureText(name).width;
      if (this.widths.size > 20000) this.widths.clear();
      this.widths.set(name, w);
    }
    return w;
  },
  tryPlace(npc, r) {
    const x = npc.sx + r + 6;
    const box = { id: npc.id, x0: x - 2, y0: npc.sy - 8, x1: x + this.width(npc.name) + 2, y1: npc.sy + 8 };
    const cx0 = Math.floor(box.x0 / LABEL_CELL), cx1 = Math.floor(box.x1 / LABEL_CELL);
    const cy0 = Math.floor(box.y0 / LABEL_CELL), cy1 = Math.floor(box.y1 / LABEL_CELL);
    for (let gx = cx0; gx <= cx1; gx++) {
      for (let gy = cy0; gy <= cy1; gy++) {
        for (const o of this.grid.get(gx * 100003 + gy) || []) {
          if (box.x0 < o.x1 && o.x0 < box.x1 && box.y0 < o.y1 && o.y0 < box.y1) return false;
        }
      }
    }
    for (let gx = cx0; gx <= cx1; gx++) {
      for (let gy = cy0; gy <= cy1; gy++) {
        const key = gx * 100003 + gy;
        const cell = this.grid.get(key);
        if (cell) cell.push(box); else this.grid.set(key, [box]);
      }
    }
    this.placed.push(box);
    ctx.strokeText(npc.name, x, npc.sy);
    ctx.fillText(npc.name, x, npc.sy);
    return true;
  },
};

function traceTrail(npc, pass, cx, cz, scale, halfW, halfH) {
  // History is the ring's points but the newest (the marker is still gliding towards that
  // one), then the marker itself. Pass 0 draws the older half, pass 1 the rest.
  const n = npc.trailLen;
  if (n < 2) return;
  const start = (npc.trailHead - n + TRAIL) % TRAIL;
  const last = n - 2;
  const mid = last >> 1;
  const from = pass === 0 ? 0 : mid;
  const to = pass === 0 ? mid : last;
  let k = (start + from) % TRAIL;
  ctx.moveTo((npc.trail[k * 2] - cx) * scale + halfW, (npc.trail[k * 2 + 1] - cz) * scale + halfH);
  for (let i = from + 1; i <= to; i++) {
    k = (start + i) % TRAIL;
    ctx.lineTo((npc.trail[k * 2] - cx) * scale + halfW, (npc.trail[k * 2 + 1] - cz) * scale + halfH);
  }
  if (pass === 1) ctx.lineTo(npc.sx, npc.sy);
}

// -- slow UI (a few times a second, never per frame) --------------------------------------------
let upsCount = 0, upsT = performance.now();
function slowTick() {
  if (state.conn === "connected" && performance.now() - directory.at > DIRECTORY_MS) refreshDirectory();
  // An empty gateway says how to get bots on the map.
  const empty = state.conn === "connected" && directory.loaded && directory.byId.size === 0 && state.all.length === 0;
  if ($("empty").hidden === empty) $("empty").hidden = !empty;
  if (state.listDirty) rebuildList();
  if (state.rowsDirty) renderRows();
  flushEvents();
  const now = performance.now();
  if (now - upsT >= 1000) {
    state.stats.ups = Math.round(((state.stats.updates - upsCount) * 1000) / (now - upsT));
    upsCount = state.stats.updates;
    upsT = now;
    $("c-ups").textContent = state.stats.ups;
  }
  $("c-age").textContent = state.stats.lastFrameTs ? fmtAge(Date.now() - state.stats.lastFrameTs) : "–";
  $("c-fps").textContent = state.stats.fps ? Math.round(state.stats.fps) : "–";
  updateScale();
  if (state.selected) renderCard();
  checkSubscription();
  refreshTerrain();
}

function fmtAge(ms) {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.round(ms / 60000)} min`;
}

function updateScale() {
  const blocks = niceStep(90 / state.view.scale);
  $("scale-bar").style.width = `${Math.round(blocks * state.view.scale)}px`;
  $("scale-text").textContent = `${blocks} block${blocks === 1 ? "" : "s"}`;
}

function showBanner(text) { const b = $("banner"); b.textContent = text; b.hidden = false; }
function hideBanner() { $("banner").hidden = true; }

// -- input --------------------------------------------------------------------------------------
const pointers = new Map();
let gesture = null;

function localXY(ev) {
  const r = canvas.getBoundingClientRect();
  return [ev.clientX - r.left, ev.clientY - r.top];
}

canvas.addEventListener("pointerdown", (ev) => {
  try { canvas.setPointerCapture(ev.pointerId); } catch { /* a pointer already gone */ }
  pointers.set(ev.pointerId, localXY(ev));
  startGesture();
});

function startGesture() {
  const pts = [...pointers.values()];
  const v = state.view;
  if (pts.length === 1) {
    gesture = { kind: "drag", x: pts[0][0], y: pts[0][1], cx: v.cx, cz: v.cz, moved: 0 };
  } else if (pts.length >= 2) {
    const [a, b] = pts;
    const mx = (a[0] + b[0]) / 2, my = (a[1] + b[1]) / 2;
    gesture = {
      kind: "pinch",
      d: Math.hypot(a[0] - b[0], a[1] - b[1]) || 1,
      scale: v.scale,
      wx: v.cx + (mx - canvas.clientWidth / 2) / v.scale,
      wz: v.cz + (my - canvas.clientHeight / 2) / v.scale,
      moved: 99,
    };
  }
}

canvas.addEventListener("pointermove", (ev) => {
  const [px, py] = localXY(ev);
  const v = state.view;
  if (pointers.has(ev.pointerId)) {
    pointers.set(ev.pointerId, [px, py]);
    if (gesture && gesture.kind === "drag") {
      const dx = px - gesture.x, dy = py - gesture.y;
      gesture.moved = Math.max(gesture.moved, Math.abs(dx) + Math.abs(dy));
      if (gesture.moved > 4) {
        canvas.classList.add("dragging");
        state.following = false;
        v.cx = gesture.cx - dx / v.scale;
        v.cz = gesture.cz - dy / v.scale;
        viewChanged();
      }
    } else if (gesture && gesture.kind === "pinch" && pointers.size >= 2) {
      const [a, b] = [...pointers.values()];
      const d = Math.hypot(a[0] - b[0], a[1] - b[1]) || 1;
      const mx = (a[0] + b[0]) / 2, my = (a[1] + b[1]) / 2;
      v.scale = clampScale((gesture.scale * d) / gesture.d);
      state.following = false;
      // Keep the world point that was under the fingers' midpoint under it.
      v.cx = gesture.wx - (mx - canvas.clientWidth / 2) / v.scale;
      v.cz = gesture.wz - (my - canvas.clientHeight / 2) / v.scale;
      viewChanged();
    }
    return;
  }
  const hit = pick(px, py);
  state.hover = hit ? hit.id : null;
  showTooltip(hit, px, py);
  const wx = v.cx + (px - canvas.clientWidth / 2) / v.scale, wz = v.cz + (py - canvas.clientHeight / 2) / v.scale;
  $("coords").textContent = `x ${Math.floor(wx)}  z ${Math.floor(wz)}`;
});

function endPointer(ev) {
  const [px, py] = localXY(ev);
  const wasClick = gesture && gesture.kind === "drag" && gesture.moved <= 4 && pointers.size === 1;
  pointers.delete(ev.pointerId);
  canvas.classList.remove("dragging");
  if (wasClick) {
    const hit = pick(px, py, ev.pointerType === "touch" ? 22 : 12);
    select(hit ? hit.id : null, !!hit);
  }
  gesture = null;
  if (pointers.size) startGesture(); // a pinch that loses a finger becomes a drag
}
canvas.addEventListener("pointerup", endPointer);
canvas.addEventListener("pointercancel", endPointer);
canvas.addEventListener("pointerleave", () => { if (!pointers.size) { state.hover = null; tooltip.hidden = true; $("coords").textContent = ""; } });

canvas.addEventListener("wheel", (ev) => {
  ev.preventDefault();
  const [px, py] = localXY(ev);
  const delta = ev.deltaMode === 1 ? ev.deltaY * 16 : ev.deltaY;
  zoomAt(Math.exp(-delta * 0.0015), px, py);
}, { passive: false });

function showTooltip(npc, px, py) {
  if (!npc) { tooltip.hidden = true; return; }
  tooltip.hidden = false;
  tooltip.style.left = `${px}px`;
  tooltip.style.top = `${py}px`;
  tooltip.textContent = `${npc.name} · ${npc.role} · ${npc.online ? npc.status : "offline"} · ${Math.round(npc.x1)}, ${Math.round(npc.y)}, ${Math.round(npc.z1)}`;
}

window.addEventListener("keydown", (ev) => {
  if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
  const v = state.view;
  const pan = 80 / v.scale;
  const W = canvas.clientWidth, H = canvas.clientHeight;
  switch (ev.key) {
    case "+": case "=": zoomAt(1.4, W / 2, H / 2); break;
    case "-": case "_": zoomAt(1 / 1.4, W / 2, H / 2); break;
    case "f": case "F": case "0": fitView(); break;
    case "Escape": select(null); break;
    case "ArrowLeft": v.cx -= pan; state.following = false; viewChanged(); break;
    case "ArrowRight": v.cx += pan; state.following = false; viewChanged(); break;
    case "ArrowUp": v.cz -= pan; state.following = false; viewChanged(); break;
    case "ArrowDown": v.cz += pan; state.following = false; viewChanged(); break;
    default: return;
  }
  ev.preventDefault();
});

$("zoom-in").onclick = () => zoomAt(1.5, canvas.clientWidth / 2, canvas.clientHeight / 2);
$("zoom-out").onclick = () => zoomAt(1 / 1.5, canvas.clientWidth / 2, canvas.clientHeight / 2);
$("zoom-fit").onclick = () => fitView();
$("dim").onchange = (ev) => switchDim(ev.target.value);
$("search").oninput = (ev) => {
  state.search = ev.target.value.trim().toLowerCase();
  refilter();
  updateListLabel();
  if (state.search && performance.now() - directory.at > 1000) refreshDirectory();
};
$("status").onchange = (ev) => { state.statusFilter = ev.target.value; refilter(); };
$("online-only").onchange = (ev) => { state.onlineOnly = ev.target.checked; refilter(); };
$("roles").addEventListener("click", (ev) => {
  const chip = ev.target.closest(".chip");
  if (!chip) return;
  const role = chip.dataset.role;
  if (state.roleOff.has(role)) state.roleOff.delete(role); else state.roleOff.add(role);
  refilter();
});
$("roles").addEventListener("dblclick", (ev) => {
  const chip = ev.target.closest(".chip");
  if (!chip) return;
  const roles = new Set([...Object.keys(ROLE_COLORS), ...state.all.map((n) => n.role)]);
  state.roleOff = new Set([...roles].filter((r) => r !== chip.dataset.role));
  refilter();
});
listEl.addEventListener("scroll", () => { state.rowsDirty = true; renderRows(); }, { passive: true });
card.addEventListener("click", (ev) => {
  const act = ev.target.dataset && ev.target.dataset.act;
  if (act === "close") select(null);
  if (act === "follow") { state.following = !state.following; renderCard(); }
});

// -- start --------------------------------------------------------------------------------------
// A small hook for tests and for measuring: read-only views of the state, plus inject().
window.__aicraft = {
  state,
  get npcs() { return state.npcs; },
  npc(id) {
    const n = state.npcs.get(id);
    if (!n) return null;
    const [x, z] = interp(n, performance.now());
    return { id: n.id, name: n.name, role: n.role, status: n.status, online: n.online, dim: n.dim, x: n.x1, y: n.y, z: n.z1, drawX: x, drawZ: z, visible: n.vis };
  },
  listed() { return state.filtered.map((n) => n.id); },
  labels() { return placeLabels.placed.map((b) => ({ ...b })); },
  terrain() { return { area: terrain.area, dim: terrain.dim, known: terrain.known, fetches: terrain.fetches }; },
  token() { return token; },
  stats: state.stats,
  decode,
  inject: handle,
  setView(view) { Object.assign(state.view, view); state.following = false; state.viewFitted = true; viewChanged(); },
};

renderLegend();
renderDims();
for (const el of document.querySelectorAll("#empty .ws-url")) el.textContent = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
updateListLabel();
if (!token) {
  setConn("unauthorized", "no token");
  showBanner("Open this page with ?token=<viewer token> (make -s token ROLE=viewer SUB=you)");
} else {
  connect();
}
setInterval(slowTick, 200);
requestAnimationFrame(frame);
