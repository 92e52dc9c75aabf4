#!/usr/bin/env node
'use strict'
/*
 * A local Minecraft world for tests and demos: flying-squid (a Minecraft server written in
 * Node) speaking 1.16.5 in offline mode, with a flat or a small generated world kept in memory.
 *
 *   node scripts/mineflayer/server.js --port 25565 [--world flat|generated] [--control-port 0]
 *
 * On a free control port (or the one given) it serves a tiny HTTP API on 127.0.0.1 so tests can
 * shape the world:
 *
 *   GET  /health                                  -> {"ok":true,"players":[names…]}
 *   GET  /block?x=&y=&z=                          -> {"name":"stone","stateId":1}
 *   POST /setblock {"x","y","z","block":"stone"}  -> {"ok":true}
 *   POST /fill {"from":[x,y,z],"to":[x,y,z],"block":"air"} -> {"ok":true,"count":N}
 *   GET  /player?name=                            -> {"x","y","z","yaw","pitch"} as the server has it
 *                                                    (yaw/pitch in degrees, to 1/256 of a turn)
 *
 * When both ports listen it prints one JSON line on stdout:
 *   {"event":"ready","port":25565,"control":PORT,"version":"1.16.5","ground":5}
 * ("ground" is the y a bot stands at on the flat world). SIGINT/SIGTERM stop it.
 */

const http = require('http')
const { Vec3 } = require('vec3')
const mcServer = require('flying-squid')

const VERSION = '1.16.5'
const FLAT_GROUND_Y = 5 // bedrock at 0, dirt 1..3, grass at 4: feet stand at y=5

function parseArgs (argv) {
  const out = {
    port: 25565,
    world: 'flat',
    controlPort: 0,
    host: '127.0.0.1',
    maxPlayers: 200,
    viewDistance: 4,
    gameMode: 0,
    spawn: null,
    verbose: false
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`)
      return argv[++i]
    }
    if (a === '--port') out.port = Number(next())
    else if (a === '--host') out.host = next()
    else if (a === '--world') out.world = next()
    else if (a === '--control-port') out.controlPort = Number(next())
    else if (a === '--max-players') out.maxPlayers = Number(next())
    else if (a === '--view-distance') out.viewDistance = Number(next())
    else if (a === '--gamemode') out.gameMode = Number(next())
    else if (a === '--spawn') out.spawn = next().split(',').map(Number) // "x,z" centre of spawns
    else if (a === '--verbose') out.verbose = true
    else if (a === '--help' || a === '-h') {
      console.log('usage: node server.js --port P [--world flat|generated] [--control-port P] ' +
        '[--max-players N] [--view-distance N] [--gamemode 0|1] [--spawn X,Z] [--verbose]')
      process.exit(0)
    } else throw new Error(`unknown argument ${a}`)
  }
  if (!['flat', 'generated'].includes(out.world)) throw new Error('--world is flat or generated')
  return out
}

function generation (world) {
  if (world === 'flat') return { name: 'superflat', options: { worldHeight: 80 } }
  // diamond_square with a low ceiling: small hills, quick to generate
  return { name: 'diamond_square', options: { worldHeight: 80, seed: 1234 } }
}

function readBody (req) {
  return new Promise((resolve, reject) => {
    const chunks = []
    req.on('data', c => chunks.push(c))
    req.on('end', () => {
      try {
        resolve(chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {})
      } catch (err) {
        reject(err)
      }
    })
    req.on('error', reject)
  })
}

function main () {
  const opts = parseArgs(process.argv.slice(2))
  const serv = mcServer.createMCServer({
    motd: 'AICraft test world',
    port: opts.port,
    host: opts.host,
    'max-players': opts.maxPlayers,
    'online-mode': false,
    logging: opts.verbose,
    gameMode: opts.gameMode,
    difficulty: 0,
    worldFolder: undefined, // in memory: nothing written to disk
    generation: generation(opts.world),
    kickTimeout: 30000,
    plugins: {},
    modpe: false,
    'view-distance': opts.viewDistance,
    'player-list-text': { header: { text: 'AICraft' }, footer: { text: 'test world' } },
    'everybody-op': true,
    'max-entities': 100,
    version: VERSION
  })

  const registry = serv.registry

  function stateOf (name) {
    const block = registry.blocksByName[name]
    if (!block) throw new Error(`unknown block ${name}`)
    return block.defaultState ?? block.minStateId
  }

  async function setBlock (x, y, z, name) {
    // serv.setBlock updates the world and sends the change to every player that sees it
    await serv.setBlock(serv.overworld, new Vec3(x, y, z).floored(), stateOf(name))
  }

  if (opts.world === 'flat' || opts.spawn) {
    // Spawns spread over a small square so bots do not stand in one another.
    const [cx, cz] = opts.spawn || [0, 0]
    serv.getSpawnPoint = async (world) => {
      const x = cx + Math.floor(Math.random() * 24) - 12
      const z = cz + Math.floor(Math.random() * 24) - 12
      let y = opts.world === 'flat' ? FLAT_GROUND_Y : 100
      if (opts.world !== 'flat') {
        while (y > 1 && (await world.getBlockType(new Vec3(x, y - 1, z))) === 0) y--
      }
      return new Vec3(x + 0.5, y, z + 0.5)
    }
  }

  const api = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x')
    const reply = (status, body) => {
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(body))
    }
    try {
      if (req.method === 'GET' && url.pathname === '/health') {
        return reply(200, { ok: Boolean(serv.isReady), players: serv.players.map(p => p.username) })
      }
      if (req.method === 'GET' && url.pathname === '/block') {
        const p = ['x', 'y', 'z'].map(k => Number(url.searchParams.get(k)))
        const stateId = await serv.overworld.getBlockStateId(new Vec3(...p))
        const block = registry.blocksByStateId[stateId]
        return reply(200, { name: block ? block.name : null, stateId })
      }
      if (req.method === 'GET' && url.pathname === '/player') {
        const player = serv.players.find(p => p.username === url.searchParams.get('name'))
        if (!player) return reply(404, { error: 'no such player' })
        // flying-squid keeps the look as protocol bytes (1/256 of a turn, Minecraft's convention)
        const { x, y, z } = player.position
        const deg = (b) => (b * 360) / 256
        return reply(200, { x, y, z, yaw: deg(player.yaw || 0), pitch: deg(player.pitch || 0) })
      }
      if (req.method === 'POST' && url.pathname === '/tp') {
        // {name, x, y, z}: move a player (tests put bots far apart without walking there)
        const b = await readBody(req)
        const player = serv.players.find(p => p.username === b.name)
        if (!player) return reply(404, { error: 'no such player' })
        await player.teleport(new Vec3(Number(b.x), Number(b.y), Number(b.z)))
        await player.worldSendRestOfChunks() // flying-squid sends chunks on walking, not on a teleport
        return reply(200, { ok: true })
      }
      if (req.method === 'POST' && url.pathname === '/setblock') {
        const b = await readBody(req)
        await setBlock(b.x, b.y, b.z, b.block || 'stone')
        return reply(200, { ok: true })
      }
      if (req.method === 'POST' && url.pathname === '/fill') {
        const b = await readBody(req)
        const [x0, y0, z0] = b.from
        const [x1, y1, z1] = b.to
        let count = 0
        for (let x = Math.min(x0, x1); x <= Math.max(x0, x1); x++) {
          for (let y = Math.min(y0, y1); y <= Math.max(y0, y1); y++) {
            for (let z = Math.min(z0, z1); z <= Math.max(z0, z1); z++) {
              await setBlock(x, y, z, b.block || 'stone')
              count++
            }
          }
        }
        return reply(200, { ok: true, count })
      }
      reply(404, { error: 'not found' })
    } catch (err) {
      reply(400, { error: String(err && err.message ? err.message : err) })
    }
  })

  let announced = false
  function announce () {
    if (announced || !serv.isReady || !api.listening) return
    announced = true
    console.log(JSON.stringify({
      event: 'ready',
      port: opts.port,
      control: api.address().port,
      version: VERSION,
      world: opts.world,
      ground: opts.world === 'flat' ? FLAT_GROUND_Y : null
    }))
  }
  serv.on('ready', announce)
  serv.on('error', (err) => {
    console.error('server error:', err && err.message ? err.message : err)
    // Not listening (port taken…): say so by exiting, never by hanging half-started.
    if (!serv.isReady || (err && err.code === 'EADDRINUSE')) process.exit(1)
  })
  api.on('error', (err) => {
    console.error('control API error:', err.message)
    process.exit(1)
  })
  api.listen(opts.controlPort, '127.0.0.1', announce)

  let stopping = false
  const stop = () => {
    if (stopping) process.exit(0)
    stopping = true
    api.close()
    // Kicking every player can hang on a half-open socket; give it a moment then leave anyway.
    setTimeout(() => process.exit(0), 2000).unref()
    Promise.resolve(serv.quit ? serv.quit('server stopping') : null)
      .catch(() => {})
      .then(() => process.exit(0))
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
}

main()
