#!/usr/bin/env node
'use strict'
/*
 * The benchmark's Node.js peer: the gateway's core job written the way a plain Node.js service
 * would do it (the `ws`, `pg` and `jsonwebtoken` packages, one event loop), so `make bench` can
 * put the Python gateway beside it under the same load. Not a gateway: it speaks only the part
 * of the contract the load generator uses, in JSON or msgpack (the subprotocol the client offers
 * first; `msgpackr` without its records extension, so any msgpack reader understands it).
 *
 *   GATEWAY_SECRET=… [GATEWAY_TICK_MS=500] [GATEWAY_DATABASE_URL=postgresql://…] \
 *     node scripts/bench-peer/server.js --port 8090
 *
 * Bots (/ws/npc, role npc) send `pos` and `ping`; viewers (/ws/viewer, role viewer or admin)
 * get `welcome`, a `snapshot`, `joined`/`left` and one `positions` frame per tick with the latest
 * update of every NPC that moved (GATEWAY_TICK_MS=0: one frame per update). Each tick's updates
 * are written in one upsert into the table `peer_npcs`.
 */

const http = require('http')
const { WebSocketServer } = require('ws')
const jwt = require('jsonwebtoken')
const { Packr, unpack } = require('msgpackr')

const JSON_PROTOCOL = 'aicraft.v1.json'
const MSGPACK_PROTOCOL = 'aicraft.v1.msgpack'
const msgpack = new Packr({ useRecords: false })
const REPLICA = 'bench-peer'
const MAX_FRAME = 65536
const VIEWER_BACKLOG = 4 * 1024 * 1024 // a viewer this far behind misses frames
const LIMIT_XZ = 3e7
const LIMIT_Y = 2048

function option (name, fallback) {
  const i = process.argv.indexOf(name)
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback
}

const port = Number(option('--port', '8090'))
const secret = process.env.GATEWAY_SECRET
const tickMs = Number(process.env.GATEWAY_TICK_MS || 500)
if (!secret) {
  console.error('GATEWAY_SECRET is required')
  process.exit(2)
}

// -- the window: latest update per NPC since the last tick -------------------------------------
let window = new Map()
const latest = new Map()
const figures = { updates: 0, coalesced: 0, frames: 0, writes: 0, writeFailures: 0, framesSkipped: 0 }

function accept (update) {
  figures.updates++
  if (window.has(update.id)) figures.coalesced++
  window.set(update.id, update)
  latest.set(update.id, update)
  if (tickMs === 0) tick()
}

// -- storage: one upsert per tick, in order ----------------------------------------------------
const UPSERT = `
INSERT INTO peer_npcs (id, x, y, z, yaw, pitch, dim, updated_at)
SELECT u.*, now() FROM unnest($1::text[], $2::float8[], $3::float8[], $4::float8[],
                              $5::float4[], $6::float4[], $7::text[]) AS u
ON CONFLICT (id) DO UPDATE SET x = excluded.x, y = excluded.y, z = excluded.z,
  yaw = excluded.yaw, pitch = excluded.pitch, dim = excluded.dim, updated_at = excluded.updated_at`

let pool = null
let lastWrite = Promise.resolve()

async function openDatabase (url) {
  const { Pool } = require('pg')
  pool = new Pool({ connectionString: url, max: 20 })
  await pool.query(`CREATE TABLE IF NOT EXISTS peer_npcs (
    id text PRIMARY KEY, x float8, y float8, z float8, yaw float4, pitch float4, dim text,
    updated_at timestamptz)`)
}

function write (updates) {
  if (pool === null) return
  const columns = ['id', 'x', 'y', 'z', 'yaw', 'pitch', 'dim'].map((k) => updates.map((u) => u[k]))
  lastWrite = lastWrite
    .then(() => pool.query(UPSERT, columns))
    .then(() => { figures.writes++ }, (err) => {
      figures.writeFailures++
      console.error(`write failed: ${err.message}`)
    })
}

// -- viewers ------------------------------------------------------------------------------------
const viewers = new Set()
const bots = new Map()

// -- encodings: JSON in text frames, msgpack in binary ones -------------------------------------
const encode = (msg, binary) => (binary ? msgpack.pack(msg) : JSON.stringify(msg))
const decode = (data, binary) => (binary ? unpack(data) : JSON.parse(data))

function toViewers (msg) {
  const encoded = [null, null] // [JSON, msgpack]: each encoded once, for the first viewer using it
  for (const ws of viewers) {
    if (ws.bufferedAmount > VIEWER_BACKLOG) {
      figures.framesSkipped++
      continue
    }
    const i = ws.binary ? 1 : 0
    if (encoded[i] === null) encoded[i] = encode(msg, ws.binary)
    ws.send(encoded[i])
  }
}

function tick () {
  if (window.size === 0) return
  const updates = Array.from(window.values())
  window = new Map()
  figures.frames++
  toViewers({ type: 'positions', ts: Date.now(), updates })
  write(updates)
}

// -- sockets ------------------------------------------------------------------------------------
const isNumber = (v) => typeof v === 'number' && Number.isFinite(v)
const reply = (ws, msg) => ws.send(encode(msg, ws.binary))

function position (npc, msg) {
  const { x, y, z } = msg
  if (!isNumber(x) || !isNumber(y) || !isNumber(z)) return null
  if (Math.abs(x) > LIMIT_XZ || Math.abs(z) > LIMIT_XZ || Math.abs(y) > LIMIT_Y) return null
  return {
    id: npc,
    x,
    y,
    z,
    yaw: isNumber(msg.yaw) ? msg.yaw : 0,
    pitch: isNumber(msg.pitch) ? msg.pitch : 0,
    dim: typeof msg.dim === 'string' ? msg.dim : 'overworld'
  }
}

function botSession (ws, npc) {
  const previous = bots.get(npc)
  if (previous) previous.close(4409, 'replaced by a newer connection')
  bots.set(npc, ws)
  reply(ws, { type: 'welcome', npc, replica: REPLICA, tick_ms: tickMs, protocol: 1 })
  toViewers({ type: 'joined', id: npc })
  ws.on('message', (data, isBinary) => {
    let msg
    try {
      if (isBinary !== ws.binary) throw new Error('wrong frame type')
      msg = decode(data, ws.binary)
    } catch (err) {
      const encoding = ws.binary ? 'msgpack' : 'JSON'
      return reply(ws, { type: 'error', code: 'bad_encoding', message: `not ${encoding}` })
    }
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
      return reply(ws, { type: 'error', code: 'bad_message', message: 'expected a map' })
    }
    if (msg.type === 'pos') {
      const update = position(npc, msg)
      if (update === null) {
        return reply(ws, { type: 'error', code: 'bad_message', message: 'bad position', ref: msg.ref })
      }
      accept(update)
    } else if (msg.type === 'ping') {
      reply(ws, { type: 'pong', ref: msg.ref })
    } else {
      reply(ws, { type: 'error', code: 'unknown_type', message: String(msg.type), ref: msg.ref })
    }
  })
  ws.on('close', () => {
    if (bots.get(npc) !== ws) return
    bots.delete(npc)
    toViewers({ type: 'left', id: npc })
  })
}

function viewerSession (ws) {
  viewers.add(ws)
  reply(ws, { type: 'welcome', replica: REPLICA, tick_ms: tickMs, protocol: 1 })
  reply(ws, { type: 'snapshot', npcs: Array.from(latest.values()) })
  ws.on('close', () => viewers.delete(ws))
}

function bearer (req, url) {
  const header = req.headers.authorization || ''
  const token = header.startsWith('Bearer ') ? header.slice(7) : url.searchParams.get('token')
  if (!token) return null
  try {
    return jwt.verify(token, secret, { algorithms: ['HS256'] })
  } catch (err) {
    return null
  }
}

const ROLES = { '/ws/npc': ['npc'], '/ws/viewer': ['viewer', 'admin'] }

function refuse (socket, status) {
  socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
}

const sockets = new WebSocketServer({
  noServer: true,
  maxPayload: MAX_FRAME,
  perMessageDeflate: false,
  // The first offered that we speak; none offered means JSON.
  handleProtocols: (offered) =>
    [...offered].find((p) => p === JSON_PROTOCOL || p === MSGPACK_PROTOCOL) || false
})

const server = http.createServer((req, res) => {
  const path = new URL(req.url, 'http://peer').pathname
  const body = path === '/api/health'
    ? { status: 'ok', replica: REPLICA }
    : path === '/api/performance' ? { replica: REPLICA, ...figures } : null
  res.writeHead(body ? 200 : 404, { 'Content-Type': 'application/json' })
  res.end(body ? JSON.stringify(body) : '{"error":{"code":"not_found","message":"no such route"}}')
})

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://peer')
  const roles = ROLES[url.pathname]
  if (!roles) return refuse(socket, '404 Not Found')
  const claims = bearer(req, url)
  if (!claims) return refuse(socket, '401 Unauthorized')
  if (!roles.includes(claims.role)) return refuse(socket, '403 Forbidden')
  sockets.handleUpgrade(req, socket, head, (ws) => {
    ws.binary = ws.protocol === MSGPACK_PROTOCOL
    if (url.pathname === '/ws/npc') botSession(ws, claims.sub)
    else viewerSession(ws)
  })
})

async function main () {
  if (process.env.GATEWAY_DATABASE_URL) await openDatabase(process.env.GATEWAY_DATABASE_URL)
  const timer = tickMs > 0 ? setInterval(tick, tickMs) : null
  async function stop () {
    if (timer) clearInterval(timer)
    tick()
    await lastWrite
    for (const ws of [...bots.values(), ...viewers]) ws.close(1001, 'shutting down')
    if (pool) await pool.end()
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  server.listen(port, '127.0.0.1', () => {
    console.log(JSON.stringify({ event: 'ready', port, tick_ms: tickMs, database: pool !== null }))
  })
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
