'use strict';
// Subscriptions: pull (async iterator, bounded native waits on worker threads) and callback
// (Herald's thread calling into JS), from the beginning, the end or a position, fed from this
// thread and from a worker thread while the event loop keeps running.

const path = require('node:path');
const test = require('node:test');
const assert = require('node:assert/strict');
const { Worker } = require('node:worker_threads');
const herald = require('..');

const { EventSystem } = herald;

function system(t) {
  const events = EventSystem.createForTesting();
  t.after(() => events.close());
  return events;
}

test('a subscription from the beginning replays history, then follows new events', async (t) => {
  const events = system(t);
  events.publishDomainEventsSync([
    { type: 'TaskCreated', aggregateId: 't1', data: 1 },
    { type: 'TaskCreated', aggregateId: 't2', data: 2 },
  ]);
  const subscription = events.subscribe({ start: 'beginning' });
  assert.equal((await subscription.next(1000)).position, 0);
  assert.equal((await subscription.next(1000)).position, 1);
  const started = Date.now();
  assert.equal(await subscription.next(50), null, 'a timeout is null');
  assert.ok(Date.now() - started >= 45);
  setTimeout(() => events.publishDomainEvent({ type: 'TaskCreated', aggregateId: 't3', data: 3 }), 30);
  const live = await subscription.next(5000);
  assert.deepEqual([live.position, live.data], [2, 3]);
  await subscription.close();
  assert.equal(subscription.closed, true);
  assert.equal(await subscription.next(10), null);
});

test('a subscription from the end, or a position, skips what came before; a pattern filters domain events', async (t) => {
  const events = system(t);
  events.publishDomainEventSync({ type: 'TaskCreated', aggregateId: 'old', data: {} });
  const fromEnd = events.subscribe({ start: 'end' });
  const fromTwo = events.subscribe({ start: 2 });
  const tasks = events.subscribe({ start: 'beginning', pattern: 'task.*' });
  events.publishDomainEventSync({ type: 'ProjectCreated', aggregateId: 'p1', data: {} });
  events.publishIntegrationEventSync({ routingKey: 'task.created', version: '1', source: { service: 's' }, data: {} });
  events.publishDomainEventSync({ type: 'TaskCompleted', aggregateId: 'old', data: {} });
  const take = async (subscription, count) => {
    const got = [];
    for await (const event of subscription) {
      got.push(`${event.position}:${event.kind}:${event.type}`);
      if (got.length === count) break; // closes the subscription
    }
    return got;
  };
  assert.deepEqual(await take(fromEnd, 3), ['1:domain:ProjectCreated', '2:integration:task.created', '3:domain:TaskCompleted']);
  assert.deepEqual(await take(fromTwo, 2), ['2:integration:task.created', '3:domain:TaskCompleted']);
  assert.deepEqual(await take(tasks, 2), ['0:domain:TaskCreated', '3:domain:TaskCompleted']);
  assert.equal(fromEnd.closed && fromTwo.closed && tasks.closed, true);
  assert.throws(() => events.subscribe({ pattern: 'Task.*' }), herald.InvalidArgumentError);
});

test('close() ends a waiting subscription promptly, and the async iterator with it', async (t) => {
  const events = system(t);
  const subscription = events.subscribe();
  const waiting = subscription.next(); // waits without a deadline
  const iterating = (async () => {
    const seen = [];
    for await (const event of subscription) seen.push(event);
    return seen;
  })();
  await new Promise((resolve) => setTimeout(resolve, 50));
  const closing = Date.now();
  await subscription.close();
  assert.equal(await waiting, null);
  assert.deepEqual(await iterating, []);
  assert.ok(Date.now() - closing < 1000, `close took ${Date.now() - closing} ms`);
});

test('events published from a worker thread reach a subscription while the event loop keeps ticking', async (t) => {
  const events = system(t);
  const subscription = events.subscribe({ start: 'end', pattern: 'task.#' });
  const batches = 20;
  const perBatch = 100;
  const worker = new Worker(
    `
    const { parentPort, workerData } = require('node:worker_threads');
    const { EventSystem } = require(${JSON.stringify(path.resolve(__dirname, '..'))});
    (async () => {
      const events = EventSystem.attach(workerData.token);
      for (let i = 0; i < workerData.batches; i += 1) {
        const batch = Array.from({ length: workerData.perBatch }, (_, j) => ({ type: 'TaskCreated', aggregateId: 'w-' + (j % 7), data: { i, j } }));
        if (i % 2) events.publishDomainEventsSync(batch); else await events.publishDomainEvents(batch);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      events.close();
      parentPort.postMessage('done');
    })().catch((error) => { throw error; });
    `,
    { eval: true, workerData: { token: events.share(), batches, perBatch } },
  );
  const workerDone = new Promise((resolve, reject) => {
    worker.on('message', resolve);
    worker.on('error', reject);
  });
  let ticks = 0;
  let last = Date.now();
  let longestGap = 0;
  const timer = setInterval(() => {
    const now = Date.now();
    longestGap = Math.max(longestGap, now - last);
    last = now;
    ticks += 1;
  }, 5);
  t.after(() => clearInterval(timer));

  const received = [];
  for await (const event of subscription) {
    received.push(event);
    if (received.length === batches * perBatch) break;
  }
  await workerDone;
  clearInterval(timer);
  assert.equal(received.length, batches * perBatch);
  assert.deepEqual(received.map((e) => `${e.data.i}/${e.data.j}`), Array.from({ length: batches * perBatch }, (_, k) => `${Math.floor(k / perBatch)}/${k % perBatch}`));
  for (let k = 1; k < received.length; k += 1) assert.equal(received[k].position, received[k - 1].position + 1);
  assert.ok(ticks >= 5, `the interval ticked ${ticks} times`);
  assert.ok(longestGap < 500, `the event loop stalled for ${longestGap} ms`);
});

test('on() calls back from Herald\'s thread, in order; publishes inside it are caused by the event', async (t) => {
  const events = system(t);
  events.publishDomainEventSync({ type: 'TaskCreated', aggregateId: 't1', data: 1 });
  const seen = [];
  const reactions = [];
  const subscription = events.on(
    (event) => {
      seen.push(event.position);
      reactions.push(events.publishDomainEventSync({ type: 'TaskAudited', aggregateId: `audit-${event.aggregateId}`, data: {} }));
    },
    { start: 'beginning', pattern: 'task.created' },
  );
  await events.publishDomainEvents([
    { type: 'TaskCreated', aggregateId: 't2', data: 2 },
    { type: 'TaskCreated', aggregateId: 't3', data: 3 },
  ]);
  const deadline = Date.now() + 5000;
  while (seen.length < 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
  await subscription.close();
  assert.equal(subscription.closed, true);
  assert.deepEqual(seen.slice(0, 1), [0]);
  assert.equal(seen.length, 3);
  const created = events.readByType('TaskCreated').toArray();
  const audits = events.readByType('TaskAudited').toArray();
  assert.equal(audits.length, 3);
  for (const audit of audits) {
    const cause = created.find((event) => `audit-${event.aggregateId}` === audit.aggregateId);
    assert.equal(audit.causationId, cause.id);
    assert.equal(audit.correlationId, cause.correlationId);
  }
  // Outside a callback nothing is caused.
  const plain = events.publishDomainEventSync({ type: 'TaskAudited', aggregateId: 'x', data: {} });
  assert.equal(events.readAll({ fromPosition: plain.position }).toArray()[0].causationId, null);
});

test('a throwing on() callback reports to onError and the subscription goes on', async (t) => {
  const events = system(t);
  const errors = [];
  const seen = [];
  const subscription = events.on(
    (event) => {
      seen.push(event.position);
      if (event.position === 0) throw new Error('boom');
    },
    { start: 'beginning', onError: (error) => errors.push(error.message) },
  );
  events.publishDomainEventsSync([
    { type: 'A', aggregateId: 'a', data: {} },
    { type: 'A', aggregateId: 'a', data: {} },
  ]);
  const deadline = Date.now() + 5000;
  while (seen.length < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
  events.close(); // closes the callback subscription too
  await subscription.close();
  assert.deepEqual(seen, [0, 1]);
  assert.deepEqual(errors, ['boom']);
});
