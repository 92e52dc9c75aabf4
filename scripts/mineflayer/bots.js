#!/usr/bin/env node
'use strict'
/*
 * Start N mineflayer bots on a Minecraft server, each bridged to the AICraft gateway.
 *
 *   node scripts/mineflayer/bots.js --server 127.0.0.1:25565 --gateway ws://127.0.0.1:8080 \
 *        --npcs 5 --prefix miner_ (--secret S | --token-cmd "python -m gateway token --role npc --sub {npc}") \
 *        [--wander] [--wander-radius 12] [--planner mineflayer|gateway] [--stream-world] [--json] [--first 1]
 *        [--roles miner,builder,guard [--admin-token T]]
 *
 * --wander: each bot walks to a random spot near its spawn, pauses, and walks again. Commands
 * from an operator win: while one runs the bot does not wander, and it resumes once that
 * command's task has ended.
 *
 * --roles: the n-th bot gets the n-th role (in turn), registered over REST before it joins, so
 * the live map colours it. Needs an admin token: --admin-token, or one minted with --secret.
 *
 * Tokens: --secret mints HS256 JWTs {sub, role: "npc"} (GATEWAY_SECRET is read when neither
 * option is given); --token-cmd runs a shell command per bot and takes its stdout ("{npc}" in
 * the command is replaced by the NPC id, otherwise the id is appended as the last argument).
 *
 * --stdin reads commands as JSON lines, {"bot": NAME, "id": ID, "action": A, "args": {…}}, and
 * runs them as if the gateway had sent them (tests use it; REST commands need an admin token).
 *
 * --stats S prints, every S seconds, one JSON line {"kind": "stats", "bots", "in_game", "linked",
 * "sent": {type: count}} with the messages sent to the gateway since the start (all bots).
 *
 * --json prints one JSON line per report on stdout: {"bot": NAME, "kind": "pos"|"status"|
 * "event"|"command"|"link"|"path"|"spawn"|"end", …}; positions carry contract units and the raw
 * mineflayer radians under "raw". SIGINT/SIGTERM: every bot leaves the game and it exits.
 *
 * A bot that is kicked, loses its connection or has not spawned within --join-timeout-s (30)
 * joins again after a jittered pause (growing to 30 s); its gateway link is made anew.
 */

const { exec } = require('child_process')
const { promisify } = require('util')
const mineflayer = require('mineflayer')
const { pathfinder } = require('mineflayer-pathfinder')
const jwt = require('jsonwebtoken')
const { attachGateway, tokenExp } = require('./gateway-bridge')

const execAsync = promisify(exec)

function usage (code) {
  console.error('usage: node bots.js --server HOST:PORT --gateway ws://HOST:PORT --npcs N ' +
    '[--prefix miner_] [--first 1] [--secret S | --token-cmd CMD] [--wander] ' +
    '[--wander-radius R] [--planner mineflayer|gateway] [--version 1.16.5] [--json] [--stdin] ' +
    '[--stats SECONDS] [--join-spacing-ms 150] [--join-timeout-s 30] [--verbose] ' +
    '[--roles R1,R2,… [--admin-token T]]')
  process.exit(code)
}

function parseArgs (argv) {
  const out = {
    server: '127.0.0.1:25565',
    gateway: 'ws://127.0.0.1:8080',
    npcs: 1,
    prefix: 'miner_',
    first: 1,
    secret: null,
    tokenCmd: null,
    wander: false,
    wanderRadius: 12,
    planner: 'mineflayer',
    streamWorld: false,
    version: '1.16.5',
    json: false,
    verbose: false,
    joinSpacingMs: 150,
    joinTimeoutS: 30,
    roles: [],
    adminToken: null
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const next = () => {
      if (i + 1 >= argv.length) usage(2)
      return argv[++i]
    }
    switch (a) {
      case '--server': out.server = next(); break
      case '--gateway': out.gateway = next(); break
      case '--npcs': out.npcs = Number(next()); break
      case '--prefix': out.prefix = next(); break
      case '--first': out.first = Number(next()); break
      case '--secret': out.secret = next(); break
      case '--token-cmd': out.tokenCmd = next(); break
      case '--wander': out.wander = true; break
      case '--wander-radius': out.wanderRadius = Number(next()); break
      case '--planner': out.planner = next(); break
      case '--stream-world': out.streamWorld = true; break
      case '--version': out.version = next(); break
      case '--join-spacing-ms': out.joinSpacingMs = Number(next()); break
      case '--join-timeout-s': out.joinTimeoutS = Number(next()); break
      case '--json': out.json = true; break
      case '--stdin': out.stdin = true; break
      case '--stats': out.stats = Number(next()); break
      case '--verbose': out.verbose = true; break
      case '--roles': out.roles = next().split(',').map((r) => r.trim()).filter(Boolean); break
      case '--admin-token': out.adminToken = next(); break
      case '-h': case '--help': usage(0); break
      default:
        console.error(`unknown argument ${a}`)
        usage(2)
    }
  }
  if (!Number.isInteger(out.npcs) || out.npcs < 1) usage(2)
  if (!out.secret && !out.tokenCmd) out.secret = process.env.GATEWAY_SECRET || null
  if (!out.secret && !out.tokenCmd) {
    console.error('bots.js: give --secret, --token-cmd or GATEWAY_SECRET')
    process.exit(2)
  }
  if (out.roles.length && !out.adminToken && !out.secret) {
    console.error('bots.js: --roles needs --admin-token or --secret (roles are set over REST)')
    process.exit(2)
  }
  return out
}

/** Create the NPC with its role over REST, or set the role of one that exists. */
async function registerRole (opts, npc, role) {
  const base = opts.gateway.replace(/^ws/, 'http').replace(/\/+$/, '')
  const token = opts.adminToken ||
    jwt.sign({ sub: 'bots.js', role: 'admin' }, opts.secret, { algorithm: 'HS256', expiresIn: '1h' })
  const headers = { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }
  let res = await fetch(`${base}/api/npcs`, {
    method: 'POST', headers, body: JSON.stringify({ id: npc, role })
  })
  if (res.status === 409) {
    res = await fetch(`${base}/api/npcs/${encodeURIComponent(npc)}`, {
      method: 'PATCH', headers, body: JSON.stringify({ role })
    })
  }
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`)
}

const isWander = (commandId) => String(commandId).startsWith('wander-')

function tokenSource (opts, npc) {
  if (opts.secret) {
    // Fresh on every (re)connect: a long-running bot never presents an expired token.
    return () => jwt.sign({ sub: npc, role: 'npc' }, opts.secret, { algorithm: 'HS256', expiresIn: '24h' })
  }
  const cmd = opts.tokenCmd.includes('{npc}')
    ? opts.tokenCmd.split('{npc}').join(npc)
    : `${opts.tokenCmd} ${npc}`
  let cached = null
  let reuseUntil = 0
  let pending = null
  return () => {
    // The command is slow (a Python start-up): reuse its token while over half of its
    // lifetime is left (the bridge refreshes when a fifth is left, so it always gets a newer
    // one). Run it without blocking, so the other bots keep playing meanwhile.
    if (cached && Date.now() < reuseUntil) return cached
    if (!pending) {
      pending = execAsync(cmd, { encoding: 'utf8' })
        .then(({ stdout }) => {
          cached = stdout.trim()
          const exp = tokenExp(cached)
          const now = Date.now()
          reuseUntil = exp === null ? now : now + (exp * 1000 - now) / 2
          return cached
        })
        .finally(() => { pending = null })
    }
    return pending
  }
}

function main () {
  const opts = parseArgs(process.argv.slice(2))
  const [host, portText] = opts.server.split(':')
  const port = Number(portText || 25565)
  const out = (record) => {
    if (opts.json) process.stdout.write(JSON.stringify(record) + '\n')
  }
  const say = (line) => { if (opts.verbose || !opts.json) console.error(line) }
  const bots = []

  function startBot (n) {
    const entry = { name: `${opts.prefix}${n}`, bot: null, link: null, home: null, wanderTimer: null, ended: true, joins: 0, operator: null }
    bots.push(entry)
    if (!opts.roles.length) return join(entry)
    const role = opts.roles[(n - opts.first) % opts.roles.length]
    registerRole(opts, entry.name, role)
      .catch((err) => say(`${entry.name}: role ${role} not registered: ${err.message}`))
      .finally(() => join(entry))
  }

  // One bot joins the game; it joins again (after a jittered pause) when it is kicked, the
  // connection drops, or the login does not finish in time (a busy server can stall logins).
  function join (entry) {
    const name = entry.name
    entry.joins++
    entry.ended = false
    const bot = mineflayer.createBot({
      host,
      port,
      username: name,
      version: opts.version,
      auth: 'offline',
      hideErrors: true,
      checkTimeoutInterval: 60000
    })
    entry.bot = bot
    bot.loadPlugin(pathfinder)
    // Every position the server imposes (login, the re-send after login, teleports): the tests
    // wait for flying-squid's second one, which resets the look, before they turn a bot.
    bot.on('forcedMove', () => out({ bot: name, kind: 'forced' }))
    const joinTimer = setTimeout(() => {
      say(`${name} did not spawn within ${opts.joinTimeoutS} s: joining again`)
      bot.end('join timeout')
    }, opts.joinTimeoutS * 1000)
    bot.once('spawn', () => {
      clearTimeout(joinTimer)
      entry.inGame = true
      const p = bot.entity.position
      entry.home = entry.home || p.clone()
      out({ bot: name, kind: 'spawn', x: p.x, y: p.y, z: p.z })
      say(`${name} spawned at ${p.x.toFixed(1)} ${p.y.toFixed(1)} ${p.z.toFixed(1)}`)
      entry.link = attachGateway(bot, {
        url: opts.gateway,
        token: tokenSource(opts, name),
        planner: opts.planner,
        streamWorld: opts.streamWorld,
        onReport: (record) => {
          out({ bot: name, ...record })
          if (opts.wander) wanderAfter(entry, record)
        },
        log: (line) => say(`${name}: ${line}`)
      })
      entry.link.on('fatal', (err) => say(`${name}: ${err.message}`))
      if (opts.wander) scheduleWander(entry)
    })
    bot.on('kicked', (reason) => say(`${name} kicked: ${typeof reason === 'string' ? reason : JSON.stringify(reason)}`))
    bot.on('error', (err) => say(`${name} error: ${err.message}`))
    bot.on('end', (reason) => {
      clearTimeout(joinTimer)
      entry.ended = true
      entry.inGame = false
      clearTimeout(entry.wanderTimer)
      entry.operator = null
      if (entry.link) entry.link.close()
      entry.link = null
      out({ bot: name, kind: 'end', reason: String(reason) })
      say(`${name} left the game (${reason})`)
      if (stopping) return
      const pause = Math.min(30000, 1000 * 2 ** Math.min(entry.joins, 5)) * (0.5 + Math.random() / 2)
      setTimeout(() => { if (!stopping) join(entry) }, pause)
    })
  }

  // Operator commands win over wandering: an operator's command stops the wander timer (its goto
  // interrupts the wander walk), and wandering resumes only when that command's task has ended.
  function wanderAfter (entry, record) {
    if (record.kind === 'command' && !isWander(record.id)) {
      entry.operator = String(record.id)
      clearTimeout(entry.wanderTimer)
    } else if (record.kind === 'event' && record.name.startsWith('task:')) {
      const command = String(record.data.command)
      if (isWander(command)) {
        if (entry.operator === null) scheduleWander(entry)
      } else if (command === entry.operator) {
        entry.operator = null
        scheduleWander(entry)
      }
    }
  }

  let wanderSeq = 0
  function scheduleWander (entry) {
    clearTimeout(entry.wanderTimer)
    // A pause between walks, like a player looking around.
    entry.wanderTimer = setTimeout(() => {
      if (entry.ended || !entry.link || !entry.home || entry.operator !== null) return
      const r = opts.wanderRadius
      const x = Math.floor(entry.home.x + (Math.random() * 2 - 1) * r)
      const z = Math.floor(entry.home.z + (Math.random() * 2 - 1) * r)
      // The gateway's planner needs a goal cell (flat ground: the bot's own level); mineflayer's
      // walks to the column whatever its height.
      const args = opts.planner === 'gateway'
        ? { x, y: Math.floor(entry.bot.entity.position.y + 1e-3), z, planner: 'gateway' }
        : { x, z, planner: 'mineflayer' }
      entry.link.runCommand({ id: `wander-${++wanderSeq}`, action: 'goto', args })
    }, 1000 + Math.random() * 3000)
  }

  // Join one at a time, a little apart: a burst of logins makes the server drop some.
  for (let i = 0; i < opts.npcs; i++) {
    setTimeout(() => startBot(opts.first + i), i * opts.joinSpacingMs)
  }

  if (opts.stats > 0) {
    setInterval(() => {
      const sent = {}
      for (const b of bots) {
        for (const [type, n] of Object.entries((b.link && b.link.sent) || {})) sent[type] = (sent[type] || 0) + n
      }
      process.stdout.write(JSON.stringify({
        kind: 'stats',
        t: Date.now(),
        bots: bots.length,
        in_game: bots.filter(b => b.inGame).length,
        linked: bots.filter(b => b.link && b.link.connected).length,
        sent
      }) + '\n')
    }, opts.stats * 1000).unref()
  }

  if (opts.stdin) {
    const rl = require('readline').createInterface({ input: process.stdin })
    rl.on('line', (line) => {
      let cmd
      try {
        cmd = JSON.parse(line)
      } catch (_) {
        return say(`stdin: not JSON: ${line}`)
      }
      const entry = bots.find(b => b.name === cmd.bot)
      if (!entry || !entry.link) return out({ bot: cmd.bot, kind: 'error', message: 'no such bot (yet)', id: cmd.id })
      entry.link.runCommand({ id: cmd.id, action: cmd.action, args: cmd.args || {} })
    })
  }

  let stopping = false
  const stop = () => {
    if (stopping) process.exit(0)
    stopping = true
    for (const b of bots) {
      clearTimeout(b.wanderTimer)
      if (b.link) b.link.close()
      if (b.bot && !b.ended) {
        b.bot.once('end', check)
        try { b.bot.quit('bye') } catch (_) {}
      }
    }
    // Leave once every bot has left the game (or at once if none is in it).
    function check () { if (bots.every(b => b.ended)) process.exit(0) }
    check()
    setTimeout(() => process.exit(0), 3000).unref()
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
}

main()
