'use strict';
// Reads are synchronous iterators over copies of Herald's borrowed views: the whole log, one
// type, from a time, one aggregate; snapshots round-trip their bytes.

const test = require('node:test');
const assert = require('node:assert/strict');
const herald = require('..');

const { EventSystem } = herald;

function seeded(t) {
  const events = EventSystem.createForTesting();
  t.after(() => events.close());
  events.publishDomainEventsSync([
    { type: 'TaskCreated', aggregateId: 'task-1', data: { title: 'Ünïcødé ✓' }, metadata: { user_id: 'user-456' } },
    { type: 'TaskCreated', aggregateId: 'task-2', data: [1, 2, 3] },
    { type: 'TaskCompleted', aggregateId: 'task-1', data: 'done' },
    { type: 'TaskCreated', aggregateId: 'task-3', data: 42 },
  ]);
  return events;
}

test('readAll yields every event in position order, with options', (t) => {
  const events = seeded(t);
  const all = [...events.readAll()];
  assert.deepEqual(all.map((e) => e.position), [0, 1, 2, 3]);
  const first = all[0];
  assert.equal(first.kind, 'domain');
  assert.equal(first.type, 'TaskCreated');
  assert.equal(first.aggregateId, 'task-1');
  assert.equal(first.aggregateVersion, 1);
  assert.deepEqual(first.data, { title: 'Ünïcødé ✓' });
  assert.deepEqual(first.metadata, { user_id: 'user-456' });
  assert.equal(first.correlationId, first.id, 'correlation defaults to the event itself');
  assert.equal(first.causationId, null);
  assert.equal(typeof first.timestampNs, 'bigint');
  assert.ok(first.timestampNs > 1_600_000_000_000_000_000n);
  assert.deepEqual(all.map((e) => e.data).slice(1), [[1, 2, 3], 'done', 42]);
  assert.deepEqual(events.readAll({ fromPosition: 1, limit: 2 }).toArray().map((e) => e.position), [1, 2]);
  assert.deepEqual(events.readAll({ fromPosition: 10 }).toArray(), []);
});

test('readByType, readSince and readStream filter as their names say', (t) => {
  const events = seeded(t);
  assert.deepEqual(events.readByType('TaskCreated').toArray().map((e) => e.aggregateId), ['task-1', 'task-2', 'task-3']);
  assert.deepEqual(events.readByType('TaskCreated', { fromPosition: 2 }).toArray().map((e) => e.position), [3]);
  assert.deepEqual(events.readByType('Nothing').toArray(), []);

  // Every event so far is stamped before `before`, the next one after it (both whole ms).
  const before = new Date(Date.now() + 2);
  while (Date.now() <= before.getTime());
  const later = events.publishDomainEventSync({ type: 'TaskArchived', aggregateId: 'task-2', data: {} });
  const [stamped] = events.readAll({ fromPosition: later.position }).toArray();
  assert.deepEqual(events.readSince(stamped.timestampNs).toArray().map((e) => e.position), [later.position]);
  assert.deepEqual(events.readSince(before).toArray().map((e) => e.position), [later.position]);
  assert.equal(events.readSince(new Date(Date.now() - 60_000)).toArray().length, 5);
  assert.equal(events.readSince(new Date(Date.now() + 60_000)).toArray().length, 0);
  assert.equal(events.readSince(0n, { limit: 3 }).toArray().length, 3);

  const stream = events.readStream('task-1').toArray();
  assert.deepEqual(stream.map((e) => [e.aggregateVersion, e.type]), [[1, 'TaskCreated'], [2, 'TaskCompleted']]);
  assert.deepEqual(events.readStream('task-1', { fromVersion: 2 }).toArray().map((e) => e.type), ['TaskCompleted']);
  assert.deepEqual(events.readStream('task-1', { limit: 1 }).toArray().map((e) => e.type), ['TaskCreated']);
  assert.deepEqual(events.readStream('unknown').toArray(), []);
  assert.equal(events.streamVersion('task-1'), 2);
  assert.equal(events.streamVersion('unknown'), 0);
  assert.throws(() => events.readSince('yesterday'), TypeError);
});

test('a reader ends on break, return() or close(), and can be read while publishing goes on', (t) => {
  const events = seeded(t);
  const seen = [];
  for (const event of events.readAll()) {
    seen.push(event.position);
    if (seen.length === 2) break;
  }
  assert.deepEqual(seen, [0, 1]);
  const reader = events.readAll();
  assert.equal(reader.next().value.position, 0);
  assert.deepEqual(reader.return(), { value: undefined, done: true });
  assert.deepEqual(reader.next(), { value: undefined, done: true });
  const unstarted = events.readAll();
  unstarted.close();
  assert.deepEqual([...unstarted], []);
  // A reader sees the log as it was when made.
  const snapshot = events.readAll();
  events.publishDomainEventSync({ type: 'Later', aggregateId: 'task-9', data: {} });
  assert.equal(snapshot.toArray().length, 4);
  assert.equal(events.readAll().toArray().length, 5);
  assert.throws(() => events.readAll({ fromPosition: -1 }), RangeError);
});

test('snapshots round-trip their bytes; missing ones are null; rules are typed errors', (t) => {
  const events = seeded(t);
  assert.equal(events.loadSnapshot('task-1'), null);
  const state = Buffer.from(JSON.stringify({ title: 'Ünïcødé ✓', done: true }));
  events.saveSnapshot('task-1', 2, state);
  const loaded = events.loadSnapshot('task-1');
  assert.equal(loaded.aggregateVersion, 2);
  assert.equal(typeof loaded.timestampNs, 'bigint');
  assert.deepEqual(loaded.state, state);
  events.saveSnapshot('task-1', 1, new Uint8Array([1, 2, 3]));
  assert.equal(events.loadSnapshot('task-1').aggregateVersion, 2, 'the highest version wins');
  events.saveSnapshot('task-2', 1, '');
  assert.equal(events.loadSnapshot('task-2').state.length, 0);
  assert.throws(() => events.saveSnapshot('task-1', 3, state), herald.VersionConflictError);
  assert.throws(() => events.saveSnapshot('nobody', 1, state), herald.NotFoundError);
  assert.throws(() => events.saveSnapshot('task-1', 1, 42), TypeError);
  assert.equal(events.getMetrics().eventStore.totalSnapshots >= 2, true);
});
