'use strict'
/*
 * Bridge an existing mineflayer bot to the AICraft gateway (contract v1, JSON encoding).
 *
 *   const { attachGateway } = require('./gateway-bridge')
 *   const link = attachGateway(bot, { url: 'ws://127.0.0.1:8080', token })
 *   // … later: link.close()  (the bot stays in the game)
 *
 * What it does:
 * - position: sent at the bot's physics rate (at most 20 Hz, only when something changed) in
 *   the contract's units: blocks (feet position), yaw/pitch in degrees in Minecraft's own
 *   convention (yaw 0 faces +z/south, 90 faces -x/west; pitch -90 up, 90 down). Mineflayer
 *   keeps radians with yaw measured the other way: see toContractYaw / toContractPitch.
 * - status: idle | moving | digging | fighting | dead, sent when it changes.
 * - metrics: health and food when they change.
 * - events: death, respawn, chat; task:completed / task:failed for commands, with data
 *   {task: ACTION, command: COMMAND_ID, …}.
 * - commands: goto {x,y,z[,range][,planner:"gateway"]}, stop, say {text}, look {yaw,pitch}
 *   (degrees, contract convention). Every command is acked at once, and runs once per id
 *   (a command queued for an offline bot may be delivered again after a reconnect).
 * - the shared world model (contract §6.6): the 16x16x16 sections of the chunks the bot loads,
 *   within `streamRadius` chunks (4) and 32 blocks up or down of the bot, go out as `chunk`
 *   messages, nearest first, at most `streamRate` a second (10: positions at 20 Hz keep
 *   most of the gateway's 50 messages/s; a rate_limited answer pauses sections 2 s), each only when its bits changed since it was last
 *   sent; blocks that change solidity in sections already sent go out as `blocks`, batched every
 *   250 ms. `planner: "gateway"` then asks for paths without a world: the gateway searches what
 *   every bot reported. Opt-in (`streamWorld: true`; bots.js --stream-world): without it, paths
 *   carry the bot's own blocks as before.
 * - the gateway link reconnects by itself with jittered exponential backoff; the bot keeps
 *   playing meanwhile (tasks continue, events are queued, state is re-sent on reconnect). It
 *   gives up only on 403 (wrong role), 401 with a fixed token string, 4404 (NPC deleted) and
 *   4409 (replaced).
 * - tokens over time (contract §6.1): with a token *function* (a provider) the link asks it for
 *   a token before every connect, and again when a fifth of the current token's lifetime is
 *   left, sending it as `auth` so the socket never reaches its `exp` (4401). A 401 then means
 *   the provider gave a bad token, which may be fixed next time: the link keeps retrying.
 */

const { EventEmitter } = require('events')
const WebSocket = require('ws')
const { Vec3 } = require('vec3')

const PROTOCOL = 'aicraft.v1.json'
const MIN_POS_INTERVAL_MS = 50 // 20 Hz: the physics rate
const HEARTBEAT_MS = 10000 // a protocol ping when the link is quiet; no pong in time: reconnect
const STOP_CODES = new Set([4404, 4409])
const MAX_QUEUED = 500 // events kept while disconnected (oldest dropped)
const SEEN_COMMANDS_KEPT = 1024 // command ids remembered, so each runs once
const IDLE_AFTER_MS = 400 // "moving" must be absent this long before "idle" (no flicker)
const FIGHT_WINDOW_MS = 3000 // an attack keeps the status "fighting" this long
const STEP_TICKS = 60 // gateway-planned walking: ticks (3 s) allowed per cell before "stuck"
const PATH_REPLY_MS = 15000 // a path request without answer after this fails the task
const MAX_BITSET_CELLS = 260000 // ~32 KiB of bits, ~44 KiB base64: under the 64 KiB frame cap
const REFRESH_AT = 0.2 // refresh when this fraction of a token's remaining lifetime is left
const REFRESH_RETRY_MS = 5000 // at most this long between attempts after a refresh failed
const AUTH_REF = 'auth'
const SECTION_CELLS = 4096
const STREAM_RADIUS = 4 // chunks around the bot whose sections are reported
const STREAM_RATE = 10 // sections a second at most: positions (20 Hz) keep most of the 50/s
const STREAM_PAUSE_MS = 2000 // after a rate_limited answer, sections wait this long
const STREAM_DY = 32 // blocks above and below the bot
const BLOCKS_FLUSH_MS = 250 // single-cell changes are batched this long
const MAX_CHANGES = 4096 // per `blocks` message (the gateway's limit)
const PATH_SECTIONS_NOW = 64 // sections sent at once (past the rate) before a path request

/** A JWT's `exp` (epoch seconds), read without verifying it (the gateway verifies), or null. */
function tokenExp (token) {
  try {
    const part = String(token).split('.')[1]
    const exp = JSON.parse(Buffer.from(part, 'base64url').toString('utf8')).exp
    return Number.isFinite(exp) ? exp : null
  } catch (_) {
    return null
  }
}

// ---- units ----------------------------------------------------------------------------------

const RAD2DEG = 180 / Math.PI
const DEG2RAD = Math.PI / 180

/** Round to a millionth of a degree: radians→degrees noise (179.9999999999888) goes away. */
function round6 (deg) {
  return Math.round(deg * 1e6) / 1e6
}

/** Wrap an angle in degrees into [-180, 180). */
function wrapDegrees (deg) {
  let d = (deg + 180) % 360
  if (d < 0) d += 360
  return d - 180
}

/** mineflayer yaw (radians, counter-clockwise, 0 = north) -> Minecraft yaw (degrees, 0 = south). */
function toContractYaw (yaw) {
  // wrap, round, and wrap the rounding's 180 back to -180 (no float noise like -2.1000000000000227)
  const deg = round6(wrapDegrees((Math.PI - yaw) * RAD2DEG))
  return deg >= 180 ? deg - 360 : deg === 0 ? 0 : deg
}

/** mineflayer pitch (radians, positive = up) -> Minecraft pitch (degrees, -90 = up). */
function toContractPitch (pitch) {
  const deg = round6(-pitch * RAD2DEG)
  return deg === 0 ? 0 : deg // no -0 on the wire
}

/** Minecraft yaw (degrees) -> mineflayer yaw (radians). */
function fromContractYaw (deg) {
  return Math.PI - deg * DEG2RAD
}

/** Minecraft pitch (degrees) -> mineflayer pitch (radians). */
function fromContractPitch (deg) {
  return -deg * DEG2RAD
}

function dimensionOf (bot) {
  const dim = String((bot.game && bot.game.dimension) || 'overworld')
  return dim.replace(/^minecraft:/, '') || 'overworld'
}

function gatewayUrl (url) {
  const u = new URL(url)
  if (u.pathname === '' || u.pathname === '/') u.pathname = '/ws/npc'
  return u.toString()
}

// ---- the world as the contract's bitset (§3.4) ------------------------------------------------

/** Is this block state solid for the path planner (a full collision box, as walking sees it)? */
function solidTable (bot) {
  const cache = new Map()
  return (stateId) => {
    let solid = cache.get(stateId)
    if (solid === undefined) {
      const block = bot.registry.blocksByStateId[stateId]
      solid = Boolean(block && block.boundingBox === 'block')
      cache.set(stateId, solid)
    }
    return solid
  }
}

/**
 * The contract's bitset volume around `start` and `goal` (both [x,y,z] cells), from the blocks
 * the bot has loaded (unloaded chunks read as air, as the contract treats the outside).
 */
function encodeWorld (bot, start, goal, margin = 8, below = 4, above = 4) {
  const x0 = Math.min(start[0], goal[0]) - margin
  const z0 = Math.min(start[2], goal[2]) - margin
  const y0 = Math.min(start[1], goal[1]) - below
  const sx = Math.max(start[0], goal[0]) + margin - x0 + 1
  const sz = Math.max(start[2], goal[2]) + margin - z0 + 1
  const sy = Math.max(start[1], goal[1]) + above - y0 + 1
  const cells = sx * sy * sz
  if (cells > MAX_BITSET_CELLS) return null
  const bits = Buffer.alloc((cells + 7) >> 3)
  const isSolid = solidTable(bot)
  const p = new Vec3(0, 0, 0)
  let i = 0
  for (let y = 0; y < sy; y++) {
    p.y = y0 + y
    for (let z = 0; z < sz; z++) {
      p.z = z0 + z
      for (let x = 0; x < sx; x++, i++) {
        p.x = x0 + x
        const state = bot.world.getBlockStateId(p)
        if (state !== undefined && state !== null && isSolid(state)) bits[i >> 3] |= 1 << (i & 7)
      }
    }
  }
  return { origin: [x0, y0, z0], size: [sx, sy, sz], solid: bits.toString('base64') }
}

/** One section's 512-byte solid bitset (contract bit order, sx = sy = sz = 16), or null when
 * the bot has not loaded its chunk. */
function encodeSection (bot, isSolid, cx, cy, cz) {
  const bits = Buffer.alloc(SECTION_CELLS >> 3)
  const p = new Vec3(0, 0, 0)
  let i = 0
  for (let y = 0; y < 16; y++) {
    p.y = cy * 16 + y
    for (let z = 0; z < 16; z++) {
      p.z = cz * 16 + z
      for (let x = 0; x < 16; x++, i++) {
        p.x = cx * 16 + x
        const state = bot.world.getBlockStateId(p)
        if (state === undefined || state === null) return null
        if (isSolid(state)) bits[i >> 3] |= 1 << (i & 7)
      }
    }
  }
  return bits
}

/** The cell the bot stands in: its feet cell, or the one above when the feet are in a slab. */
function standingCell (bot) {
  const pos = bot.entity.position
  const x = Math.floor(pos.x)
  const z = Math.floor(pos.z)
  let y = Math.floor(pos.y + 1e-3)
  const state = bot.world.getBlockStateId(new Vec3(x, y, z))
  if (state !== undefined && solidTable(bot)(state)) y += 1
  return [x, y, z]
}

// ---- the link ---------------------------------------------------------------------------------

class GatewayLink extends EventEmitter {
  constructor (bot, opts) {
    super()
    if (!opts || !opts.url) throw new Error('attachGateway: url is required')
    if (!opts.token) throw new Error('attachGateway: token is required')
    this.bot = bot
    this.url = gatewayUrl(opts.url)
    this.tokenSource = opts.token // a string, or a (possibly async) function returning one
    this.log = opts.log || (() => {})
    this.report = opts.onReport || null // (record) => void: positions, statuses, tasks, link
    this.backoffMinMs = opts.backoffMinMs ?? 200
    this.backoffMaxMs = opts.backoffMaxMs ?? 5000
    this.defaultPlanner = opts.planner || 'mineflayer'
    this.allowDig = opts.allowDig ?? false
    this.streamWorld = opts.streamWorld ?? false
    this.streamRadius = opts.streamRadius ?? STREAM_RADIUS
    this.streamRate = opts.streamRate ?? STREAM_RATE
    this.pending = new Map() // "cx,cy,cz" -> [cx,cy,cz]: sections to (re)send
    this.sentSections = new Map() // "cx,cy,cz" -> base64 last sent
    this.changes = new Map() // "x,y,z" -> [x,y,z,solid]: cell changes to send
    this.streamTimer = null
    this.blocksTimer = null
    this.scannedAt = null // the section the bot was in when loaded columns were last queued
    this.streamPausedUntil = 0
    this._isSolid = null

    this.ws = null
    this.connected = false // welcome received on the current socket
    this.closed = false // close() called or a stop condition: no more reconnects
    this.closeCode = null
    this.attempt = 0
    this.reconnectTimer = null
    this.heartbeat = null
    this.awaitingPong = false
    this.npc = null
    this.replica = null

    this.sent = {} // message type -> how many were sent (for --stats and measurements)
    this.queue = [] // events waiting for a connection
    this.lastPos = null // [x,y,z,yaw,pitch,dim] last sent
    this.lastPosAt = 0
    this.posTimer = null
    this.status = null // last status sent (or to send on connect)
    this.movingSince = 0
    this.lastMovingAt = 0
    this.lastAttackAt = 0
    this.metrics = {} // name -> last value sent
    this.task = null // the movement task running: {id, action, cancel(reason)}
    // Command ids already run, oldest first: a queued command (contract §6.5) may arrive again
    // on a later connection if its ack was lost; it is acked again but runs once.
    this.seenCommands = new Set()
    this.duplicateCommands = 0
    this.pathWaiters = new Map() // ref -> {resolve, reject, timer}
    this.pathSeq = 0
    this.dead = bot.isAlive === false
    this.token = null // the token the current socket runs on
    this.nextToken = null // sent in an `auth`, not yet confirmed
    this.refreshTimer = null
    this.refreshes = 0 // tokens replaced in place (`auth_ok`)

    this._listeners = []
    this._hookBot()
    this._connect()
  }

  // -- public ------------------------------------------------------------------------------------

  /** Stop talking to the gateway (the bot stays in the game). */
  close () {
    this.closed = true
    clearTimeout(this.reconnectTimer)
    clearTimeout(this.posTimer)
    clearInterval(this.heartbeat)
    clearTimeout(this.refreshTimer)
    clearInterval(this.streamTimer)
    clearTimeout(this.blocksTimer)
    for (const [event, fn] of this._listeners) this.bot.removeListener(event, fn)
    this._listeners = []
    if (this.task) this.task.cancel('closed')
    if (this.ws) {
      try { this.ws.close(1000, 'bye') } catch (_) {}
    }
  }

  /** Run a command as if the gateway had sent it (the bots' --wander uses it). */
  runCommand (cmd) {
    this._onCommand(cmd, false)
  }

  /** Send a contract message now if connected; events are queued otherwise. */
  send (msg) {
    if (this.connected && this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg))
      this.sent[msg.type] = (this.sent[msg.type] || 0) + 1
      return true
    }
    if (msg.type === 'event') {
      this.queue.push(msg)
      if (this.queue.length > MAX_QUEUED) this.queue.shift()
    }
    return false
  }

  // -- connection --------------------------------------------------------------------------------

  async _token () {
    const t = this.tokenSource
    return typeof t === 'function' ? await t() : t
  }

  async _connect () {
    if (this.closed) return
    let token
    try {
      token = await this._token()
    } catch (err) {
      this.log(`token: ${err.message}`)
      return this._scheduleReconnect()
    }
    if (this.closed) return
    this.token = token
    const ws = new WebSocket(this.url, [PROTOCOL], {
      headers: { Authorization: `Bearer ${token}` },
      perMessageDeflate: false,
      handshakeTimeout: 10000
    })
    this.ws = ws
    ws.on('unexpected-response', (req, res) => {
      // 403, or 401 for a fixed token: wrong for good. 401 with a provider (its next token
      // may be good) and anything else (503 while starting): retry.
      const code = res.statusCode
      this.log(`gateway answered HTTP ${code}`)
      const provider = typeof this.tokenSource === 'function'
      if (code === 403 || (code === 401 && !provider)) {
        this.closed = true
        this.closeCode = code
        this._emitReport({ kind: 'link', state: 'rejected', code })
        this.emit('fatal', new Error(`gateway refused the token (HTTP ${code})`))
      }
      req.destroy()
      this._onSocketGone(ws)
    })
    ws.on('message', (data, isBinary) => {
      if (isBinary) return
      let msg
      try {
        msg = JSON.parse(data.toString('utf8'))
      } catch (_) {
        return
      }
      if (msg && typeof msg === 'object') this._onMessage(msg)
    })
    ws.on('close', (code) => {
      if (STOP_CODES.has(code)) {
        this.closed = true
        this.closeCode = code
        this.emit('fatal', new Error(`gateway closed the link for good (${code})`))
      }
      this._onSocketGone(ws, code)
    })
    ws.on('error', (err) => {
      this.log(`gateway link: ${err.message}`)
      // 'close' follows an error on an opened socket; not on a failed handshake
      if (ws.readyState !== WebSocket.OPEN) this._onSocketGone(ws)
    })
  }

  _onSocketGone (ws, code) {
    if (ws !== this.ws) return // an old socket, already handled
    this.ws = null
    clearInterval(this.heartbeat)
    this.heartbeat = null
    clearTimeout(this.refreshTimer)
    this.refreshTimer = null
    this.nextToken = null
    // The next gateway may be another process that lacks what was sent: report it all again.
    clearInterval(this.streamTimer)
    this.streamTimer = null
    this.sentSections.clear()
    this.scannedAt = null
    const wasConnected = this.connected
    this.connected = false
    for (const [ref, w] of this.pathWaiters) {
      clearTimeout(w.timer)
      w.reject(new Error('gateway_unavailable'))
      this.pathWaiters.delete(ref)
    }
    try { ws.terminate() } catch (_) {}
    if (wasConnected) {
      this._emitReport({ kind: 'link', state: 'disconnected', code: code ?? null })
      this.emit('disconnected', code)
    }
    this._scheduleReconnect()
  }

  _scheduleReconnect () {
    if (this.closed || this.reconnectTimer) return
    const ceiling = Math.min(this.backoffMaxMs, this.backoffMinMs * 2 ** this.attempt)
    const delay = ceiling / 2 + Math.random() * (ceiling / 2) // "equal jitter"
    this.attempt = Math.min(this.attempt + 1, 20)
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null
      this._connect()
    }, delay)
  }

  _onWelcome (msg) {
    this.connected = true
    this.attempt = 0
    this.npc = msg.npc
    this.replica = msg.replica
    this.awaitingPong = false
    clearInterval(this.heartbeat)
    this.heartbeat = setInterval(() => this._beat(), HEARTBEAT_MS)
    this._scheduleRefresh(false)
    // Re-send the whole state: a restarted gateway knows nothing of this bot's present.
    this.lastPos = null
    this._sendPosition(true)
    if (this.status) this.send({ type: 'status', status: this.status })
    else this._updateStatus()
    for (const [name, value] of Object.entries(this.metrics)) {
      this.send({ type: 'metric', name, value })
    }
    const queued = this.queue
    this.queue = []
    for (const msg of queued) this.send(msg)
    this._startStreaming()
    this._emitReport({ kind: 'link', state: 'connected', npc: msg.npc, replica: msg.replica })
    this.emit('connected', msg)
  }

  /** Plan the next in-place refresh (only with a provider); `retry` after a failed one. */
  _scheduleRefresh (retry) {
    clearTimeout(this.refreshTimer)
    this.refreshTimer = null
    const exp = tokenExp(this.token)
    if (typeof this.tokenSource !== 'function' || exp === null) return
    const left = exp * 1000 - Date.now()
    const delay = retry
      ? Math.min(REFRESH_RETRY_MS, Math.max(100, left / 4))
      : Math.max(0, left * (1 - REFRESH_AT))
    this.refreshTimer = setTimeout(() => this._refresh(exp), delay)
  }

  async _refresh (exp) {
    this.refreshTimer = null
    let token
    try {
      token = await this._token()
    } catch (err) {
      this.log(`token refresh: ${err.message}`)
      return this._scheduleRefresh(true)
    }
    if (!this.connected) return // the next connect asks the provider anyway
    const next = tokenExp(token)
    if (next === null || next <= exp) {
      this.log('token refresh: the provider returned no later token')
      return this._scheduleRefresh(true)
    }
    this.nextToken = token
    this.send({ type: 'auth', token, ref: AUTH_REF })
  }

  _beat () {
    if (!this.ws) return
    if (this.awaitingPong) {
      this.log('gateway did not answer a ping: reconnecting')
      return this._onSocketGone(this.ws)
    }
    this.awaitingPong = true
    this.send({ type: 'ping', ref: 'hb' })
  }

  _onMessage (msg) {
    switch (msg.type) {
      case 'welcome':
        return this._onWelcome(msg)
      case 'pong':
        this.awaitingPong = false
        return
      case 'auth_ok':
        if (this.nextToken) this.token = this.nextToken
        this.nextToken = null
        this.refreshes += 1
        return this._scheduleRefresh(false)
      case 'command':
        return this._onCommand(msg, true)
      case 'path_result': {
        const w = this.pathWaiters.get(msg.ref)
        if (w) {
          this.pathWaiters.delete(msg.ref)
          clearTimeout(w.timer)
          w.resolve(msg)
        }
        return
      }
      case 'error': {
        this.log(`gateway error ${msg.code}: ${msg.message}`)
        // Sections can wait; positions cannot: back off streaming when the gateway says so.
        if (msg.code === 'rate_limited') this.streamPausedUntil = Date.now() + STREAM_PAUSE_MS
        if (msg.ref === AUTH_REF) {
          this.nextToken = null
          return this._scheduleRefresh(true)
        }
        const w = msg.ref !== undefined && this.pathWaiters.get(msg.ref)
        if (w) {
          this.pathWaiters.delete(msg.ref)
          clearTimeout(w.timer)
          w.reject(new Error(msg.code || 'error'))
        }
        this.emit('gatewayError', msg)
        return
      }
      default:
        this.emit('message', msg)
    }
  }

  // -- the bot -----------------------------------------------------------------------------------

  _on (event, fn) {
    this.bot.on(event, fn)
    this._listeners.push([event, fn])
  }

  _hookBot () {
    const bot = this.bot
    this._on('physicsTick', () => {
      this._sendPosition(false)
      this._updateStatus()
    })
    this._on('move', () => this._sendPosition(false))
    this._on('forcedMove', () => this._sendPosition(false))
    this._on('spawn', () => {
      this._sendPosition(false)
      if (this.dead) {
        this.dead = false
        this._event('respawn', this._where())
      }
      this._updateStatus()
    })
    this._on('death', () => {
      this.dead = true
      if (this.task) this.task.cancel('died')
      this._event('death', this._where())
      this._updateStatus()
    })
    this._on('health', () => {
      this._metric('health', bot.health)
      this._metric('food', bot.food)
      this._updateStatus()
    })
    if (this.streamWorld) {
      this._on('chunkColumnLoad', (corner) => this._columnLoaded(corner))
      this._on('blockUpdate', (oldBlock, newBlock) => this._blockChanged(oldBlock, newBlock))
    }
    this._on('chat', (username, message) => {
      this._event('chat', { username: String(username), message: String(message) })
    })
    // The status "fighting" comes from attacks this bot makes.
    if (typeof bot.attack === 'function' && !bot.attack.__gatewayWrapped) {
      const attack = bot.attack.bind(bot)
      bot.attack = (...args) => {
        this.lastAttackAt = Date.now()
        return attack(...args)
      }
      bot.attack.__gatewayWrapped = true
    }
  }

  // -- the shared world model (§6.6) -------------------------------------------------------------

  _solid () {
    if (!this._isSolid) this._isSolid = solidTable(this.bot)
    return this._isSolid
  }

  /** The sections of a loaded column near the bot, queued (sent by the pump, nearest first). */
  _columnLoaded (corner) {
    const cx = Math.floor(corner.x / 16)
    const cz = Math.floor(corner.z / 16)
    const pos = this.bot.entity && this.bot.entity.position
    if (!pos) return
    if (Math.abs(cx - Math.floor(pos.x / 16)) > this.streamRadius) return
    if (Math.abs(cz - Math.floor(pos.z / 16)) > this.streamRadius) return
    this._queueColumn(cx, cz, pos.y)
  }

  _queueColumn (cx, cz, y) {
    const lo = Math.floor((y - STREAM_DY) / 16)
    const hi = Math.floor((y + STREAM_DY) / 16)
    for (let cy = lo; cy <= hi; cy++) this.pending.set(`${cx},${cy},${cz}`, [cx, cy, cz])
  }

  _blockChanged (oldBlock, newBlock) {
    if (!newBlock || !newBlock.position) return
    const isSolid = this._solid()
    const was = Boolean(oldBlock && isSolid(oldBlock.stateId))
    const now = isSolid(newBlock.stateId)
    if (was === now) return
    const { x, y, z } = newBlock.position
    const key = `${Math.floor(x / 16)},${Math.floor(y / 16)},${Math.floor(z / 16)}`
    if (!this.sentSections.has(key)) return // the section goes out whole when its turn comes
    this.changes.set(`${x},${y},${z}`, [x, y, z, now ? 1 : 0])
    if (!this.blocksTimer) this.blocksTimer = setTimeout(() => this._flushBlocks(), BLOCKS_FLUSH_MS)
  }

  _flushBlocks () {
    this.blocksTimer = null
    if (!this.connected || this.changes.size === 0) return
    const all = [...this.changes.values()]
    this.changes.clear()
    for (let i = 0; i < all.length; i += MAX_CHANGES) {
      this.send({ type: 'blocks', dim: dimensionOf(this.bot), changes: all.slice(i, i + MAX_CHANGES) })
    }
    // The model now has these cells: what was sent of their sections is no longer what it is.
    for (const [x, y, z] of all) this.sentSections.set(`${Math.floor(x / 16)},${Math.floor(y / 16)},${Math.floor(z / 16)}`, null)
  }

  _startStreaming () {
    if (!this.streamWorld || this.streamTimer) return
    this.streamTimer = setInterval(() => this._pump(1), 1000 / this.streamRate)
  }

  /** Queue the loaded columns near the bot (on start, and whenever it enters another section). */
  _rescan () {
    const bot = this.bot
    if (!bot.world || typeof bot.world.getColumns !== 'function') return
    for (const { chunkX, chunkZ } of bot.world.getColumns()) {
      this._columnLoaded({ x: Number(chunkX) * 16, z: Number(chunkZ) * 16 })
    }
  }

  /** Send up to `n` queued sections, nearest to the bot first; only those whose bits changed. */
  _pump (n) {
    if (!this.connected || Date.now() < this.streamPausedUntil) return 0
    const pos = this.bot.entity && this.bot.entity.position
    if (!pos) return 0
    const here = `${Math.floor(pos.x / 16)},${Math.floor(pos.y / 16)},${Math.floor(pos.z / 16)}`
    if (here !== this.scannedAt) {
      this.scannedAt = here
      this._rescan()
    }
    let sent = 0
    while (sent < n && this.pending.size > 0) {
      let best = null
      let bestD = Infinity
      for (const [key, [cx, cy, cz]] of this.pending) {
        const d = Math.abs(cx * 16 + 8 - pos.x) + Math.abs(cy * 16 + 8 - pos.y) + Math.abs(cz * 16 + 8 - pos.z)
        if (d < bestD) { bestD = d; best = key }
      }
      const [cx, cy, cz] = this.pending.get(best)
      this.pending.delete(best)
      if (this._sendSection(cx, cy, cz)) sent++
    }
    return sent
  }

  _sendSection (cx, cy, cz) {
    const bits = encodeSection(this.bot, this._solid(), cx, cy, cz)
    if (!bits) return false // not loaded (any more)
    const b64 = bits.toString('base64')
    const key = `${cx},${cy},${cz}`
    if (this.sentSections.get(key) === b64) return false // nothing changed
    if (!this.send({ type: 'chunk', dim: dimensionOf(this.bot), origin: [cx * 16, cy * 16, cz * 16], solid: b64 })) return false
    this.sentSections.set(key, b64)
    return true
  }

  /** Before a path request: the sections between start and goal this bot has, sent now. */
  _reportSpan (start, goal) {
    this._flushBlocks()
    const lo = [0, 1, 2].map((i) => Math.floor((Math.min(start[i], goal[i]) - (i === 1 ? 8 : 16)) / 16))
    const hi = [0, 1, 2].map((i) => Math.floor((Math.max(start[i], goal[i]) + (i === 1 ? 8 : 16)) / 16))
    let budget = PATH_SECTIONS_NOW
    for (let cx = lo[0]; cx <= hi[0] && budget > 0; cx++) {
      for (let cz = lo[2]; cz <= hi[2] && budget > 0; cz++) {
        for (let cy = lo[1]; cy <= hi[1] && budget > 0; cy++) {
          const key = `${cx},${cy},${cz}`
          if (this.sentSections.get(key)) continue
          this.pending.delete(key)
          if (this._sendSection(cx, cy, cz)) budget--
        }
      }
    }
  }

  _where () {
    const p = this.bot.entity && this.bot.entity.position
    return p ? { x: p.x, y: p.y, z: p.z, dim: dimensionOf(this.bot) } : {}
  }

  _emitReport (record) {
    if (this.report) {
      try { this.report(record) } catch (_) {}
    }
  }

  /** The position in contract units, or null before the bot has one. */
  position () {
    const e = this.bot.entity
    if (!e || !e.position || !Number.isFinite(e.position.x)) return null
    return {
      x: e.position.x,
      y: e.position.y,
      z: e.position.z,
      yaw: toContractYaw(e.yaw),
      pitch: toContractPitch(e.pitch),
      dim: dimensionOf(this.bot)
    }
  }

  _sendPosition (force) {
    const pos = this.position()
    if (!pos) return
    const key = [pos.x, pos.y, pos.z, pos.yaw, pos.pitch, pos.dim]
    const same = this.lastPos && key.every((v, i) => v === this.lastPos[i])
    if (same && !force) return
    const now = Date.now()
    const wait = this.lastPosAt + MIN_POS_INTERVAL_MS - now
    if (!force && wait > 0) {
      // At most 20 Hz; the trailing send makes sure the last position always goes out.
      if (!this.posTimer) {
        this.posTimer = setTimeout(() => {
          this.posTimer = null
          this._sendPosition(false)
        }, wait)
      }
      return
    }
    if (!this.connected) return
    this.lastPos = key
    this.lastPosAt = now
    this.send({ type: 'pos', ...pos })
    const e = this.bot.entity
    this._emitReport({ kind: 'pos', ...pos, raw: { yaw: e.yaw, pitch: e.pitch } })
  }

  _metric (name, value) {
    if (typeof value !== 'number' || !Number.isFinite(value)) return
    if (this.metrics[name] === value) return
    this.metrics[name] = value
    this.send({ type: 'metric', name, value })
  }

  _event (name, data) {
    this.send({ type: 'event', name, data: data || {} })
    this._emitReport({ kind: 'event', name, data: data || {} })
  }

  _isMoving () {
    const bot = this.bot
    if (this.task && this.task.moving) return true
    if (bot.pathfinder && typeof bot.pathfinder.isMoving === 'function' && bot.pathfinder.isMoving()) return true
    const c = bot.controlState || {}
    if (c.forward || c.back || c.left || c.right || c.jump) return true
    const v = bot.entity && bot.entity.velocity
    return Boolean(v && Math.hypot(v.x, v.z) > 0.02)
  }

  _currentStatus () {
    const bot = this.bot
    const now = Date.now()
    if (this.dead || bot.isAlive === false || (typeof bot.health === 'number' && bot.health <= 0)) return 'dead'
    if (bot.targetDigBlock) return 'digging'
    if (now - this.lastAttackAt < FIGHT_WINDOW_MS || (bot.pvp && bot.pvp.target)) return 'fighting'
    if (this._isMoving()) {
      this.lastMovingAt = now
      return 'moving'
    }
    if (this.status === 'moving' && now - this.lastMovingAt < IDLE_AFTER_MS) return 'moving'
    return 'idle'
  }

  _updateStatus () {
    const status = this._currentStatus()
    if (status === this.status) return
    this.status = status
    this.send({ type: 'status', status })
    this._emitReport({ kind: 'status', status })
  }

  // -- commands ----------------------------------------------------------------------------------

  _onCommand (msg, fromGateway) {
    const id = msg.id
    const action = typeof msg.action === 'string' ? msg.action : ''
    const args = msg.args && typeof msg.args === 'object' ? msg.args : {}
    if (fromGateway && id !== undefined) this.send({ type: 'ack', id })
    if (fromGateway && id !== undefined) {
      if (this.seenCommands.has(id)) {
        this.duplicateCommands += 1
        return
      }
      this.seenCommands.add(id)
      if (this.seenCommands.size > SEEN_COMMANDS_KEPT) {
        this.seenCommands.delete(this.seenCommands.values().next().value)
      }
    }
    this._emitReport({ kind: 'command', id, action, args })
    const done = (extra) => this._taskEvent('task:completed', action, id, extra)
    const fail = (reason, extra) => this._taskEvent('task:failed', action, id, { reason, ...extra })
    try {
      switch (action) {
        case 'goto': return this._goto(id, args, done, fail)
        case 'stop': {
          if (this.task) this.task.cancel('stopped')
          this._halt()
          return done()
        }
        case 'say': {
          if (typeof args.text !== 'string' || !args.text) return fail('bad_args')
          this.bot.chat(args.text.slice(0, 256))
          return done()
        }
        case 'look': {
          const yaw = Number(args.yaw ?? 0)
          const pitch = Number(args.pitch ?? 0)
          if (!Number.isFinite(yaw) || !Number.isFinite(pitch) || Math.abs(pitch) > 90) return fail('bad_args')
          return Promise.resolve(this.bot.look(fromContractYaw(yaw), fromContractPitch(pitch), true))
            .then(() => { this._sendPosition(false); done() }, (err) => fail('error', { message: String(err.message || err) }))
        }
        default:
          return fail('unknown_action')
      }
    } catch (err) {
      fail('error', { message: String(err && err.message ? err.message : err) })
    }
  }

  _taskEvent (name, action, id, extra) {
    this._event(name, { task: action, command: id ?? null, ...(extra || {}) })
  }

  _halt () {
    const bot = this.bot
    if (bot.pathfinder) bot.pathfinder.setGoal(null)
    bot.clearControlStates()
  }

  _goto (id, args, done, fail) {
    const x = Number(args.x)
    const y = args.y === undefined || args.y === null ? null : Number(args.y)
    const z = Number(args.z)
    if (!Number.isFinite(x) || !Number.isFinite(z) || (y !== null && !Number.isFinite(y))) {
      return fail('bad_args')
    }
    if (this.dead) return fail('dead')
    if (this.task) this.task.cancel('interrupted')
    const planner = args.planner || this.defaultPlanner
    const goal = [Math.floor(x), y === null ? null : Math.floor(y), Math.floor(z)]
    const range = Number.isFinite(Number(args.range)) ? Number(args.range) : 0
    let finished = false
    const task = {
      id,
      action: 'goto',
      moving: true,
      cancel: (reason) => {
        if (finished) return
        finished = true
        task.moving = false
        task.aborted = true
        if (this.task === task) this.task = null
        if (task.abort) task.abort()
        this._halt()
        fail(reason)
      }
    }
    const settle = (ok, reason, extra) => {
      if (finished) return
      finished = true
      task.moving = false
      if (this.task === task) this.task = null
      if (ok) done({ ...this._where(), ...(extra || {}) })
      else fail(reason, extra)
    }
    this.task = task
    this._updateStatus()
    const run = planner === 'gateway'
      ? this._gotoGateway(task, goal)
      : this._gotoMineflayer(task, goal, range)
    run.then((extra) => settle(true, null, extra), (err) => settle(false, err.reason || 'no_path', { message: String(err.message || err) }))
  }

  _gotoMineflayer (task, goal, range) {
    const bot = this.bot
    if (!bot.pathfinder) {
      const err = new Error('mineflayer-pathfinder is not loaded')
      err.reason = 'unsupported'
      return Promise.reject(err)
    }
    const { Movements, goals } = require('mineflayer-pathfinder')
    if (!this._movements) {
      this._movements = new Movements(bot)
      this._movements.canDig = this.allowDig
      this._movements.allow1by1towers = false
      this._movements.allowParkour = false
    }
    bot.pathfinder.setMovements(this._movements)
    const [gx, gy, gz] = goal
    let g
    if (gy === null) g = new goals.GoalXZ(gx, gz)
    else if (range > 0) g = new goals.GoalNear(gx, gy, gz, range)
    else g = new goals.GoalBlock(gx, gy, gz)
    task.abort = () => bot.pathfinder.setGoal(null)
    return bot.pathfinder.goto(g).then(() => ({ planner: 'mineflayer' }))
  }

  /** Ask the gateway for a path (contract §3.4) and walk it cell by cell. */
  async _gotoGateway (task, goal) {
    const bot = this.bot
    if (goal[1] === null) {
      const err = new Error('planner=gateway needs y')
      err.reason = 'bad_args'
      throw err
    }
    const start = standingCell(bot)
    let world = null
    if (this.streamWorld) {
      this._reportSpan(start, goal) // the model has what this bot sees; others add theirs
    } else {
      world = encodeWorld(bot, start, goal)
      if (!world) {
        const err = new Error('goal too far for one path request')
        err.reason = 'too_far'
        throw err
      }
    }
    const ref = `path-${++this.pathSeq}`
    const reply = await new Promise((resolve, reject) => {
      if (!this.connected) return reject(Object.assign(new Error('not connected'), { reason: 'gateway_unavailable' }))
      const timer = setTimeout(() => {
        this.pathWaiters.delete(ref)
        reject(Object.assign(new Error('no path_result in time'), { reason: 'timeout' }))
      }, PATH_REPLY_MS)
      this.pathWaiters.set(ref, { resolve, reject: (e) => reject(Object.assign(e, { reason: e.reason || e.message })), timer })
      const dim = dimensionOf(bot)
      this.send(world ? { type: 'path', ref, start, goal, world } : { type: 'path', ref, start, goal, dim })
    })
    if (task.aborted) throw Object.assign(new Error('cancelled'), { reason: 'cancelled' })
    if (!reply.ok) throw Object.assign(new Error(reply.error || 'no_path'), { reason: reply.error || 'no_path' })
    const path = reply.path
    this._emitReport({ kind: 'path', ref, start, goal, path, cost: reply.cost })
    await this._walk(task, path)
    return { planner: 'gateway', cells: path.length, cost: reply.cost }
  }

  /** Walk a list of standing cells, one neighbour at a time, steering by the controls. */
  _walk (task, path) {
    const bot = this.bot
    return new Promise((resolve, reject) => {
      let i = 1
      let ticks = 0
      const target = new Vec3(0, 0, 0)
      const cleanup = () => {
        bot.removeListener('physicsTick', onTick)
        bot.clearControlStates()
      }
      task.abort = () => {
        cleanup()
        reject(Object.assign(new Error('cancelled'), { reason: 'cancelled' }))
      }
      const onTick = () => {
        if (i >= path.length) {
          cleanup()
          return resolve()
        }
        const [cx, cy, cz] = path[i]
        const last = i === path.length - 1
        const pos = bot.entity.position
        const dx = cx + 0.5 - pos.x
        const dz = cz + 0.5 - pos.z
        const dist = Math.hypot(dx, dz)
        const onLevel = Math.abs(pos.y - cy) < 0.6
        if (onLevel && dist < (last ? 0.25 : 0.4) && (!last || bot.entity.onGround)) {
          i++
          ticks = 0
          if (i >= path.length) {
            cleanup()
            return resolve()
          }
          return
        }
        if (++ticks > STEP_TICKS) {
          cleanup()
          return reject(Object.assign(new Error(`stuck before ${path[i]}`), { reason: 'stuck' }))
        }
        target.set(cx + 0.5, pos.y + bot.entity.height * 0.9, cz + 0.5)
        bot.lookAt(target, true)
        const rising = cy > pos.y + 0.5
        bot.setControlState('jump', rising && bot.entity.onGround && dist < 1.4)
        // Slow down near the last cell so the bot stops inside it (never at an edge to drop).
        bot.setControlState('sneak', last && dist < 0.6 && cy > pos.y - 0.5)
        bot.setControlState('forward', dist > 0.1)
      }
      bot.on('physicsTick', onTick)
    })
  }
}

/**
 * Attach an existing mineflayer bot to the gateway. Options: url (ws://host:port, /ws/npc is
 * added when no path is given), token (string or function returning one), planner default
 * ('mineflayer' | 'gateway'), onReport(record), log(line), backoffMinMs, backoffMaxMs, allowDig.
 * The bot should have mineflayer-pathfinder loaded for goto; it is loaded here when missing.
 */
function attachGateway (bot, opts) {
  if (!bot.pathfinder) {
    try {
      bot.loadPlugin(require('mineflayer-pathfinder').pathfinder)
    } catch (_) { /* goto with the mineflayer planner then fails with "unsupported" */ }
  }
  return new GatewayLink(bot, opts)
}

module.exports = {
  attachGateway,
  tokenExp,
  GatewayLink,
  encodeWorld,
  encodeSection,
  standingCell,
  toContractYaw,
  toContractPitch,
  fromContractYaw,
  fromContractPitch,
  wrapDegrees
}
