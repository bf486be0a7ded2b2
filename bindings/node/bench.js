'use strict';
// Publish throughput of the Node binding: single events and atomic batches of 1,000, through the
// async (worker thread) and sync calls, into the testing preset (in-memory store) and into an
// mmap store in a temporary directory with `fsync = "never"`.
//
//   node bench.js [--seconds N] [--library PATH]
//
// Uses target/release/libherald.so when it exists (unless --library or HERALD_LIBRARY says
// otherwise). Each case runs for N seconds (default 3) after a short warm-up, on a fresh system.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

function option(name, fallback) {
  const index = process.argv.indexOf(`--${name}`);
  if (index === -1) return fallback;
  const value = process.argv[index + 1];
  if (value === undefined) throw new Error(`--${name} needs a value`);
  return value;
}

const seconds = Number(option('seconds', '3'));
if (!(seconds > 0)) throw new Error('--seconds must be a positive number');
const release = path.resolve(__dirname, '..', '..', 'target', 'release', 'libherald.so');
const library = option('library', process.env.HERALD_LIBRARY || (fs.existsSync(release) ? release : undefined));
if (library) process.env.HERALD_LIBRARY = library;

const { EventSystem } = require('.');

const BATCH = 1000;
const AGGREGATES = 1000;
const SINGLE_IN_FLIGHT = 16;
const PIPELINE = 4;
const DATA = { title: 'Implement feature X', assignee: 'user-456' };

const drafts = Array.from({ length: AGGREGATES }, (_, i) => ({ type: 'TaskCreated', aggregateId: `task-${i}`, data: DATA }));
const batches = Array.from({ length: 8 }, (_, b) =>
  Array.from({ length: BATCH }, (_, i) => drafts[(b * BATCH + i) % AGGREGATES]),
);

const now = () => Number(process.hrtime.bigint()) / 1e9;

/** Runs `step` (which returns how many events it published) until `duration` seconds pass. */
async function measure(step, duration) {
  let events = 0;
  let i = 0;
  const start = now();
  let elapsed = 0;
  while (elapsed < duration) {
    events += await step(i);
    i += 1;
    elapsed = now() - start;
  }
  return events / elapsed;
}

const cases = [
  {
    name: 'single  sync',
    run: (system) => (i) => {
      system.publishDomainEventSync(drafts[i % AGGREGATES]);
      return 1;
    },
  },
  {
    name: `single  async (${SINGLE_IN_FLIGHT} in flight)`,
    run: (system) => async (i) => {
      const calls = new Array(SINGLE_IN_FLIGHT);
      for (let k = 0; k < SINGLE_IN_FLIGHT; k += 1) calls[k] = system.publishDomainEvent(drafts[(i * SINGLE_IN_FLIGHT + k) % AGGREGATES]);
      await Promise.all(calls);
      return SINGLE_IN_FLIGHT;
    },
  },
  {
    name: `batch   sync (${BATCH}/batch)`,
    run: (system) => (i) => system.publishDomainEventsSync(batches[i % batches.length]).count,
  },
  {
    name: `batch   async (${BATCH}/batch)`,
    run: (system) => async (i) => (await system.publishDomainEvents(batches[i % batches.length])).count,
  },
  {
    name: `batch   async (${BATCH}/batch, 2 in flight)`,
    run: (system) => async (i) => {
      const [a, b] = await Promise.all([
        system.publishDomainEvents(batches[(2 * i) % batches.length]),
        system.publishDomainEvents(batches[(2 * i + 1) % batches.length]),
      ]);
      return a.count + b.count;
    },
  },
  {
    // A throughput publisher's loop: encode the next batch on the event loop while earlier ones
    // are stored on worker threads, keeping PIPELINE batches in flight (each batch is atomic;
    // batches in flight together may be appended in any order).
    name: `batch   async (${BATCH}/batch, pipeline of ${PIPELINE})`,
    run: (system) => {
      const inFlight = [];
      const step = async (i) => {
        const published = system.publishDomainEvents(batches[i % batches.length]);
        // Handled here too: a failure behind the head must not be an unhandled rejection.
        published.catch(() => {});
        inFlight.push(published);
        return inFlight.length < PIPELINE ? 0 : (await inFlight.shift()).count;
      };
      // Settles what is still in flight (not counted) before the next measurement.
      step.drain = () => Promise.allSettled(inFlight.splice(0));
      return step;
    },
  },
];

const stores = [
  { name: 'testing (in-memory)', open: () => ({ system: EventSystem.createForTesting(), cleanup() {} }) },
  {
    name: 'mmap, fsync never',
    open: () => {
      const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-bench-'));
      const system = EventSystem.createForDevelopment({ dataDir: directory, config: '[store]\nfsync = "never"\n' });
      return { system, cleanup: () => fs.rmSync(directory, { recursive: true, force: true }) };
    },
  },
];

function format(rate) {
  return Math.round(rate).toLocaleString('en-US').padStart(12);
}

async function main() {
  const cpus = os.cpus();
  console.log(`herald ${EventSystem.version} (${EventSystem.libraryPath})`);
  console.log(`node ${process.version}, ${cpus.length} x ${cpus[0] ? cpus[0].model.trim() : 'unknown CPU'}, ${os.platform()} ${os.release()}`);
  console.log(`payload ${JSON.stringify(DATA).length} bytes of JSON, ${AGGREGATES} aggregates, ${seconds} s per case\n`);
  console.log(`${'store'.padEnd(22)}${'case'.padEnd(44)}${'events/s'.padStart(12)}`);
  for (const store of stores) {
    for (const benchmark of cases) {
      const { system, cleanup } = store.open();
      let step;
      try {
        step = benchmark.run(system);
        await measure(step, Math.min(0.5, seconds / 4)); // warm-up
        if (step.drain) await step.drain();
        const rate = await measure(step, seconds);
        console.log(`${store.name.padEnd(22)}${benchmark.name.padEnd(44)}${format(rate)}`);
      } finally {
        if (step && step.drain) await step.drain();
        await system.shutdown(5000);
        system.close();
        cleanup();
      }
    }
  }
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
