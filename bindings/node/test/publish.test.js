'use strict';
// Publishing through the binding: single and batched, async and sync, conflicts, idempotency,
// typed errors, integration events and WebSocket broadcasts.

const test = require('node:test');
const assert = require('node:assert/strict');
const herald = require('..');

const { EventSystem } = herald;

function system(t) {
  const events = EventSystem.createForTesting();
  t.after(() => events.close());
  return events;
}

test('a single publish resolves to where the event landed', async (t) => {
  const events = system(t);
  const first = await events.publishDomainEvent({ type: 'TaskCreated', aggregateId: 'task-1', data: { title: 'a' } });
  assert.match(first.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.deepEqual({ ...first, id: undefined }, { id: undefined, position: 0, aggregateVersion: 1, alreadyAppended: false });
  const second = events.publishDomainEventSync({ type: 'TaskRenamed', aggregateId: 'task-1', data: { title: 'b' } });
  assert.equal(second.position, 1);
  assert.equal(second.aggregateVersion, 2);
  assert.equal(events.streamVersion('task-1'), 2);
});

test('a batch is stored atomically at contiguous positions', async (t) => {
  const events = system(t);
  await events.publishDomainEvent({ type: 'Seeded', aggregateId: 'seed', data: {} });
  const batch = Array.from({ length: 1000 }, (_, i) => ({ type: 'TaskCreated', aggregateId: `task-${i % 10}`, data: { i } }));
  const result = await events.publishDomainEvents(batch);
  assert.deepEqual(result, { firstPosition: 1, count: 1000, alreadyAppended: false });
  const sync = events.publishDomainEventsSync(batch.slice(0, 3));
  assert.deepEqual(sync, { firstPosition: 1001, count: 3, alreadyAppended: false });
  const positions = events.readAll({ fromPosition: 1, limit: 1000 }).toArray().map((event) => event.position);
  assert.deepEqual(positions, Array.from({ length: 1000 }, (_, i) => i + 1));
  assert.equal(events.streamVersion('task-2'), 101);
  assert.equal(events.streamVersion('task-3'), 100);
});

test('an expected-version miss is a VersionConflictError and stores nothing', async (t) => {
  const events = system(t);
  await events.publishDomainEvent({ type: 'TaskCreated', aggregateId: 'task-1', data: {}, expectedVersion: 0 });
  await assert.rejects(
    events.publishDomainEvent({ type: 'TaskCreated', aggregateId: 'task-1', data: {}, expectedVersion: 0 }),
    (error) => {
      assert.ok(error instanceof herald.VersionConflictError);
      assert.ok(error instanceof herald.HeraldError);
      assert.equal(error.code, 'HERALD_VERSION_CONFLICT');
      assert.equal(error.status, 5);
      assert.match(error.message, /task-1/);
      assert.equal(error.currentVersion, 1);
      return true;
    },
  );
  // A batch whose second draft misses stores neither.
  const batch = [
    { type: 'TaskRenamed', aggregateId: 'task-2', data: {} },
    { type: 'TaskRenamed', aggregateId: 'task-1', data: {}, expectedVersion: 7 },
  ];
  assert.throws(() => events.publishDomainEventsSync(batch), herald.VersionConflictError);
  await assert.rejects(events.publishDomainEvents(batch), herald.VersionConflictError);
  assert.equal(events.readAll().toArray().length, 1);
  assert.equal(events.streamVersion('task-2'), 0);
  const ok = await events.publishDomainEvent({ type: 'TaskRenamed', aggregateId: 'task-1', data: {}, expectedVersion: 1 });
  assert.equal(ok.aggregateVersion, 2);
});

test('re-publishing a stored id is an idempotent retry; another body with it is a DuplicateIdError', async (t) => {
  const events = system(t);
  const id = '0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b';
  const draft = { id, type: 'TaskCreated', aggregateId: 'task-1', data: { n: 1 } };
  const first = await events.publishDomainEvent(draft);
  const again = await events.publishDomainEvent(draft);
  assert.deepEqual(again, { ...first, alreadyAppended: true });
  assert.equal(first.id, id);
  const batchAgain = events.publishDomainEventsSync([draft]);
  assert.deepEqual(batchAgain, { firstPosition: first.position, count: 1, alreadyAppended: true });
  await assert.rejects(events.publishDomainEvent({ ...draft, aggregateId: 'task-2' }), herald.DuplicateIdError);
  assert.equal(events.readAll().toArray().length, 1);
});

test('invalid drafts and bodies are InvalidArgumentErrors naming the field', async (t) => {
  const events = system(t);
  await assert.rejects(events.publishDomainEvent({ type: 'TaskCreated', aggregateId: 'task-1' }), (error) => {
    assert.ok(error instanceof herald.InvalidArgumentError);
    assert.equal(error.code, 'HERALD_INVALID_ARGUMENT');
    assert.match(error.message, /data/);
    return true;
  });
  assert.throws(
    () => events.publishDomainEventSync({ type: 'TaskCreated', aggregateId: 'task-1', data: 1, metadata: { n: 1 } }),
    (error) => error instanceof herald.InvalidArgumentError && /metadata/.test(error.message),
  );
  assert.throws(() => events.publishJsonSync('{"type": "TaskCreated", "aggregate_id": "t", "data": {bad'), herald.InvalidArgumentError);
  await assert.rejects(events.publishJson('{"events": []}'), /events/);
  await assert.rejects(events.publishDomainEvent({ type: '', aggregateId: 'task-1', data: 1 }), herald.InvalidArgumentError);
  await assert.rejects(events.publishDomainEvent({ type: 'T', aggregateId: 'task-1', data: 1, id: 'not-a-uuid' }), herald.InvalidArgumentError);
  assert.throws(() => events.publishDomainEventSync(null), TypeError);
  assert.equal(events.readAll().toArray().length, 0);
  // A verbatim body works too, one draft or a batch.
  assert.deepEqual(events.publishJsonSync('{"type": "TaskCreated", "aggregate_id": "t", "data": {}}'), {
    firstPosition: 0, count: 1, alreadyAppended: false,
  });
});

test('many concurrent async publishes all land, each at its own position', async (t) => {
  const events = system(t);
  const results = await Promise.all(
    Array.from({ length: 500 }, (_, i) => events.publishDomainEvent({ type: 'Tick', aggregateId: `a-${i % 5}`, data: i })),
  );
  assert.deepEqual(results.map((r) => r.position).sort((a, b) => a - b), Array.from({ length: 500 }, (_, i) => i));
  assert.equal(events.streamVersion('a-0'), 100);
});

test('integration events are stored with their routing key (plain and class-shaped)', async (t) => {
  const events = system(t);
  const result = await events.publishIntegrationEvent({
    routingKey: 'task.completed', version: '1.0.0', source: { service: 'task-management', userId: 'user-456' }, data: { taskId: 'task-123' },
  });
  assert.equal(result.position, 0);
  class TaskCompletedIntegrationEvent {
    constructor(taskId, completedBy) {
      this.taskId = taskId;
      this.metadata = { service: 'task-management', version: '1.0.0', userId: completedBy };
    }
    getEventVersion() { return '1.0.0'; }
    getEventData() { return { taskId: this.taskId }; }
    getRoutingKey() { return 'task.completed'; }
  }
  const second = events.publishIntegrationEventSync(new TaskCompletedIntegrationEvent('task-9', 'user-1'));
  assert.equal(second.position, 1);
  const stored = events.readAll().toArray();
  assert.deepEqual(stored.map((e) => [e.kind, e.type, e.data]), [
    ['integration', 'task.completed', { taskId: 'task-123' }],
    ['integration', 'task.completed', { taskId: 'task-9' }],
  ]);
  assert.equal(stored[0].id, result.id);
  assert.deepEqual(JSON.parse(stored[0].metadata.source), { service: 'task-management', user_id: 'user-456' });
  await assert.rejects(
    events.publishIntegrationEvent({ routingKey: 'Task Completed', version: '1', source: { service: 's' }, data: {} }),
    (error) => error instanceof herald.InvalidArgumentError && /routing_key/.test(error.message),
  );
});

test("broadcasts take the seed's WebSocket event shape; persistent ones are stored", async (t) => {
  const events = system(t);
  const persistent = await events.broadcastWebSocketEvent({
    id: 'ws-event-123', type: 'task', event: 'task.updated', data: { taskId: 'task-123', status: 'completed' },
    timestamp: Date.now(), source: { userId: 'user-456', workspaceId: 'workspace-789' },
    target: { type: 'project', id: 'project-101', excludeUsers: ['user-456'] }, priority: 'normal', persistent: true,
  });
  assert.deepEqual(persistent, { persisted: true, position: 0, delivered: 0 });
  const live = events.broadcastWebSocketEventSync({ type: 'presence', event: 'ping', data: {}, target: { type: 'all' } });
  assert.deepEqual(live, { persisted: false, position: null, delivered: 0 });
  const [stored] = events.readAll().toArray();
  assert.equal(stored.kind, 'websocket');
  assert.equal(stored.type, 'project:project-101');
  assert.deepEqual(stored.data.target, { type: 'project', id: 'project-101', exclude_users: ['user-456'] });
  assert.deepEqual(stored.data.source, { user_id: 'user-456', workspace_id: 'workspace-789' });
  assert.equal(stored.data.id, 'ws-event-123');
  await assert.rejects(
    events.broadcastWebSocketEvent({ type: 'task', event: 'x', data: {}, target: { type: 'project' } }),
    (error) => error instanceof herald.InvalidArgumentError && /target/.test(error.message),
  );
  await assert.rejects(
    events.broadcastWebSocketEvent({ type: 'task', event: 'x', data: {}, target: { type: 'all' }, priority: 'urgent' }),
    herald.InvalidArgumentError,
  );
});
