// End-to-end tests of Herald's WebSocket gateway (`GET /v1/ws`) with the Node `ws` client, run
// against the real `herald` binary: an independent second client library beside the Python suite
// (tests/e2e/websocket_test.py), covering targeting, exclusions, presence, a killed client,
// priorities and overflow, recovery with `since`, forbidden rooms and bad frames.
//
// Each test starts its own `herald serve --listen 127.0.0.1:0 --data <tmpdir> [--config FILE]`,
// reads the port from the `listening on http://127.0.0.1:PORT` line on stderr and stops it with
// SIGTERM (SIGKILL after a timeout). The binary is `$HERALD_BIN`, default `target/debug/herald`
// relative to the repository root.
//
// Run from the repository root:
//
//     cargo build -q -p herald-core --bin herald
//     npm ci --prefix tests/e2e/node
//     HERALD_BIN=target/debug/herald node --test tests/e2e/node/
//
// Every connection, receive, request and child process has a timeout, and every loop a count or a
// deadline. The contract is PROTOCOL.md (HTTP API: /v1/broadcast, /v1/presence/{room}; WebSocket).
//
// "Gets nothing" is shown without sleeping: after the event that must not arrive, a `low` marker
// event is broadcast to the connection, and its next event frame must be the marker (frames to one
// connection leave FIFO within a priority, and `low` is the lowest).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, '..', '..', '..');
const HERALD_BIN = path.resolve(REPO_ROOT, process.env.HERALD_BIN || 'target/debug/herald');
const WS_MODULE = createRequire(import.meta.url).resolve('ws');

const STARTUP_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;
const IO_TIMEOUT_MS = 10_000;
// A frame the server owes us right now (a reply, an event to a reading client) arrives within this.
const RECV_TIMEOUT_MS = 5_000;
const LISTEN_RE = /listening on http:\/\/127\.0\.0\.1:(\d+)/;
const PRESENCE_OPS = ['join', 'leave'];
const JWT_SECRET = 'node-e2e-secret-0123456789abcdef0123456789';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Rejects after `ms` with `what` unless `promise` settles first. */
function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not within ${ms} ms: ${typeof what === 'function' ? what() : what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------------
// The server process

class Herald {
  constructor(config) {
    this.dir = mkdtempSync(path.join(tmpdir(), 'herald-node-e2e-'));
    this.configPath = null;
    if (config !== undefined) {
      this.configPath = path.join(this.dir, 'herald.toml');
      writeFileSync(this.configPath, config);
    }
    this.stderr = '';
    this.port = null;
    this.proc = null;
    this.exited = null;
    this.closers = []; // connections to end when the test is over
  }

  async start() {
    const args = ['serve', '--listen', '127.0.0.1:0', '--data', path.join(this.dir, 'data')];
    if (this.configPath) args.push('--config', this.configPath);
    this.proc = spawn(HERALD_BIN, args, { cwd: this.dir, stdio: ['ignore', 'ignore', 'pipe'] });
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => resolve({ code, signal })));
    const listening = new Promise((resolve, reject) => {
      this.proc.once('error', reject);
      this.proc.stderr.on('data', (chunk) => {
        // Keep reading (a full pipe would block the server's logging); keep the last 64 KiB.
        this.stderr = (this.stderr + chunk.toString()).slice(-65536);
        const match = LISTEN_RE.exec(this.stderr);
        if (match) resolve(Number(match[1]));
      });
      this.exited.then(({ code }) => reject(new Error(`herald exited with ${code} before listening:\n${this.stderr}`)));
    });
    try {
      this.port = await within(listening, STARTUP_TIMEOUT_MS, `herald listening\n${this.stderr}`);
    } catch (error) {
      this.proc.kill('SIGKILL');
      throw error;
    }
    return this;
  }

  async stop() {
    for (const close of this.closers) close();
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGTERM');
      try {
        await within(this.exited, STOP_TIMEOUT_MS, 'herald exiting after SIGTERM');
      } catch (error) {
        this.proc.kill('SIGKILL');
        await within(this.exited, STOP_TIMEOUT_MS, 'herald exiting after SIGKILL');
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  async request(method, urlPath, body) {
    const init = { method, signal: AbortSignal.timeout(IO_TIMEOUT_MS), headers: {} };
    if (body !== undefined) {
      init.body = typeof body === 'string' ? body : JSON.stringify(body);
      init.headers['content-type'] = 'application/json';
    }
    const response = await fetch(`http://127.0.0.1:${this.port}${urlPath}`, init);
    const text = await response.text();
    return { status: response.status, text, json: () => JSON.parse(text) };
  }

  /** POST /v1/broadcast → its 202 answer. */
  async broadcast(event) {
    const response = await this.request('POST', '/v1/broadcast', event);
    assert.equal(response.status, 202, response.text);
    const answer = response.json();
    assert.equal(typeof answer.id, 'string', response.text);
    assert.equal(typeof answer.delivered, 'number', response.text);
    if (event.persistent) assert.equal(typeof answer.position, 'number', response.text);
    return answer;
  }

  /** Broadcasts a `low` marker event to `room`; returns its id (see the header comment). */
  async marker(room) {
    const id = crypto.randomUUID();
    await this.broadcast(wsEvent(room, 'test.marker', { marker: true }, { id, priority: 'low' }));
    return id;
  }

  /** GET /v1/presence/{room} → { user_id: connections }. */
  async presence(room) {
    const response = await this.request('GET', `/v1/presence/${room}`);
    assert.equal(response.status, 200, response.text);
    const body = response.json();
    assert.equal(body.room, room, response.text);
    return Object.fromEntries(body.members.map((m) => [m.user_id, m.connections]));
  }

  wsUrl({ userId, token } = {}) {
    const query = new URLSearchParams();
    if (userId !== undefined) query.set('user_id', userId);
    if (token !== undefined) query.set('token', token);
    const search = query.toString();
    return `ws://127.0.0.1:${this.port}/v1/ws${search ? `?${search}` : ''}`;
  }

  async peer(options = {}) {
    const peer = await Peer.connect(this.wsUrl(options), options);
    this.closers.push(() => peer.terminate());
    return peer;
  }
}

/** Runs `body(herald)` against a fresh server; stops it (and every peer) whatever happens. */
async function withHerald(config, body) {
  const herald = new Herald(config);
  await herald.start();
  try {
    await body(herald);
  } finally {
    await herald.stop();
  }
}

function targetOf(room) {
  if (room === null) return { type: 'all' };
  const at = room.indexOf(':');
  return { type: room.slice(0, at), id: room.slice(at + 1) };
}

/** A /v1/broadcast body for `room` (null: every connection). */
function wsEvent(room, event = 'task.updated', data = {}, fields = {}) {
  return { type: event.split('.')[0], event, data, target: targetOf(room), ...fields };
}

function makeJwt(sub, { secret = JWT_SECRET, ttlS = 3600, rooms } = {}) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const claims = { sub, exp: Math.floor(Date.now() / 1000) + ttlS };
  if (rooms !== undefined) claims.rooms = rooms;
  const input = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${input}.${crypto.createHmac('sha256', secret).update(input).digest('base64url')}`;
}

// ---------------------------------------------------------------------------------------------
// The client

class Peer {
  static connect(url, { bearer, userId } = {}) {
    const headers = bearer !== undefined ? { Authorization: `Bearer ${bearer}` } : {};
    const ws = new WebSocket(url, {
      headers,
      perMessageDeflate: false, // a compressed frame would hide its real size
      handshakeTimeout: IO_TIMEOUT_MS,
      maxPayload: 4 * 1024 * 1024,
    });
    ws.on('error', () => {}); // a failed handshake is reported through `reject` below
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new Peer(ws, userId ?? 'token-user')));
      ws.once('unexpected-response', (_request, response) => {
        const error = new Error(`upgrade refused with HTTP ${response.statusCode}`);
        error.status = response.statusCode;
        response.resume();
        ws.terminate();
        reject(error);
      });
      ws.once('error', reject);
    });
  }

  constructor(ws, name) {
    this.ws = ws;
    this.name = name;
    this.frames = []; // received, not yet taken
    this.seen = []; // every frame, for failure messages
    this.wake = null;
    this.closeCode = null;
    this.closed = false;
    ws.on('message', (data, isBinary) => {
      assert.ok(!isBinary, `${this.name}: a binary frame from the server`);
      const frame = JSON.parse(data.toString());
      this.frames.push(frame);
      this.seen.push(frame);
      this.notify();
    });
    ws.on('close', (code) => {
      this.closeCode = code;
      this.closed = true;
      this.notify();
    });
    ws.on('error', () => {}); // the close that follows is what the tests look at
  }

  notify() {
    if (this.wake) {
      const wake = this.wake;
      this.wake = null;
      wake();
    }
  }

  send(message) {
    this.ws.send(typeof message === 'string' || Buffer.isBuffer(message) ? message : JSON.stringify(message));
  }

  /** The next frame, within `timeoutMs`. */
  async recv(timeoutMs = RECV_TIMEOUT_MS) {
    const deadline = Date.now() + timeoutMs;
    for (let turn = 0; turn < 100_000; turn += 1) {
      if (this.frames.length) return this.frames.shift();
      if (this.closed) throw new Error(`${this.name}: closed (${this.closeCode}) while waiting for a frame`);
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`${this.name}: no frame within ${timeoutMs} ms; last: ${JSON.stringify(this.seen.slice(-3))}`);
      }
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    throw new Error(`${this.name}: too many wake-ups`);
  }

  /** The next frame whose op is `op`, passing over `skip` ops (presence diffs); others fail. */
  async next(op, { timeoutMs = RECV_TIMEOUT_MS, skip = PRESENCE_OPS } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (let turn = 0; turn < 10_000; turn += 1) {
      const frame = await this.recv(Math.max(0, deadline - Date.now()));
      if (frame.op === op) return frame;
      assert.ok(skip.includes(frame.op), `${this.name}: expected a \`${op}\` frame, got ${JSON.stringify(frame)}`);
    }
    throw new Error(`${this.name}: 10000 frames without a \`${op}\``);
  }

  async subscribe(room, since) {
    const message = { op: 'subscribe', room };
    if (since !== undefined) message.since = since;
    this.send(message);
    const frame = await this.next('subscribed');
    assert.equal(frame.room, room);
    return frame;
  }

  async ping() {
    this.send({ op: 'ping' });
    assert.equal((await this.next('pong')).op, 'pong');
  }

  async event(timeoutMs = RECV_TIMEOUT_MS) {
    return this.next('event', { timeoutMs });
  }

  /** The next event frame is the marker: nothing queued before it reached this connection. */
  async expectMarker(markerId, skip = PRESENCE_OPS) {
    const frame = await this.next('event', { skip });
    assert.equal(frame.event.id, markerId, `${this.name} got an event it should not have: ${JSON.stringify(frame)}`);
  }

  /** Every frame until none comes for `quietMs`, or the connection closes, or `timeoutMs`. */
  async drain(quietMs, timeoutMs) {
    const frames = [];
    const deadline = Date.now() + timeoutMs;
    for (let turn = 0; turn < 10_000_000 && Date.now() < deadline; turn += 1) {
      try {
        frames.push(await this.recv(Math.min(quietMs, Math.max(0, deadline - Date.now()))));
      } catch (error) {
        return frames; // quiet, or closed (see closeCode)
      }
    }
    return frames;
  }

  /** The close code the connection ended with, waiting up to `timeoutMs`. */
  async closedWith(timeoutMs = RECV_TIMEOUT_MS) {
    const deadline = Date.now() + timeoutMs;
    for (let turn = 0; turn < 100_000 && !this.closed; turn += 1) {
      if (Date.now() >= deadline) throw new Error(`${this.name}: not closed within ${timeoutMs} ms`);
      this.frames.length = 0;
      try {
        await this.recv(Math.max(1, deadline - Date.now()));
      } catch (error) {
        if (!this.closed) throw error;
      }
    }
    return this.closeCode;
  }

  terminate() {
    this.ws.terminate();
  }
}

/** The HTTP status that refused the upgrade (fails if it was accepted). */
async function refusedWith(herald, options) {
  try {
    const peer = await herald.peer(options);
    peer.terminate();
  } catch (error) {
    if (error.status !== undefined) return error.status;
    throw error;
  }
  throw new Error(`the upgrade was accepted: ${JSON.stringify(options)}`);
}

/** The most a loopback connection's kernel buffers can hold for a reader that paused (Linux; else 8 MiB + 1 MiB). */
function kernelBufferBytes() {
  try {
    const wmem = Number(readFileSync('/proc/sys/net/ipv4/tcp_wmem', 'utf8').trim().split(/\s+/)[2]);
    const wmemMax = Number(readFileSync('/proc/sys/net/core/wmem_max', 'utf8').trim());
    const rmemDefault = Number(readFileSync('/proc/sys/net/ipv4/tcp_rmem', 'utf8').trim().split(/\s+/)[1]);
    const total = Math.max(wmem, 2 * wmemMax) + 4 * rmemDefault;
    if (Number.isFinite(total) && total > 0) return total;
  } catch (error) {
    // not Linux: fall through
  }
  return 9 * 1024 * 1024;
}

const QUEUE_FRAMES = 16;
const SMALL_QUEUE_CONFIG = `[websocket]\nsend_queue_frames = ${QUEUE_FRAMES}\n`;

// ---------------------------------------------------------------------------------------------
// Tests

test('a broadcast reaches exactly its room, everyone, or one user', { timeout: 30_000 }, async () => {
  await withHerald(undefined, async (herald) => {
    const u1 = await herald.peer({ userId: 'u1' });
    const u2 = await herald.peer({ userId: 'u2' });
    const u3 = await herald.peer({ userId: 'u3' });
    await u1.subscribe('project:p1');
    await u2.subscribe('project:p2');

    let answer = await herald.broadcast(wsEvent('project:p1', 'task.updated', { n: 1 }, { source: { user_id: 'u9' } }));
    assert.equal(answer.delivered, 1);
    let frame = await u1.event();
    assert.equal(frame.room, 'project:p1');
    assert.equal(frame.event.id, answer.id);
    assert.equal(frame.event.event, 'task.updated');
    assert.deepEqual(frame.event.data, { n: 1 });
    assert.equal(frame.event.priority, 'normal');
    assert.equal(frame.event.persistent, false);
    assert.ok(!('position' in frame.event), 'a non-persistent event with a position');

    answer = await herald.broadcast(wsEvent(null, 'system.notice', { all: true }));
    assert.equal(answer.delivered, 3);
    for (const peer of [u1, u2, u3]) {
      frame = await peer.event();
      assert.equal(frame.room, null);
      assert.equal(frame.event.id, answer.id);
    }

    answer = await herald.broadcast(wsEvent('user:u3', 'notification.created', { to: 'u3' }));
    assert.equal(answer.delivered, 1);
    frame = await u3.event();
    assert.equal(frame.room, 'user:u3');
    assert.equal(frame.event.id, answer.id);

    answer = await herald.broadcast(wsEvent('project:p2', 'task.moved', { n: 2 }));
    assert.equal((await u2.event()).event.id, answer.id);

    const marker = await herald.marker(null);
    for (const peer of [u1, u2, u3]) await peer.expectMarker(marker);
  });
});

test('exclude_users skips every connection of the excluded user', { timeout: 30_000 }, async () => {
  await withHerald(undefined, async (herald) => {
    const room = 'project:ex';
    const u1 = await herald.peer({ userId: 'u1' });
    const u2a = await herald.peer({ userId: 'u2' });
    const u2b = await herald.peer({ userId: 'u2' });
    for (const peer of [u1, u2a, u2b]) await peer.subscribe(room);
    const target = { ...targetOf(room), exclude_users: ['u2'] };
    const answer = await herald.broadcast(wsEvent(room, 'task.updated', { n: 1 }, { target }));
    assert.equal(answer.delivered, 1);
    const frame = await u1.event();
    assert.equal(frame.event.id, answer.id);
    assert.deepEqual(frame.event.target.exclude_users, ['u2']);
    const marker = await herald.marker(room);
    for (const peer of [u1, u2a, u2b]) await peer.expectMarker(marker);
  });
});

test('one user on two connections: one join, and a leave only when both are gone', { timeout: 30_000 }, async () => {
  await withHerald(undefined, async (herald) => {
    const room = 'project:pres';
    const u1 = await herald.peer({ userId: 'u1' });
    await u1.subscribe(room);
    const first = await herald.peer({ userId: 'u2' });
    const subscribed = await first.subscribe(room);
    assert.ok(subscribed.presence.some((m) => m.user_id === 'u1' && m.connections === 1), JSON.stringify(subscribed));
    assert.deepEqual(await u1.next('join', { skip: [] }), { op: 'join', room, user_id: 'u2' });

    const second = await herald.peer({ userId: 'u2' });
    await second.subscribe(room);
    let marker = await herald.marker(room);
    await u1.expectMarker(marker, []); // no second join
    await first.expectMarker(marker);
    assert.deepEqual(await herald.presence(room), { u1: 1, u2: 2 });
    u1.send({ op: 'presence', room });
    const reply = await u1.next('presence');
    assert.deepEqual(Object.fromEntries(reply.members.map((m) => [m.user_id, m.connections])), { u1: 1, u2: 2 });

    first.send({ op: 'unsubscribe', room });
    assert.deepEqual(await first.next('unsubscribed'), { op: 'unsubscribed', room });
    marker = await herald.marker(room);
    await u1.expectMarker(marker, []); // u2 is still there on its other connection
    assert.deepEqual(await herald.presence(room), { u1: 1, u2: 1 });

    second.ws.close(1000);
    assert.deepEqual(await u1.next('leave', { skip: [] }), { op: 'leave', room, user_id: 'u2' });
    assert.deepEqual(await herald.presence(room), { u1: 1 });
  });
});

const KILLED_CLIENT = `
const WebSocket = require(process.argv[1]);
const ws = new WebSocket(process.argv[2], { perMessageDeflate: false, handshakeTimeout: 10000 });
ws.on('open', () => ws.send(JSON.stringify({ op: 'subscribe', room: process.argv[3] })));
ws.on('message', (data) => { if (JSON.parse(data.toString()).op === 'subscribed') console.log('ready'); });
ws.on('error', (error) => { console.error(String(error)); process.exit(2); });
setTimeout(() => process.exit(3), 60000);
`;

test('a client process killed with SIGKILL leaves the room', { timeout: 30_000 }, async () => {
  await withHerald(undefined, async (herald) => {
    const room = 'project:kill';
    const watcher = await herald.peer({ userId: 'u1' });
    await watcher.subscribe(room);
    const child = spawn(process.execPath, ['-e', KILLED_CLIENT, WS_MODULE, herald.wsUrl({ userId: 'u9' }), room], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    let output = '';
    child.stderr.on('data', (chunk) => {
      output += chunk;
    });
    try {
      await within(
        new Promise((resolve) =>
          child.stdout.on('data', (chunk) => {
            output += chunk;
            if (output.includes('ready')) resolve();
          }),
        ),
        15_000,
        () => `the child client subscribing: ${output}`,
      );
      assert.deepEqual(await watcher.next('join', { skip: [] }), { op: 'join', room, user_id: 'u9' });
      assert.deepEqual(await herald.presence(room), { u1: 1, u9: 1 });
      child.kill('SIGKILL');
      await within(exited, 10_000, 'the child exiting');
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    assert.deepEqual(await watcher.next('leave', { timeoutMs: 10_000, skip: [] }), { op: 'leave', room, user_id: 'u9' });
    const deadline = Date.now() + 5_000;
    let members = await herald.presence(room);
    while ('u9' in members && Date.now() < deadline) {
      await sleep(50);
      members = await herald.presence(room);
    }
    assert.deepEqual(members, { u1: 1 });
  });
});

test('queued criticals overtake lows, lows are dropped first, and the connection stays', { timeout: 60_000 }, async () => {
  await withHerald(SMALL_QUEUE_CONFIG, async (herald) => {
    const room = 'project:prio';
    const slow = await herald.peer({ userId: 'slow' });
    await slow.subscribe(room);
    slow.ws.pause(); // stop reading: the kernel buffers fill, then the server's queue
    const fillerBytes = 512 * 1024;
    const fillers = Math.ceil(kernelBufferBytes() / fillerBytes) + QUEUE_FRAMES + 4;
    const pad = 'f'.repeat(fillerBytes);
    let lowSeq = 0;
    for (let i = 0; i < fillers; i += 1) {
      await herald.broadcast(wsEvent(room, 'load.filler', { low_seq: lowSeq, pad }, { priority: 'low' }));
      lowSeq += 1;
    }
    await sleep(300);
    for (let i = 0; i < 8; i += 1) {
      await herald.broadcast(wsEvent(room, 'load.low', { low_seq: lowSeq }, { priority: 'low' }));
      lowSeq += 1;
    }
    for (let n = 0; n < 8; n += 1) {
      await herald.broadcast(wsEvent(room, 'load.critical', { critical: n }, { priority: 'critical' }));
    }
    slow.ws.resume();
    const frames = await slow.drain(1_500, 40_000);
    assert.ok(!slow.closed, `closed with ${slow.closeCode} although low frames could be dropped`);
    const events = frames.filter((f) => f.op === 'event').map((f) => f.event);
    const criticalAt = events.flatMap((e, i) => (e.priority === 'critical' ? [i] : []));
    assert.deepEqual(
      criticalAt.map((i) => events[i].data.critical),
      [0, 1, 2, 3, 4, 5, 6, 7],
      'a critical lost or out of order',
    );
    assert.equal(criticalAt[7] - criticalAt[0], 7, `lows came between the criticals (at ${criticalAt})`);
    const lows = events.filter((e) => e.priority === 'low').map((e) => e.data.low_seq);
    assert.deepEqual(lows, [...lows].sort((a, b) => a - b), 'lows out of broadcast order');
    assert.ok(lows.length < lowSeq, `all ${lowSeq} lows arrived: none was dropped`);
    assert.ok(
      events.slice(criticalAt[7] + 1).some((e) => e.priority === 'low'),
      'no low frame came after the criticals: nothing was overtaken',
    );
    await slow.ping();
  });
});

test('a queue that overflows with no low frame to drop closes with 1013', { timeout: 60_000 }, async () => {
  await withHerald(SMALL_QUEUE_CONFIG, async (herald) => {
    const room = 'project:overflow';
    const slow = await herald.peer({ userId: 'slow' });
    await slow.subscribe(room);
    slow.ws.pause();
    const pad = 'n'.repeat(256 * 1024);
    const limit = 2 * (Math.ceil(kernelBufferBytes() / pad.length) + QUEUE_FRAMES) + 8;
    let answer = null;
    let sent = 0;
    for (let seq = 0; seq < limit; seq += 1) {
      answer = await herald.broadcast(wsEvent(room, 'load.normal', { seq, pad }));
      sent += 1;
      if (answer.delivered === 0) break;
    }
    assert.equal(answer.delivered, 0, `still queued for after ${sent} frames`);
    slow.ws.resume();
    const frames = await slow.drain(3_000, 30_000);
    assert.equal(await slow.closedWith(5_000), 1013);
    const seqs = frames.filter((f) => f.op === 'event').map((f) => f.event.data.seq);
    assert.deepEqual(seqs, [...seqs.keys()], 'what arrived is not an in-order prefix');
    assert.ok(seqs.length < sent);
  });
});

test('recovery with since across a reconnect gets exactly the missed events, then live ones', { timeout: 30_000 }, async () => {
  await withHerald(undefined, async (herald) => {
    const room = 'project:rc';
    const persistent = (seq, to = room) =>
      herald.broadcast(wsEvent(to, 'task.updated', { seq }, { persistent: true }));
    const first = await herald.peer({ userId: 'u1' });
    assert.equal((await first.subscribe(room)).position, null);
    const seen = [];
    for (let seq = 0; seq < 3; seq += 1) seen.push(await persistent(seq));
    const frames = [await first.event(), await first.event(), await first.event()];
    assert.deepEqual(
      frames.map((f) => f.event.id),
      seen.map((a) => a.id),
    );
    const lastSeen = frames[2].event.position;
    first.ws.close(1000);
    const missed = [];
    for (let seq = 3; seq < 7; seq += 1) missed.push(await persistent(seq));
    await herald.broadcast(wsEvent(room, 'task.ephemeral', { seq: 'not stored' }));
    const logEnd = (await persistent('elsewhere', 'project:elsewhere')).position;

    const back = await herald.peer({ userId: 'u1' });
    const subscribed = await back.subscribe(room, lastSeen);
    assert.equal(subscribed.recovered, true);
    assert.equal(subscribed.position, logEnd);
    const replayed = [];
    for (let i = 0; i < missed.length; i += 1) replayed.push(await back.event());
    assert.deepEqual(
      replayed.map((f) => [f.event.position, f.event.data.seq]),
      missed.map((a, i) => [a.position, i + 3]),
    );
    const live = await herald.broadcast(wsEvent(room, 'task.live', { seq: 7 }));
    assert.equal((await back.event()).event.id, live.id, 'something came between the replay and the live event');
    await back.expectMarker(await herald.marker(room));
  });
});

test('a forbidden room is refused with an error frame; a bad token before the upgrade', { timeout: 30_000 }, async () => {
  await withHerald(undefined, async (herald) => {
    const u1 = await herald.peer({ userId: 'u1' });
    u1.send({ op: 'subscribe', room: 'user:u9' });
    const error = await u1.next('error');
    assert.equal(error.code, 'forbidden');
    assert.ok(typeof error.message === 'string' && error.message.length > 0);
    await u1.ping();
    assert.equal((await herald.broadcast(wsEvent('user:u9'))).delivered, 0, 'the forbidden subscription took');
  });
  await withHerald(`[auth]\njwt_secret = "${JWT_SECRET}"\n`, async (herald) => {
    const limited = await herald.peer({ token: makeJwt('carol', { rooms: ['project:*'] }) });
    assert.equal((await limited.subscribe('project:p1')).room, 'project:p1');
    limited.send({ op: 'subscribe', room: 'team:x' });
    assert.equal((await limited.next('error')).code, 'forbidden');
    const byHeader = await herald.peer({ bearer: makeJwt('dave') });
    await byHeader.subscribe('board:1');
    assert.deepEqual(await herald.presence('board:1'), { dave: 1 });
    assert.equal(await refusedWith(herald, { token: makeJwt('carol', { secret: 'wrong' }) }), 401);
    assert.equal(await refusedWith(herald, { token: makeJwt('carol', { ttlS: -120 }) }), 401);
    assert.equal(await refusedWith(herald, {}), 401);
    assert.equal(await refusedWith(herald, { userId: 'carol' }), 401);
    await limited.ping();
  });
});

test('invalid JSON gets an error frame and the connection stays; a binary frame closes with 1003', { timeout: 30_000 }, async () => {
  await withHerald(undefined, async (herald) => {
    const u1 = await herald.peer({ userId: 'u1' });
    for (const [text, code] of [
      ['{', 'invalid_json'],
      ['not json', 'invalid_json'],
      ['{"op": "dance"}', 'invalid_request'],
      ['{"op": "subscribe"}', 'invalid_request'],
    ]) {
      u1.send(text);
      const error = await u1.next('error');
      assert.equal(error.code, code, text);
      assert.ok(typeof error.message === 'string' && error.message.length > 0, text);
      await u1.ping();
    }
    await u1.subscribe('project:p1');
    const answer = await herald.broadcast(wsEvent('project:p1'));
    assert.equal((await u1.event()).event.id, answer.id);

    const other = await herald.peer({ userId: 'u2' });
    u1.send(Buffer.from('{"op": "ping"}'));
    assert.equal(await u1.closedWith(), 1003);
    await other.ping();
  });
});
