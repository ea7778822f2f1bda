// A stock Yjs client (yjs + y-websocket, no WebHost extensions) driven from Python tests.
// Usage: node stock_client.mjs --server ws://host:port/sync --room TENANT [--token T]
//          [--write COLLECTION ID JSON_FIELDS]... [--expect COLLECTION ID]... [--timeout SECONDS]
// Prints one JSON line: {"synced", "closeCodes", "found", "doc"} and exits 0, or 1 on timeout.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const args = { writes: [], expects: [], timeout: 10, token: null }
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i++) {
  const flag = argv[i]
  if (flag === '--server') args.server = argv[++i]
  else if (flag === '--room') args.room = argv[++i]
  else if (flag === '--token') args.token = argv[++i]
  else if (flag === '--timeout') args.timeout = Number(argv[++i])
  else if (flag === '--write') args.writes.push([argv[++i], argv[++i], JSON.parse(argv[++i])])
  else if (flag === '--expect') args.expects.push([argv[++i], argv[++i]])
  else throw new Error(`unknown flag ${flag}`)
}

const doc = new Y.Doc()
const closeCodes = []
const provider = new WebsocketProvider(args.server, args.room, doc, {
  WebSocketPolyfill: WebSocket,
  params: args.token ? { token: args.token } : {},
  disableBc: true,
  maxBackoffTime: 500
})
provider.on('connection-close', (event) => { if (event) closeCodes.push(event.code) })

const report = (ok, extra = {}) => {
  const out = { synced: provider.synced, closeCodes, ...extra, doc: {} }
  for (const name of ['vehicles', 'drivers', 'routes', 'geofences']) out.doc[name] = doc.getMap(name).toJSON()
  process.stdout.write(JSON.stringify(out) + '\n')
  provider.destroy()
  process.exit(ok ? 0 : 1)
}

const deadline = setTimeout(() => report(false, { error: 'timeout' }), args.timeout * 1000)

const whenSynced = () => new Promise((resolve) => {
  if (provider.synced) resolve()
  else provider.once('sync', (synced) => synced && resolve())
})

const allExpected = () => args.expects.every(([c, id]) => doc.getMap(c).has(id))

const drained = () => new Promise((resolve) => {
  const check = () => {
    const ws = provider.ws
    if (ws && ws.readyState === 1 && ws.bufferedAmount === 0) resolve()
    else setTimeout(check, 20)
  }
  check()
})

await whenSynced()
doc.transact(() => {
  for (const [collection, id, fields] of args.writes) {
    // The contract shape: a nested Y.Map per record, one entry per field.
    const record = new Y.Map()
    for (const [key, value] of Object.entries(fields)) record.set(key, value)
    doc.getMap(collection).set(id, record)
  }
})
await new Promise((resolve) => {
  if (allExpected()) return resolve()
  const onChange = () => { if (allExpected()) { doc.off('update', onChange); resolve() } }
  doc.on('update', onChange)
})
await drained()
// The server has our frames once the socket buffer is empty; give it a moment to read them.
setTimeout(() => { clearTimeout(deadline); report(true, { found: args.expects.length }) }, 300)
