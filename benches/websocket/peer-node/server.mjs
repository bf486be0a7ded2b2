// The Node `ws` peer of Herald's WebSocket benchmark: the same protocol subset as Herald and the
// tokio-tungstenite peer (src/bin/peer.rs), on one port.
//
// - `GET /v1/ws` upgrades (ws, `noServer`, no permessage-deflate): `{"op":"subscribe","room"}`
//   → `{"op":"subscribed","room"}`; `{"op":"ping"}` → `{"op":"pong"}`.
// - `POST /v1/broadcast` (node:http, keep-alive; pipelined requests are answered in order): the
//   body is parsed, `id`, `timestamp`, `priority`, `persistent`, `source` and
//   `target.exclude_users` get Herald's defaults so the frame has Herald's shape and size, the
//   frame text is serialized once and turned into one Buffer, and every subscriber gets
//   `ws.send(buffer, {binary: false})` (ws adds only the 2–4 byte header per connection; the
//   payload is not copied or re-encoded). A subscriber with more than QUEUE_BYTES unsent is
//   dropped from the room (Herald closes such a connection with 1013), counted on stderr.
//   Answer: 202 `{"delivered":N,"id":…}`.
//
// Usage: node --expose-gc server.mjs --listen 127.0.0.1:PORT (SIGUSR2: full GC). Prints `node-ws: listening on http://ADDR`.
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { WebSocketServer } from 'ws';

// About 65,536 frames of ~300 bytes, the benchmark's Herald send_queue_frames.
const QUEUE_BYTES = 65536 * 320;

let listen = '127.0.0.1:0';
for (let i = 2; i < process.argv.length; i += 2) {
  if (process.argv[i] === '--listen') listen = process.argv[i + 1];
  else throw new Error(`unknown argument ${process.argv[i]}`);
}
const [host, port] = [listen.slice(0, listen.lastIndexOf(':')), Number(listen.slice(listen.lastIndexOf(':') + 1))];

/** room → Set of subscribed sockets */
const rooms = new Map();
let droppedSlow = 0;

function subscribe(ws, room) {
  let members = rooms.get(room);
  if (!members) rooms.set(room, (members = new Set()));
  members.add(ws);
  ws.rooms.add(room);
}

function forget(ws) {
  for (const room of ws.rooms) {
    const members = rooms.get(room);
    if (!members) continue;
    members.delete(ws);
    if (members.size === 0) rooms.delete(room);
  }
}

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function broadcast(body, res) {
  let event;
  try {
    event = JSON.parse(body);
  } catch {
    return reply(res, 400, { code: 'invalid_json' });
  }
  const target = event && event.target;
  if (!target || typeof target.type !== 'string' || typeof target.id !== 'string') {
    return reply(res, 400, { code: 'invalid_request', message: 'target' });
  }
  const room = `${target.type}:${target.id}`;
  const id = event.id ?? randomUUID();
  // Herald's event, keys in Herald's (sorted) order.
  const frame = {
    event: {
      data: event.data,
      event: event.event,
      id,
      persistent: event.persistent ?? false,
      priority: event.priority ?? 'normal',
      source: event.source ?? {},
      target: { exclude_users: target.exclude_users ?? [], id: target.id, type: target.type },
      timestamp: event.timestamp ?? new Date().toISOString().replace('Z', '000Z'),
      type: event.type,
    },
    op: 'event',
    room,
  };
  const buffer = Buffer.from(JSON.stringify(frame));
  let delivered = 0;
  const members = rooms.get(room);
  if (members) {
    for (const ws of members) {
      if (ws.bufferedAmount > QUEUE_BYTES) {
        droppedSlow += 1;
        console.error(`node-ws: a subscriber of ${room} has ${ws.bufferedAmount} bytes unsent: dropped from the room`);
        members.delete(ws);
        continue;
      }
      ws.send(buffer, { binary: false });
      delivered += 1;
    }
  }
  reply(res, 202, { delivered, id });
}

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/v1/broadcast') return reply(res, 404, { code: 'not_found' });
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => broadcast(Buffer.concat(chunks).toString('utf8'), res));
});
// The publisher's connection may wait while 1,000 subscribers connect.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 121_000;
server.maxConnections = 20_000;

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false });
server.on('upgrade', (req, socket, head) => {
  if (!req.url.startsWith('/v1/ws')) {
    socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.rooms = new Set();
    ws.on('message', (data, isBinary) => {
      if (isBinary) return ws.close(1003, 'binary frames are not supported');
      let op;
      try {
        op = JSON.parse(data.toString('utf8'));
      } catch {
        return ws.send(JSON.stringify({ code: 'invalid_json', message: 'not JSON', op: 'error' }));
      }
      if (op.op === 'subscribe' && typeof op.room === 'string') {
        subscribe(ws, op.room);
        ws.send(JSON.stringify({ op: 'subscribed', room: op.room }));
      } else if (op.op === 'ping') {
        ws.send('{"op":"pong"}');
      } else {
        ws.send(JSON.stringify({ code: 'invalid_request', message: 'unknown op', op: 'error' }));
      }
    });
    ws.on('close', () => forget(ws));
    ws.on('error', () => forget(ws));
  });
});

server.listen(port, host, () => {
  const address = server.address();
  console.log(`node-ws: listening on http://${address.address}:${address.port}`);
});
// The benchmark's RSS phase asks for a full collection before it reads VmRSS (node --expose-gc).
process.on('SIGUSR2', () => {
  if (typeof global.gc === 'function') global.gc();
});
process.on('SIGTERM', () => {
  if (droppedSlow) console.error(`node-ws: ${droppedSlow} subscribers dropped as slow`);
  process.exit(0);
});
