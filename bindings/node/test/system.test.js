'use strict';
// The system's life: presets and configs, webhooks, metrics, shutdown, close (and use after
// it), data that outlives a close, sharing with worker threads, and finding the library.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const herald = require('..');

const { EventSystem } = herald;

function temporaryDirectory(t) {
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-node-'));
  t.after(() => fs.rmSync(directory, { recursive: true, force: true }));
  return directory;
}

test('webhooks are registered, listed and deleted; bad ones are typed errors', (t) => {
  const events = EventSystem.createForTesting();
  t.after(() => events.close());
  const created = events.registerWebhook({ url: 'http://127.0.0.1:9/hooks', filters: ['task.*', 'project.#'], description: 'tasks' });
  assert.match(created.id, /^wh_/);
  assert.match(created.secret, /^whsec_/);
  assert.deepEqual(
    { url: created.url, filters: created.filters, description: created.description, enabled: created.enabled },
    { url: 'http://127.0.0.1:9/hooks', filters: ['task.*', 'project.#'], description: 'tasks', enabled: true },
  );
  assert.match(created.createdAt, /^\d{4}-\d\d-\d\dT/);
  const withSecret = events.registerWebhook({ url: 'https://example.com/h', filter: ['#'], secret: created.secret });
  assert.equal(withSecret.secret, created.secret);
  assert.deepEqual(events.listWebhooks().map((w) => w.id).sort(), [created.id, withSecret.id].sort());
  events.deleteWebhook(created.id);
  assert.deepEqual(events.listWebhooks().map((w) => w.id), [withSecret.id]);
  assert.throws(() => events.deleteWebhook(created.id), herald.NotFoundError);
  assert.throws(
    () => events.registerWebhook({ url: 'not a url', filters: ['task.*'] }),
    (error) => error instanceof herald.InvalidArgumentError && error.code === 'HERALD_INVALID_ARGUMENT' && /url/.test(error.message),
  );
  assert.throws(() => events.registerWebhook({ url: 'http://127.0.0.1:9/x', filters: ['Bad Pattern'] }), herald.InvalidArgumentError);
  assert.throws(() => events.registerWebhook({ url: 'http://127.0.0.1:9/x' }), /filter/);
});

test("getMetrics has the seed's camelCase shape and counts what happened", async (t) => {
  const events = EventSystem.createForTesting();
  t.after(() => events.close());
  await events.publishDomainEvents([
    { type: 'TaskCreated', aggregateId: 't', data: {} },
    { type: 'TaskCreated', aggregateId: 't', data: {} },
  ]);
  await events.publishIntegrationEvent({ routingKey: 'task.created', version: '1', source: { service: 's' }, data: {} });
  await events.broadcastWebSocketEvent({ type: 'task', event: 'e', data: {}, target: { type: 'all' } });
  events.saveSnapshot('t', 2, Buffer.from('x'));
  const metrics = events.getMetrics();
  for (const [group, keys] of Object.entries({
    domainEvents: ['published', 'handled', 'failed', 'averageHandlingTime'],
    integrationEvents: ['published', 'webhooksDelivered', 'webhooksFailed'],
    websocketEvents: ['broadcast', 'delivered', 'connections'],
    eventStore: ['totalEvents', 'totalSnapshots', 'storageSize'],
  })) {
    for (const key of keys) assert.equal(typeof metrics[group][key], 'number', `${group}.${key}`);
  }
  assert.equal(metrics.domainEvents.published, 2);
  assert.equal(metrics.integrationEvents.published, 1);
  assert.equal(metrics.websocketEvents.broadcast, 1);
  assert.equal(metrics.eventStore.totalEvents, 3);
  assert.equal(metrics.eventStore.totalSnapshots, 1);
  assert.ok(metrics.eventStore.storageSize > 0);
});

test('bad presets and configs are ConfigErrors naming the problem', (t) => {
  assert.throws(() => EventSystem.create({ preset: 'staging' }), (error) => {
    assert.ok(error instanceof herald.ConfigError);
    assert.equal(error.code, 'HERALD_INVALID_CONFIG');
    assert.equal(error.status, 4);
    assert.match(error.message, /staging/);
    return true;
  });
  assert.throws(() => EventSystem.createForTesting({ config: '[store]\nfsnyc = "never"\n' }), /fsnyc/);
  assert.throws(() => EventSystem.createForTesting({ config: 'this is not toml' }), herald.ConfigError);
  assert.throws(() => EventSystem.createForProduction(''), (error) => error instanceof herald.ConfigError && /api_keys/.test(error.message));
  const directory = temporaryDirectory(t);
  assert.throws(
    () => EventSystem.createForDevelopment({ dataDir: directory, config: `[server]\ndata_dir = "${directory}"\n` }),
    herald.ConfigError,
  );
  // A testing system can also come from create() with the preset in the config.
  const events = EventSystem.create({ config: 'preset = "testing"\n' });
  events.publishDomainEventSync({ type: 'A', aggregateId: 'a', data: {} });
  events.close();
});

test('after close() every call throws ClosedError; close() is idempotent', async () => {
  const events = EventSystem.createForTesting();
  const pending = events.publishDomainEvent({ type: 'A', aggregateId: 'a', data: {} });
  const subscription = events.subscribe({ start: 'beginning' });
  events.close();
  events.close();
  assert.equal(events.closed, true);
  assert.equal((await pending).position, 0, 'a call made before close() completes');
  assert.equal(subscription.closed, true);
  assert.equal(await subscription.next(10), null);
  const closed = (error) => error instanceof herald.ClosedError && error instanceof herald.ShuttingDownError && error.code === 'HERALD_SHUTTING_DOWN';
  await assert.rejects(events.publishDomainEvent({ type: 'A', aggregateId: 'a', data: {} }), closed);
  await assert.rejects(events.publishDomainEvents([{ type: 'A', aggregateId: 'a', data: {} }]), closed);
  await assert.rejects(events.publishIntegrationEvent({ routingKey: 'a', version: '1', source: { service: 's' }, data: {} }), closed);
  await assert.rejects(events.broadcastWebSocketEvent({ type: 'a', event: 'b', data: {}, target: { type: 'all' } }), closed);
  await assert.rejects(events.shutdown(), closed);
  for (const call of [
    () => events.publishDomainEventSync({ type: 'A', aggregateId: 'a', data: {} }),
    () => events.readAll(),
    () => events.readByType('A'),
    () => events.readSince(new Date()),
    () => events.readStream('a'),
    () => events.streamVersion('a'),
    () => events.saveSnapshot('a', 1, Buffer.from('x')),
    () => events.loadSnapshot('a'),
    () => events.subscribe(),
    () => events.on(() => {}),
    () => events.registerWebhook({ url: 'http://127.0.0.1/', filters: ['#'] }),
    () => events.listWebhooks(),
    () => events.deleteWebhook('wh_x'),
    () => events.getMetrics(),
    () => events.share(),
  ]) {
    assert.throws(call, closed, String(call));
  }
});

test('shutdown() drains, then publishes are ShuttingDownErrors while reads still work', async () => {
  const events = EventSystem.createForTesting();
  await events.publishDomainEvent({ type: 'A', aggregateId: 'a', data: {} });
  assert.equal(await events.shutdown(1000), true);
  await assert.rejects(events.publishDomainEvent({ type: 'A', aggregateId: 'a', data: {} }), (error) =>
    error instanceof herald.ShuttingDownError && !(error instanceof herald.ClosedError) && error.message.length > 0,
  );
  assert.throws(() => events.publishDomainEventSync({ type: 'A', aggregateId: 'a', data: {} }), herald.ShuttingDownError);
  assert.equal(events.readAll().toArray().length, 1);
  events.close();
});

test('events and snapshots in a data directory outlive close() and reopen', async (t) => {
  const directory = temporaryDirectory(t);
  const first = EventSystem.createForDevelopment({ dataDir: directory });
  const appended = await first.publishDomainEvents([
    { type: 'TaskCreated', aggregateId: 'task-1', data: { title: 'persist me' } },
    { type: 'TaskCompleted', aggregateId: 'task-1', data: {} },
  ]);
  first.saveSnapshot('task-1', 2, Buffer.from('state'));
  const hook = first.registerWebhook({ url: 'http://127.0.0.1:9/h', filters: ['task.*'] });
  assert.equal(await first.shutdown(2000), true);
  first.close();

  const config = `[store]\nfsync = "always"\n\n[server]\ndata_dir = ${JSON.stringify(directory)}\n`;
  const second = EventSystem.create({ preset: 'development', config });
  t.after(() => second.close());
  const stored = second.readAll().toArray();
  assert.deepEqual(stored.map((e) => [e.position, e.type, e.data]), [
    [0, 'TaskCreated', { title: 'persist me' }],
    [1, 'TaskCompleted', {}],
  ]);
  assert.equal(appended.firstPosition, 0);
  assert.equal(second.streamVersion('task-1'), 2);
  assert.deepEqual(second.loadSnapshot('task-1').state, Buffer.from('state'));
  assert.deepEqual(second.listWebhooks().map((w) => w.id), [hook.id]);
  const next = second.publishDomainEventSync({ type: 'TaskReopened', aggregateId: 'task-1', data: {}, expectedVersion: 2 });
  assert.deepEqual([next.position, next.aggregateVersion], [2, 3]);
});

test('a shared system is freed only after its attached views close and their calls return', async () => {
  const events = EventSystem.createForTesting();
  const token = events.share();
  const view = EventSystem.attach(token);
  view.publishDomainEventSync({ type: 'A', aggregateId: 'a', data: {} });
  events.close();
  // The owner is closed (its own calls throw), but the native system lives on for the view.
  assert.throws(() => events.readAll(), herald.ClosedError);
  assert.equal(view.readAll().toArray().length, 1);
  const inFlight = view.publishDomainEvent({ type: 'A', aggregateId: 'a', data: {} });
  view.close();
  assert.equal((await inFlight).position, 1);
  assert.throws(() => view.readAll(), herald.ClosedError);
  assert.throws(() => EventSystem.attach(token), herald.ClosedError);
});

test('a missing library is a LibraryNotFoundError naming every path tried', () => {
  const script = `
    const herald = require(${JSON.stringify(path.resolve(__dirname, '..'))});
    try { herald.EventSystem.createForTesting(); } catch (error) { console.log(JSON.stringify({ name: error.name, message: error.message, tried: error.tried })); }
  `;
  const output = execFileSync(process.execPath, ['-e', script], {
    env: { ...process.env, HERALD_LIBRARY: '/nonexistent/libherald.so' },
    encoding: 'utf8',
  });
  const result = JSON.parse(output);
  assert.equal(result.name, 'LibraryNotFoundError');
  assert.match(result.message, /\/nonexistent\/libherald\.so/);
  assert.match(result.message, /HERALD_LIBRARY/);
  assert.deepEqual(result.tried.map((entry) => entry.path), ['/nonexistent/libherald.so']);
  // Without the variable the repository's builds come first, then the system path.
  const candidates = execFileSync(process.execPath, ['-e', `console.log(JSON.stringify(require(${JSON.stringify(path.resolve(__dirname, '..'))}).libraryCandidates()))`], {
    env: { ...process.env, HERALD_LIBRARY: '' },
    encoding: 'utf8',
  });
  const paths = JSON.parse(candidates);
  assert.match(paths[0], /target[/\\]release[/\\]libherald\.so$/);
  assert.match(paths[1], /target[/\\]debug[/\\]libherald\.so$/);
  assert.equal(paths[2], 'libherald.so');
});
