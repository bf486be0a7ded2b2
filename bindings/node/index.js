'use strict';

// Herald for Node.js: the C ABI of `include/herald.h` through koffi, shaped like the TypeScript
// event system users know (EventSystem, publishDomainEvent, publishIntegrationEvent,
// broadcastWebSocketEvent, getMetrics).
//
// What this module owns and promises:
// - Every native handle it makes goes back to its `*_free`: systems on close(), readers when they
//   end, return() or are collected, snapshots and buffers before the call that made them
//   returns, subscriptions on close() once no native call is running on them.
// - Calls that may wait on the disk or on other threads (publishes, subscription waits,
//   shutdown, freeing a callback subscription) run on libuv's worker threads through koffi's
//   `.async`; at most MAX_ACTIVE_CALLS are handed to koffi at once and at most MAX_QUEUED_CALLS
//   wait behind them (beyond that a call fails with OverloadedError; only the free of a callback
//   subscription, which must not be refused, goes to koffi directly). Reads are synchronous:
//   they are memory (or mmap) reads.
// - A system is freed only after every native call on it has returned, so close() never pulls
//   the handle from under a running call.
// - herald_last_error() is per thread. A synchronous failure reads it at once. An asynchronous
//   failure ran on a worker thread, so its message cannot be read from here; for the statuses
//   where the outcome is settled and a retry cannot wait (validation, conflicts, shutdown), the
//   call is re-run once synchronously, which either fails the same way (and its message is read
//   on this thread) or succeeds (nothing was stored the first time, so the re-run is the one
//   effect of the call). For the others (overloaded, storage, panic, internal) the error carries
//   the status's documented meaning only.

const fs = require('node:fs');
const path = require('node:path');
const koffi = require('koffi');

// ---------------------------------------------------------------------------------------------
// Status codes (include/herald.h, `enum herald_status`; the numbers are stable).

const OK = 0;
const TIMEOUT = 13;
const END = 14;

const STATUS_NAMES = [
  'HERALD_OK', 'HERALD_NULL_PARAMETER', 'HERALD_INVALID_UTF8', 'HERALD_INVALID_ARGUMENT',
  'HERALD_INVALID_CONFIG', 'HERALD_VERSION_CONFLICT', 'HERALD_DUPLICATE_ID', 'HERALD_NOT_FOUND',
  'HERALD_GONE', 'HERALD_OVERLOADED', 'HERALD_SHUTTING_DOWN', 'HERALD_TOO_LARGE', 'HERALD_STORAGE',
  'HERALD_TIMEOUT', 'HERALD_END', 'HERALD_CONFLICT', 'HERALD_PANIC', 'HERALD_INTERNAL',
];

// The header's one-line meaning of each status, for errors whose message stayed on a worker thread.
const STATUS_MEANINGS = [
  'success',
  'a required pointer argument was NULL',
  'a string argument was not UTF-8',
  'an argument broke a rule',
  'the configuration is invalid',
  'expected_version did not hold; nothing was stored',
  'some event ids are stored already with other contents; nothing was stored',
  'no such stream, snapshot or webhook endpoint',
  'the position was removed by retention',
  'the dispatch ring stayed full; nothing was stored, retry later',
  'the system is shutting down or closed; nothing was stored',
  'the batch does not fit in one store segment',
  'the store or a journal failed (I/O, corruption, read-only after an fsync error, locked)',
  'no event arrived within the timeout',
  'the reader has no more events',
  'the operation does not apply in the current state',
  'Herald panicked inside the call',
  'internal error',
];

// Statuses whose asynchronous failure is re-run once synchronously to read its message: the
// outcome is settled by the request or by state that only moves forward, and the re-run returns
// at once (it cannot wait on a full ring or on the disk unless it succeeds).
const RECHECKED = new Set([1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 15]);

// ---------------------------------------------------------------------------------------------
// Errors

class HeraldError extends Error {
  /**
   * @param {string} message
   * @param {number} [status] the herald_status; defaults to the subclass's own
   */
  constructor(message, status) {
    super(message);
    const code = status === undefined ? new.target.status : status;
    this.name = new.target.name;
    this.status = code;
    this.code = statusName(code);
  }
}
HeraldError.status = 17;

function errorClass(name, status, base = HeraldError) {
  const cls = { [name]: class extends base {} }[name];
  cls.status = status;
  return cls;
}

const NullParameterError = errorClass('NullParameterError', 1);
const InvalidArgumentError = errorClass('InvalidArgumentError', 3);
const InvalidUtf8Error = errorClass('InvalidUtf8Error', 2, InvalidArgumentError);
const ConfigError = errorClass('ConfigError', 4);
const DuplicateIdError = errorClass('DuplicateIdError', 6);
const NotFoundError = errorClass('NotFoundError', 7);
const GoneError = errorClass('GoneError', 8);
const OverloadedError = errorClass('OverloadedError', 9);
const ShuttingDownError = errorClass('ShuttingDownError', 10);
const TooLargeError = errorClass('TooLargeError', 11);
const StorageError = errorClass('StorageError', 12);
const ConflictError = errorClass('ConflictError', 15);
const PanicError = errorClass('PanicError', 16);
const InternalError = errorClass('InternalError', 17);

class VersionConflictError extends HeraldError {
  constructor(message, status) {
    super(message, status);
    // Best effort from Herald's message ("version conflict on `a`: expected 0 (no stream),
    // current version is 1"); undefined when the message has another form.
    const aggregate = /on `([^`]*)`/.exec(message);
    const current = /current version is (\d+)/.exec(message);
    this.aggregateId = aggregate ? aggregate[1] : undefined;
    this.currentVersion = current ? Number(current[1]) : undefined;
  }
}
VersionConflictError.status = 5;

/** The EventSystem (or subscription) was closed by this process; status HERALD_SHUTTING_DOWN. */
class ClosedError extends ShuttingDownError {
  constructor(message = 'the EventSystem is closed') {
    super(message);
  }
}

/** The shared library could not be loaded; `tried` lists each candidate with its failure. */
class LibraryNotFoundError extends Error {
  constructor(tried) {
    super(
      'cannot load the Herald shared library; tried:\n' +
        tried.map(({ path: where, error }) => `  ${where}: ${error}`).join('\n') +
        '\nSet HERALD_LIBRARY to the path of libherald, or build it (cargo build -p herald-ffi).',
    );
    this.name = 'LibraryNotFoundError';
    this.tried = tried;
  }
}

const ERROR_CLASSES = [
  null, NullParameterError, InvalidUtf8Error, InvalidArgumentError, ConfigError,
  VersionConflictError, DuplicateIdError, NotFoundError, GoneError, OverloadedError,
  ShuttingDownError, TooLargeError, StorageError, InternalError, InternalError, ConflictError,
  PanicError, InternalError,
];

function statusName(status) {
  if (native !== null) return native.status_name(status);
  return STATUS_NAMES[status] || 'HERALD_UNKNOWN';
}

function makeError(status, message) {
  const cls = ERROR_CLASSES[status] || HeraldError;
  return new cls(message || `${statusName(status)}: ${STATUS_MEANINGS[status] || 'unknown status'}`, status);
}

/** The error for a failed synchronous call: its message is read now, on this thread. */
function lastError(status) {
  return makeError(status, native.last_error());
}

/**
 * Settles an asynchronous call's status on the main thread. OK passes; a status in RECHECKED is
 * re-run once synchronously with the same arguments (outputs land in the same objects); others
 * become errors with the status's meaning (their message was recorded on the worker thread).
 */
function settle(status, fn, args) {
  if (status === OK) return;
  if (!RECHECKED.has(status)) {
    throw makeError(status, `${statusName(status)}: ${STATUS_MEANINGS[status]} ` +
      '(Herald recorded the details on a libuv worker thread, where this binding cannot read them)');
  }
  const again = fn(...args);
  if (again !== OK) throw lastError(again);
}

// ---------------------------------------------------------------------------------------------
// Loading the library

const LIBRARY_FILE =
  process.platform === 'win32' ? 'herald.dll' : process.platform === 'darwin' ? 'libherald.dylib' : 'libherald.so';

/** The candidates in lookup order: HERALD_LIBRARY, then the repository's release and debug builds, then the system path. */
function libraryCandidates() {
  if (process.env.HERALD_LIBRARY) return [{ path: process.env.HERALD_LIBRARY, mustExist: true }];
  const root = path.resolve(__dirname, '..', '..', 'target');
  return [
    { path: path.join(root, 'release', LIBRARY_FILE), mustExist: true },
    { path: path.join(root, 'debug', LIBRARY_FILE), mustExist: true },
    { path: LIBRARY_FILE, mustExist: false },
  ];
}

let native = null;

function loadNative() {
  if (native !== null) return native;
  const tried = [];
  let lib = null;
  let loadedFrom = null;
  for (const candidate of libraryCandidates()) {
    if (candidate.mustExist && !fs.existsSync(candidate.path)) {
      tried.push({ path: candidate.path, error: 'no such file' });
      continue;
    }
    try {
      lib = koffi.load(candidate.path);
      loadedFrom = candidate.path;
      break;
    } catch (error) {
      tried.push({ path: candidate.path, error: error.message });
    }
  }
  if (lib === null) throw new LibraryNotFoundError(tried);
  native = declare(lib);
  native.path = loadedFrom;
  return native;
}

// Struct and handle types are registered in koffi's process-wide type table once.
let types = null;

function declareTypes() {
  if (types !== null) return types;
  const uuid = koffi.struct('herald_uuid', { bytes: koffi.array('uint8_t', 16) });
  // Strings and byte views are `const void *` here: they are not NUL-terminated, so koffi must
  // not decode them as C strings; they are read with their lengths (decodeEvent).
  const event = koffi.struct('herald_event', {
    kind: 'uint32_t',
    id: uuid,
    event_type: 'const void *',
    event_type_len: 'size_t',
    aggregate_id: 'const void *',
    aggregate_id_len: 'size_t',
    aggregate_version: 'uint64_t',
    position: 'uint64_t',
    timestamp_ns: 'uint64_t',
    correlation_id: uuid,
    has_causation_id: 'bool',
    causation_id: uuid,
    metadata_json: 'const void *',
    metadata_json_len: 'size_t',
    data: 'const void *',
    data_len: 'size_t',
  });
  const appended = koffi.struct('herald_appended', {
    id: uuid,
    position: 'uint64_t',
    aggregate_version: 'uint64_t',
    already_appended: 'bool',
  });
  const broadcastResult = koffi.struct('herald_broadcast_result', {
    persisted: 'bool',
    position: 'uint64_t',
    delivered: 'uint64_t',
  });
  const snapshotView = koffi.struct('herald_snapshot_view', {
    aggregate_version: 'uint64_t',
    timestamp_ns: 'uint64_t',
    state: 'const void *',
    state_len: 'size_t',
  });
  for (const name of ['herald_system', 'herald_reader', 'herald_snapshot', 'herald_subscription', 'herald_buffer']) {
    koffi.opaque(name);
  }
  koffi.alias('herald_status', 'uint32_t');
  const callback = koffi.proto('void herald_event_callback(void *userdata, const herald_event *event)');
  types = { uuid, event, appended, broadcastResult, snapshotView, callbackPointer: koffi.pointer(callback) };
  return types;
}

function declare(lib) {
  declareTypes();
  // The system handle is declared `void *`: a handle shared with a worker thread is rebuilt
  // from its address there (EventSystem.attach), and koffi accepts such a pointer only for
  // `void *` parameters. Every other handle keeps its own type.
  const f = (signature) => lib.func(signature);
  return {
    version: f('const char *herald_version(void)'),
    last_error: f('const char *herald_last_error(void)'),
    status_name: f('const char *herald_status_name(uint32_t status)'),
    buffer_data: f('herald_status herald_buffer_data(const herald_buffer *buffer, _Out_ const void **data_out, _Out_ size_t *len_out)'),
    buffer_free: f('void herald_buffer_free(herald_buffer *buffer)'),
    read_all: f('herald_status herald_read_all(void *system, uint64_t from_position, uint64_t limit, _Out_ herald_reader **reader_out)'),
    read_by_type: f('herald_status herald_read_by_type(void *system, const char *event_type, size_t event_type_len, uint64_t from_position, uint64_t limit, _Out_ herald_reader **reader_out)'),
    read_since: f('herald_status herald_read_since(void *system, uint64_t timestamp_ns, uint64_t limit, _Out_ herald_reader **reader_out)'),
    read_stream: f('herald_status herald_read_stream(void *system, const char *aggregate_id, size_t aggregate_id_len, uint64_t from_version, uint64_t limit, _Out_ herald_reader **reader_out)'),
    reader_next: f('herald_status herald_reader_next(herald_reader *reader, _Out_ herald_event *event_out)'),
    reader_free: f('void herald_reader_free(herald_reader *reader)'),
    snapshot_save: f('herald_status herald_snapshot_save(void *system, const char *aggregate_id, size_t aggregate_id_len, uint64_t aggregate_version, const uint8_t *state, size_t state_len)'),
    snapshot_load: f('herald_status herald_snapshot_load(void *system, const char *aggregate_id, size_t aggregate_id_len, _Out_ herald_snapshot **snapshot_out)'),
    snapshot_get: f('herald_status herald_snapshot_get(const herald_snapshot *snapshot, _Out_ herald_snapshot_view *view_out)'),
    snapshot_free: f('void herald_snapshot_free(herald_snapshot *snapshot)'),
    subscription_new: f('herald_status herald_subscription_new(void *system, const char *pattern, size_t pattern_len, uint32_t start, uint64_t position, _Out_ herald_subscription **subscription_out)'),
    subscription_next: f('herald_status herald_subscription_next(herald_subscription *subscription, uint32_t timeout_ms, _Out_ herald_event *event_out)'),
    subscription_callback_new: f('herald_status herald_subscription_callback_new(void *system, const char *pattern, size_t pattern_len, uint32_t start, uint64_t position, herald_event_callback *callback, void *userdata, _Out_ herald_subscription **subscription_out)'),
    subscription_free: f('void herald_subscription_free(herald_subscription *subscription)'),
    system_new: f('herald_status herald_system_new(const char *preset, size_t preset_len, const char *config_toml, size_t config_toml_len, _Out_ herald_system **system_out)'),
    system_free: f('void herald_system_free(void *system)'),
    system_shutdown: f('herald_status herald_system_shutdown(void *system, uint64_t timeout_ms, _Out_ bool *drained_out)'),
    publish_json: f('herald_status herald_publish_json(void *system, const char *json, size_t json_len, _Out_ herald_appended *appended_out, size_t appended_capacity, _Out_ size_t *count_out)'),
    publish_integration_json: f('herald_status herald_publish_integration_json(void *system, const char *json, size_t json_len, _Out_ herald_appended *appended_out)'),
    broadcast_json: f('herald_status herald_broadcast_json(void *system, const char *json, size_t json_len, _Out_ herald_broadcast_result *result_out)'),
    stream_version: f('herald_status herald_stream_version(void *system, const char *aggregate_id, size_t aggregate_id_len, _Out_ uint64_t *version_out)'),
    metrics_json: f('herald_status herald_metrics_json(void *system, _Out_ herald_buffer **buffer_out)'),
    webhook_create_json: f('herald_status herald_webhook_create_json(void *system, const char *json, size_t json_len, _Out_ herald_buffer **buffer_out)'),
    webhook_list_json: f('herald_status herald_webhook_list_json(void *system, _Out_ herald_buffer **buffer_out)'),
    webhook_delete: f('herald_status herald_webhook_delete(void *system, const char *id, size_t id_len)'),
  };
}

// ---------------------------------------------------------------------------------------------
// Asynchronous calls: a bounded hand-off to koffi's worker threads.

// koffi refuses more than `max_async_calls` (256 by default) running or queued async calls per
// process, and keeps memory for only `resident_async_pools` (4) of them (each further one maps
// its own stack and heap). libuv runs 4 at a time by default (UV_THREADPOOL_SIZE), so a deeper
// hand-off would only queue inside libuv, at a cost.
const MAX_ACTIVE_CALLS = 16;
// Calls waiting here beyond that fail with OverloadedError rather than growing without bound.
const MAX_QUEUED_CALLS = 1 << 16;

const gate = { active: 0, queue: [], head: 0 };

/** Runs `fn.async(...args)`; `done(error, status)` runs on the main thread afterwards. */
function submit(fn, args, done) {
  if (gate.active < MAX_ACTIVE_CALLS) {
    start(fn, args, done);
    return;
  }
  if (gate.queue.length - gate.head >= MAX_QUEUED_CALLS) {
    done(new OverloadedError(`more than ${MAX_QUEUED_CALLS} asynchronous Herald calls are waiting`), 0);
    return;
  }
  gate.queue.push(fn, args, done);
}

function start(fn, args, done) {
  gate.active += 1;
  try {
    fn.async(...args, (error, status) => {
      gate.active -= 1;
      next();
      done(error, status);
    });
  } catch (error) {
    gate.active -= 1;
    done(error, 0);
  }
}

function next() {
  if (gate.head === gate.queue.length) return;
  const fn = gate.queue[gate.head];
  const args = gate.queue[gate.head + 1];
  const done = gate.queue[gate.head + 2];
  gate.queue[gate.head] = gate.queue[gate.head + 1] = gate.queue[gate.head + 2] = undefined;
  gate.head += 3;
  if (gate.head === gate.queue.length) {
    gate.queue.length = 0;
    gate.head = 0;
  } else if (gate.head > 3 * 4096 && gate.head * 2 > gate.queue.length) {
    gate.queue = gate.queue.slice(gate.head);
    gate.head = 0;
  }
  start(fn, args, done);
}

// ---------------------------------------------------------------------------------------------
// Decoding (copies out of borrowed views before the next call on their handle)

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

function uuidString(b) {
  return (
    HEX[b[0]] + HEX[b[1]] + HEX[b[2]] + HEX[b[3]] + '-' + HEX[b[4]] + HEX[b[5]] + '-' +
    HEX[b[6]] + HEX[b[7]] + '-' + HEX[b[8]] + HEX[b[9]] + '-' + HEX[b[10]] + HEX[b[11]] +
    HEX[b[12]] + HEX[b[13]] + HEX[b[14]] + HEX[b[15]]
  );
}

function text(pointer, length) {
  // A Rust empty slice points at a dangling address: never read it.
  return length === 0 ? '' : koffi.decode(pointer, 'char', length);
}

function bytes(pointer, length) {
  // Buffer.from(TypedArray) copies, so the result outlives the borrowed memory.
  return length === 0 ? Buffer.alloc(0) : Buffer.from(new Uint8Array(koffi.view(pointer, length)));
}

const KINDS = [undefined, 'domain', 'integration', 'websocket'];

function decodeEvent(e) {
  return {
    kind: KINDS[e.kind] || 'unknown',
    id: uuidString(e.id.bytes),
    type: text(e.event_type, e.event_type_len),
    aggregateId: text(e.aggregate_id, e.aggregate_id_len),
    aggregateVersion: Number(e.aggregate_version),
    position: Number(e.position),
    timestampNs: BigInt(e.timestamp_ns),
    correlationId: uuidString(e.correlation_id.bytes),
    causationId: e.has_causation_id ? uuidString(e.causation_id.bytes) : null,
    metadata: e.metadata_json_len === 2 ? {} : JSON.parse(text(e.metadata_json, e.metadata_json_len)),
    data: JSON.parse(text(e.data, e.data_len)),
  };
}

function appendedResult(a) {
  return {
    id: uuidString(a.id.bytes),
    position: Number(a.position),
    aggregateVersion: Number(a.aggregate_version),
    alreadyAppended: a.already_appended,
  };
}

/** Reads and frees a herald_buffer (JSON text). */
function takeBuffer(buffer) {
  try {
    const data = [null];
    const length = [0];
    const status = native.buffer_data(buffer, data, length);
    if (status !== OK) throw lastError(status);
    return text(data[0], length[0]);
  } finally {
    native.buffer_free(buffer);
  }
}

function camelCase(key) {
  return key.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
}

function snakeCase(key) {
  return key.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());
}

/** Object keys to camelCase, recursively (metrics and webhook answers). */
function camelKeys(value, renames = {}) {
  if (Array.isArray(value)) return value.map((item) => camelKeys(item, renames));
  if (value === null || typeof value !== 'object') return value;
  const result = {};
  for (const key of Object.keys(value)) {
    result[renames[key] || camelCase(key)] = camelKeys(value[key], renames);
  }
  return result;
}

/** Object keys to snake_case, one level (source objects). */
function snakeKeys(value) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  const result = {};
  for (const key of Object.keys(value)) result[snakeCase(key)] = value[key];
  return result;
}

// ---------------------------------------------------------------------------------------------
// Encoding requests as the spec's JSON (PROTOCOL.md, POST /v1/events and friends)

// While an on() callback runs, publishes default their causation and correlation to the event
// it handles, as Herald does for events published from inside a native callback.
let currentCause = null;

function isObject(value) {
  return value !== null && typeof value === 'object';
}

/** One domain event draft as spec JSON (camelCase fields in, snake_case out). */
function draftJson(e) {
  if (!isObject(e)) throw new TypeError('a domain event must be an object with type, aggregateId and data');
  const draft = { type: e.type, aggregate_id: e.aggregateId, data: e.data };
  if (e.metadata != null) draft.metadata = e.metadata;
  if (e.id != null) draft.id = e.id;
  if (e.expectedVersion != null) draft.expected_version = e.expectedVersion;
  if (e.correlationId != null) draft.correlation_id = e.correlationId;
  else if (currentCause !== null) draft.correlation_id = currentCause.correlationId;
  if (e.causationId != null) draft.causation_id = e.causationId;
  else if (currentCause !== null) draft.causation_id = currentCause.id;
  return draft;
}

function batchJson(events) {
  if (!Array.isArray(events)) throw new TypeError('publishDomainEvents takes an array of events');
  const drafts = new Array(events.length);
  for (let i = 0; i < events.length; i += 1) drafts[i] = draftJson(events[i]);
  return JSON.stringify({ events: drafts });
}

/** An integration event as spec JSON; accepts the plain shape or the seed's class shape. */
function integrationJson(e) {
  if (!isObject(e)) throw new TypeError('an integration event must be an object');
  const method = (name) => (typeof e[name] === 'function' ? e[name]() : undefined);
  const source = e.source !== undefined ? e.source : e.metadata;
  const body = {
    routing_key: e.routingKey !== undefined ? e.routingKey : method('getRoutingKey'),
    version: e.version !== undefined ? e.version : method('getEventVersion'),
    source: snakeKeys(source),
    data: e.data !== undefined ? e.data : method('getEventData'),
  };
  if (e.id != null) body.id = e.id;
  if (e.correlationId != null) body.correlation_id = e.correlationId;
  if (e.causationId != null) body.causation_id = e.causationId;
  return JSON.stringify(body);
}

function timestampText(timestamp) {
  if (timestamp instanceof Date) return timestamp.toISOString();
  if (typeof timestamp === 'number') return new Date(timestamp).toISOString();
  return timestamp;
}

/** A WebSocket event (the seed's camelCase shape) as spec JSON. */
function broadcastJson(e) {
  if (!isObject(e)) throw new TypeError('a WebSocket event must be an object');
  const target = isObject(e.target)
    ? {
        type: e.target.type,
        id: e.target.id,
        exclude_users: e.target.excludeUsers !== undefined ? e.target.excludeUsers : e.target.exclude_users,
      }
    : e.target;
  const body = { type: e.type, event: e.event, data: e.data, target };
  if (e.id != null) body.id = e.id;
  if (e.timestamp != null) body.timestamp = timestampText(e.timestamp);
  if (e.source != null) body.source = snakeKeys(e.source);
  if (e.priority != null) body.priority = e.priority;
  if (e.persistent != null) body.persistent = e.persistent;
  return JSON.stringify(body);
}

function webhookJson(w) {
  if (!isObject(w)) throw new TypeError('a webhook must be an object with url and filters');
  // Herald reads `filter` (as the HTTP API); `filters` is this binding's name for it.
  const body = { url: w.url, filter: w.filters !== undefined ? w.filters : w.filter };
  if (w.description != null) body.description = w.description;
  if (w.secret != null) body.secret = w.secret;
  if (w.metadata != null) body.metadata = w.metadata;
  return JSON.stringify(body);
}

function webhookResult(json) {
  return camelKeys(JSON.parse(json), { filter: 'filters' });
}

/** The position, version or limit as an integer koffi passes as uint64_t. */
function unsigned(value, name) {
  if (value === undefined || value === null) return 0;
  if (typeof value === 'bigint') {
    if (value < 0n) throw new RangeError(`${name} must not be negative`);
    return value;
  }
  if (!Number.isInteger(value) || value < 0) throw new RangeError(`${name} must be a non-negative integer`);
  return value;
}

function nanoseconds(value) {
  if (value instanceof Date) return BigInt(value.getTime()) * 1000000n;
  if (typeof value === 'bigint') return unsigned(value, 'timestamp');
  if (typeof value === 'number') return BigInt(unsigned(Math.trunc(value), 'timestamp'));
  throw new TypeError('readSince takes a Date or unix nanoseconds (bigint or number)');
}

const START_BEGINNING = 0;
const START_END = 1;
const START_POSITION = 2;

function startArgs(start) {
  if (start === undefined || start === 'end') return [START_END, 0];
  if (start === 'beginning') return [START_BEGINNING, 0];
  return [START_POSITION, unsigned(start, 'start')];
}

function tomlWithDataDir(config, dataDir) {
  if (dataDir === undefined || dataDir === null) return config;
  const line = `data_dir = ${JSON.stringify(String(dataDir))}`;
  const text = config || '';
  if (/(^|[.\s])data_dir\s*=/m.test(text)) {
    throw new ConfigError('dataDir is given both as an option and as server.data_dir in the config');
  }
  const header = /^[ \t]*\[[ \t]*server[ \t]*\][ \t]*(#.*)?$/m;
  if (header.test(text)) return text.replace(header, (found) => `${found}\n${line}`);
  return `${text}\n[server]\n${line}\n`;
}

// ---------------------------------------------------------------------------------------------
// Readers

const readerRegistry = new FinalizationRegistry((handle) => native.reader_free(handle));

/** A synchronous iterator over stored events; frees its native reader when done. */
class EventReader {
  #handle;
  #view = {};

  constructor(handle) {
    this.#handle = handle;
    readerRegistry.register(this, handle, this);
  }

  next() {
    const handle = this.#handle;
    if (handle === null) return { value: undefined, done: true };
    const status = native.reader_next(handle, this.#view);
    if (status === OK) return { value: decodeEvent(this.#view), done: false };
    this.close();
    if (status === END) return { value: undefined, done: true };
    throw lastError(status);
  }

  return(value) {
    this.close();
    return { value, done: true };
  }

  throw(error) {
    this.close();
    throw error;
  }

  [Symbol.iterator]() {
    return this;
  }

  /** Frees the native reader now (idempotent); iteration then ends. */
  close() {
    const handle = this.#handle;
    if (handle === null) return;
    this.#handle = null;
    readerRegistry.unregister(this);
    native.reader_free(handle);
  }

  /** Every remaining event as an array. */
  toArray() {
    return Array.from(this);
  }
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

// How long one native wait may last: bounds how late close() takes effect and how long a libuv
// worker thread is held by one call.
const POLL_MS = 250;
// Events taken without a native wait (timeout 0, on the main thread) before yielding to the
// event loop, so draining a backlog cannot starve timers and I/O.
const SYNC_BURST = 256;

const subscriptionRegistry = new FinalizationRegistry((handle) => native.subscription_free(handle));

/** A pull subscription: `for await (const event of subscription)` or `await subscription.next(ms)`. */
class Subscription {
  #handle;
  #view = {};
  #owner;
  #busy = false; // a native call on the handle is running
  #chain = Promise.resolve(); // next() calls run one after another
  #burst = 0;
  #closed = false;
  #freed = null; // resolves when the handle is freed
  #release = null;

  constructor(owner, handle) {
    this.#owner = owner;
    this.#handle = handle;
    this.#freed = new Promise((resolve) => {
      this.#release = resolve;
    });
    subscriptionRegistry.register(this, handle, this);
  }

  get closed() {
    return this.#closed;
  }

  /**
   * The next event, waiting up to `timeoutMs` (default: until one arrives or close()); null on
   * timeout or once closed.
   */
  next(timeoutMs = Infinity) {
    if (typeof timeoutMs !== 'number' || !(timeoutMs >= 0)) {
      return Promise.reject(new RangeError('timeoutMs must be a non-negative number (or Infinity)'));
    }
    const run = () => this.#pull(timeoutMs);
    const result = this.#chain.then(run, run);
    this.#chain = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  async #pull(timeoutMs) {
    if (this.#closed) return null;
    // First without waiting, on this thread: a backlog drains without a thread hop per event.
    if (this.#burst < SYNC_BURST) {
      const status = native.subscription_next(this.#handle, 0, this.#view);
      if (status === OK) {
        this.#burst += 1;
        return decodeEvent(this.#view);
      }
      if (status !== TIMEOUT) throw lastError(status);
    } else {
      await new Promise(setImmediate);
      this.#burst = 0;
      if (this.#closed) return null;
      return this.#pull(timeoutMs);
    }
    this.#burst = 0;
    const deadline = timeoutMs === Infinity ? Infinity : Date.now() + Math.max(0, timeoutMs);
    for (;;) {
      const remaining = deadline - Date.now();
      if (remaining <= 0 || this.#closed) return null;
      const wait = Math.min(POLL_MS, Math.ceil(remaining));
      const event = await this.#wait(wait);
      if (event !== null) return event;
    }
  }

  /** One native wait on a worker thread; the view is copied before anything else runs. */
  #wait(timeoutMs) {
    return new Promise((resolve, reject) => {
      const view = this.#view;
      const args = [this.#handle, timeoutMs, view];
      this.#busy = true;
      submit(native.subscription_next, args, (error, status) => {
        this.#busy = false;
        try {
          if (error) throw error;
          if (status === OK) {
            resolve(decodeEvent(view));
          } else if (status === TIMEOUT) {
            resolve(null);
          } else if (this.#closed) {
            resolve(null);
          } else {
            // The message stayed on the worker thread: ask again here without waiting.
            const again = native.subscription_next(this.#handle, 0, view);
            if (again === OK) resolve(decodeEvent(view));
            else if (again === TIMEOUT) throw makeError(status);
            else throw lastError(again);
          }
        } catch (failure) {
          reject(failure);
        } finally {
          if (this.#closed) this.#free();
        }
      });
    });
  }

  /** Stops the subscription; the handle is freed once no native call runs on it (within ~250 ms). */
  close() {
    if (!this.#closed) {
      this.#closed = true;
      this.#owner._forget(this);
      if (!this.#busy) this.#free();
    }
    return this.#freed;
  }

  #free() {
    const handle = this.#handle;
    if (handle === null) return;
    this.#handle = null;
    subscriptionRegistry.unregister(this);
    native.subscription_free(handle);
    this.#release();
  }

  [Symbol.asyncIterator]() {
    return {
      next: async () => {
        const event = await this.next();
        return event === null ? { value: undefined, done: true } : { value: event, done: false };
      },
      return: async (value) => {
        await this.close();
        return { value, done: true };
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }
}

/**
 * A callback subscription (on()): Herald's own thread calls back for each event; koffi runs the
 * JS function on the main thread while that thread waits, so the borrowed event stays valid
 * while it is copied.
 */
class CallbackSubscription {
  #handle;
  #callback;
  #owner;
  #closing = null;
  #keepAlive;

  constructor(owner, handle, callback) {
    this.#owner = owner;
    this.#handle = handle;
    this.#callback = callback;
    // Keeps the process alive while Herald's thread may call in, as a listening server does:
    // if Node tore its environment down under a call koffi is relaying, it would abort
    // (FATAL ERROR in napi_throw during cleanup). close() clears it once the thread stopped.
    this.#keepAlive = setInterval(() => {}, 2147483647);
  }

  get closed() {
    return this.#closing !== null;
  }

  /**
   * Stops Herald's thread and frees the subscription. The free runs on a worker thread: it waits
   * for a running callback, which needs this (main) thread to be free to run it.
   */
  close() {
    if (this.#closing === null) {
      this.#owner._forget(this);
      const handle = this.#handle;
      this.#handle = null;
      // Not through the gate: a free must not be refused, and the trampoline may only be
      // unregistered after it ran.
      this.#closing = new Promise((resolve) => {
        const free = () => {
          try {
            native.subscription_free.async(handle, () => {
              // Herald's thread has stopped: no call through the trampoline can follow.
              koffi.unregister(this.#callback);
              clearInterval(this.#keepAlive);
              resolve();
            });
          } catch {
            setTimeout(free, 10); // koffi's async queue is full; try again shortly
          }
        };
        free();
      });
    }
    return this.#closing;
  }
}

// ---------------------------------------------------------------------------------------------
// The system

const CONSTRUCT = Symbol('EventSystem.construct');

// A system shared with worker threads (share()/attach()): [attached count, closed flag].
const SHARED_ATTACHED = 0;
const SHARED_CLOSED = 1;

function addressBuffer(address) {
  const buffer = Buffer.alloc(8);
  buffer.writeBigUInt64LE(BigInt(address));
  return buffer;
}

class EventSystem {
  #handle;
  #closed = false;
  #pending = 0; // asynchronous calls on the handle not yet returned
  #owner; // false for an attach()ed view of another thread's system
  #shared = null; // Int32Array over a SharedArrayBuffer once share() was called
  #subscriptions = new Set();
  #released = false;

  /** @private use the static factories */
  constructor(token, handle, owner, shared) {
    if (token !== CONSTRUCT) {
      throw new TypeError('use EventSystem.create(), createForDevelopment(), createForProduction() or createForTesting()');
    }
    this.#handle = handle;
    this.#owner = owner;
    this.#shared = shared;
  }

  /**
   * Opens a system from a preset (`development`, `production`, `testing`; default: the config's
   * `preset` key, else development) and a TOML config.
   */
  static create(options = {}) {
    const lib = loadNative();
    const { preset, config } = options;
    const toml = tomlWithDataDir(config, options.dataDir);
    const out = [null];
    const status = lib.system_new(
      preset == null ? null : preset,
      preset == null ? 0 : Buffer.byteLength(preset),
      toml == null ? null : toml,
      toml == null ? 0 : Buffer.byteLength(toml),
      out,
    );
    if (status !== OK) throw lastError(status);
    return new EventSystem(CONSTRUCT, out[0], true, null);
  }

  /** The development preset: an mmap store in `dataDir` (default ./herald-data), fsync never. */
  static createForDevelopment(options = {}) {
    return EventSystem.create({ preset: 'development', config: options.config, dataDir: options.dataDir });
  }

  /** The production preset: fsync always; the config must set auth.api_keys and auth.jwt_secret. */
  static createForProduction(configToml) {
    if (isObject(configToml)) {
      return EventSystem.create({ preset: 'production', config: configToml.config, dataDir: configToml.dataDir });
    }
    return EventSystem.create({ preset: 'production', config: configToml });
  }

  /** The testing preset: an in-memory store and synchronous dispatch. */
  static createForTesting(options = {}) {
    return EventSystem.create({ preset: 'testing', config: options.config });
  }

  /**
   * A view of a system another thread of this process opened and share()d. Closing the view
   * never frees the system; the owner frees it once every view is closed.
   */
  static attach(token) {
    loadNative();
    if (!isObject(token) || !(token.state instanceof SharedArrayBuffer)) {
      throw new TypeError('attach() takes the token share() returned');
    }
    const state = new Int32Array(token.state);
    Atomics.add(state, SHARED_ATTACHED, 1);
    if (Atomics.load(state, SHARED_CLOSED) !== 0) {
      Atomics.sub(state, SHARED_ATTACHED, 1);
      Atomics.notify(state, SHARED_ATTACHED);
      throw new ClosedError();
    }
    const handle = koffi.decode(addressBuffer(token.address), 'void *');
    return new EventSystem(CONSTRUCT, handle, false, state);
  }

  /** The library's version string. */
  static get version() {
    return loadNative().version();
  }

  /** Where the shared library was loaded from. */
  static get libraryPath() {
    return loadNative().path;
  }

  get closed() {
    return this.#closed;
  }

  /**
   * A token (postMessage-able) with which worker threads attach() to this system. The system is
   * freed only after every attached view is closed.
   */
  share() {
    this.#check();
    if (this.#shared === null) this.#shared = new Int32Array(new SharedArrayBuffer(8));
    return { address: koffi.address(this.#handle), state: this.#shared.buffer };
  }

  // ---- publishing ------------------------------------------------------------------------

  /** Publishes one domain event on a worker thread (an fsync never blocks the event loop). */
  publishDomainEvent(event) {
    const json = JSON.stringify(draftJson(event));
    const appended = {};
    return this.#async(native.publish_json, [null, json, Buffer.byteLength(json), appended, 1, null], () =>
      appendedResult(appended),
    );
  }

  /** Publishes one domain event on this thread. */
  publishDomainEventSync(event) {
    const json = JSON.stringify(draftJson(event));
    const appended = {};
    this.#sync(native.publish_json(this.#live(), json, Buffer.byteLength(json), appended, 1, null));
    return appendedResult(appended);
  }

  /** Publishes events atomically (all or none; contiguous positions) on a worker thread. */
  publishDomainEvents(events) {
    return this.publishJson(batchJson(events));
  }

  /** Publishes events atomically on this thread. */
  publishDomainEventsSync(events) {
    return this.publishJsonSync(batchJson(events));
  }

  /** Publishes a POST /v1/events body as it is (one draft, or {"events": [...]}). */
  publishJson(body) {
    // One UTF-8 encoding, handed over as a pointer (a string would be measured, then encoded).
    const json = Buffer.from(String(body));
    const first = {};
    const count = [0];
    return this.#async(native.publish_json, [null, json, json.length, first, 1, count], () =>
      batchResult(first, count[0]),
    );
  }

  /** publishJson on this thread. */
  publishJsonSync(body) {
    const json = Buffer.from(String(body));
    const first = {};
    const count = [0];
    this.#sync(native.publish_json(this.#live(), json, json.length, first, 1, count));
    return batchResult(first, count[0]);
  }

  /** Publishes an integration event (stored, then routed to matching webhooks). */
  publishIntegrationEvent(event) {
    const json = integrationJson(event);
    const appended = {};
    return this.#async(native.publish_integration_json, [null, json, Buffer.byteLength(json), appended], () =>
      integrationResult(appended),
    );
  }

  publishIntegrationEventSync(event) {
    const json = integrationJson(event);
    const appended = {};
    this.#sync(native.publish_integration_json(this.#live(), json, Buffer.byteLength(json), appended));
    return integrationResult(appended);
  }

  /** Broadcasts a WebSocket event (stored first when persistent). */
  broadcastWebSocketEvent(event) {
    const json = broadcastJson(event);
    const result = {};
    return this.#async(native.broadcast_json, [null, json, Buffer.byteLength(json), result], () =>
      broadcastResult(result),
    );
  }

  broadcastWebSocketEventSync(event) {
    const json = broadcastJson(event);
    const result = {};
    this.#sync(native.broadcast_json(this.#live(), json, Buffer.byteLength(json), result));
    return broadcastResult(result);
  }

  // ---- reading ---------------------------------------------------------------------------

  /** Every event from `fromPosition` in position order (limit 0 or absent: no limit). */
  readAll(options = {}) {
    const out = [null];
    this.#sync(native.read_all(this.#live(), unsigned(options.fromPosition, 'fromPosition'), unsigned(options.limit, 'limit'), out));
    return new EventReader(out[0]);
  }

  /** The domain events of one type from `fromPosition`. */
  readByType(type, options = {}) {
    const name = String(type);
    const out = [null];
    this.#sync(
      native.read_by_type(this.#live(), name, Buffer.byteLength(name), unsigned(options.fromPosition, 'fromPosition'), unsigned(options.limit, 'limit'), out),
    );
    return new EventReader(out[0]);
  }

  /** Every event appended at or after a time (a Date, or unix nanoseconds). */
  readSince(since, options = {}) {
    const out = [null];
    this.#sync(native.read_since(this.#live(), nanoseconds(since), unsigned(options.limit, 'limit'), out));
    return new EventReader(out[0]);
  }

  /** One aggregate's events in version order from `fromVersion` (1-based). */
  readStream(aggregateId, options = {}) {
    const id = String(aggregateId);
    const out = [null];
    this.#sync(
      native.read_stream(this.#live(), id, Buffer.byteLength(id), unsigned(options.fromVersion, 'fromVersion'), unsigned(options.limit, 'limit'), out),
    );
    return new EventReader(out[0]);
  }

  /** The aggregate's current version (0: no such stream). */
  streamVersion(aggregateId) {
    const id = String(aggregateId);
    const out = [0];
    this.#sync(native.stream_version(this.#live(), id, Buffer.byteLength(id), out));
    return Number(out[0]);
  }

  // ---- snapshots -------------------------------------------------------------------------

  /** Saves state bytes as the aggregate's snapshot at `version` (the stream must be there). */
  saveSnapshot(aggregateId, version, state) {
    const id = String(aggregateId);
    const bytesIn = typeof state === 'string' ? Buffer.from(state) : state;
    if (!(bytesIn instanceof Uint8Array)) throw new TypeError('snapshot state must be a Buffer, Uint8Array or string');
    // A zero-length view may carry no address; Herald needs a non-NULL pointer.
    const data = bytesIn.length === 0 ? Buffer.alloc(1) : bytesIn;
    this.#sync(native.snapshot_save(this.#live(), id, Buffer.byteLength(id), unsigned(version, 'version'), data, bytesIn.length));
  }

  /** The newest snapshot, or null when the aggregate has none. */
  loadSnapshot(aggregateId) {
    const id = String(aggregateId);
    const out = [null];
    const status = native.snapshot_load(this.#live(), id, Buffer.byteLength(id), out);
    if (status === 7) return null;
    this.#sync(status);
    const snapshot = out[0];
    try {
      const view = {};
      this.#sync(native.snapshot_get(snapshot, view));
      return {
        aggregateVersion: Number(view.aggregate_version),
        timestampNs: BigInt(view.timestamp_ns),
        state: bytes(view.state, view.state_len),
      };
    } finally {
      native.snapshot_free(snapshot);
    }
  }

  // ---- subscriptions ---------------------------------------------------------------------

  /**
   * A pull subscription over committed events. `pattern` (AMQP topic, e.g. `task.*`) filters
   * domain events by routing key; without it every event of every kind arrives. `start`:
   * 'beginning', 'end' (default) or a position.
   */
  subscribe(options = {}) {
    const [start, position] = startArgs(options.start);
    const pattern = options.pattern == null ? null : String(options.pattern);
    const out = [null];
    this.#sync(
      native.subscription_new(this.#live(), pattern, pattern === null ? 0 : Buffer.byteLength(pattern), start, position, out),
    );
    const subscription = new Subscription(this, out[0]);
    this.#subscriptions.add(subscription);
    return subscription;
  }

  /**
   * Calls `callback(event)` for each committed event, in order, from Herald's own thread (the
   * function runs on this thread; Herald's waits for it). Publishes made while it runs are
   * caused by the event (causationId and correlationId default to it).
   */
  on(callback, options = {}) {
    if (typeof callback !== 'function') throw new TypeError('on() takes a function');
    const [start, position] = startArgs(options.start);
    const pattern = options.pattern == null ? null : String(options.pattern);
    const onError = options.onError;
    const { event: eventType, callbackPointer } = declareTypes();
    const trampoline = koffi.register((userdata, pointer) => {
      let event;
      try {
        event = decodeEvent(koffi.decode(pointer, eventType));
      } catch (error) {
        report(error);
        return;
      }
      const outer = currentCause;
      currentCause = event;
      try {
        callback(event);
      } catch (error) {
        report(error);
      } finally {
        currentCause = outer;
      }
    }, callbackPointer);
    function report(error) {
      if (typeof onError === 'function') onError(error);
      // As an EventEmitter listener's throw would: surface it, without unwinding into Herald.
      else process.nextTick(() => { throw error; });
    }
    const out = [null];
    let status;
    try {
      status = native.subscription_callback_new(
        this.#live(), pattern, pattern === null ? 0 : Buffer.byteLength(pattern), start, position, trampoline, null, out,
      );
    } catch (error) {
      koffi.unregister(trampoline);
      throw error;
    }
    if (status !== OK) {
      const error = lastError(status);
      koffi.unregister(trampoline);
      throw error;
    }
    const subscription = new CallbackSubscription(this, out[0], trampoline);
    this.#subscriptions.add(subscription);
    return subscription;
  }

  /** @private a subscription closed itself */
  _forget(subscription) {
    this.#subscriptions.delete(subscription);
  }

  // ---- webhooks --------------------------------------------------------------------------

  /** Registers a webhook endpoint; the answer carries its id and signing secret. */
  registerWebhook(webhook) {
    const json = webhookJson(webhook);
    const out = [null];
    this.#sync(native.webhook_create_json(this.#live(), json, Buffer.byteLength(json), out));
    return webhookResult(takeBuffer(out[0]));
  }

  listWebhooks() {
    const out = [null];
    this.#sync(native.webhook_list_json(this.#live(), out));
    return webhookResult(takeBuffer(out[0])).webhooks;
  }

  /** Removes an endpoint and drops its pending deliveries (NotFoundError if there is none). */
  deleteWebhook(id) {
    const text = String(id);
    this.#sync(native.webhook_delete(this.#live(), text, Buffer.byteLength(text)));
  }

  // ---- metrics and lifecycle -------------------------------------------------------------

  /** The metrics in the TypeScript event system's shape (camelCase). */
  getMetrics() {
    const out = [null];
    this.#sync(native.metrics_json(this.#live(), out));
    return camelKeys(JSON.parse(takeBuffer(out[0])), { average_handling_time_ms: 'averageHandlingTime' });
  }

  /**
   * Stops accepting publishes (later ones fail with ShuttingDownError), lets dispatch drain for
   * up to `timeoutMs`, and makes everything durable. Resolves to whether dispatch drained in
   * time. Reads keep working until close().
   */
  shutdown(timeoutMs = 5000) {
    const drained = [false];
    return this.#async(native.system_shutdown, [null, unsigned(timeoutMs, 'timeoutMs'), drained], () => drained[0]);
  }

  /**
   * Closes subscriptions and frees the system (a shutdown with 5 s for dispatch to drain, then
   * fsync), once no asynchronous call runs on it. Idempotent; later calls throw ClosedError.
   * Await shutdown() first to keep the drain off the event loop.
   */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    for (const subscription of [...this.#subscriptions]) subscription.close();
    if (this.#owner && this.#shared !== null) Atomics.store(this.#shared, SHARED_CLOSED, 1);
    this.#maybeRelease();
  }

  /** Frees (or, for an attached view, lets go of) the system once no call of ours runs on it. */
  #maybeRelease() {
    if (this.#released || !this.#closed || this.#pending > 0) return;
    if (!this.#owner) {
      this.#released = true;
      this.#handle = null;
      Atomics.sub(this.#shared, SHARED_ATTACHED, 1);
      Atomics.notify(this.#shared, SHARED_ATTACHED);
      return;
    }
    if (this.#shared !== null) {
      const attached = Atomics.load(this.#shared, SHARED_ATTACHED);
      if (attached > 0) {
        const waiting = Atomics.waitAsync(this.#shared, SHARED_ATTACHED, attached);
        const again = () => this.#maybeRelease();
        if (waiting.async) waiting.value.then(again);
        else setImmediate(again);
        return;
      }
    }
    this.#released = true;
    const handle = this.#handle;
    this.#handle = null;
    native.system_free(handle);
  }

  // ---- plumbing --------------------------------------------------------------------------

  #check() {
    if (this.#closed) throw new ClosedError();
  }

  #live() {
    if (this.#closed) throw new ClosedError();
    return this.#handle;
  }

  #sync(status) {
    if (status !== OK) throw lastError(status);
  }

  /**
   * Runs `fn` on a worker thread with the system handle as its first argument; `finish` builds
   * the result on the main thread. Counts the call so close() waits for it before freeing.
   */
  #async(fn, args, finish) {
    if (this.#closed) return Promise.reject(new ClosedError());
    args[0] = this.#handle;
    this.#pending += 1;
    return new Promise((resolve, reject) => {
      submit(fn, args, (error, status) => {
        try {
          if (error) throw error;
          settle(status, fn, args);
          resolve(finish());
        } catch (failure) {
          reject(failure);
        } finally {
          this.#pending -= 1;
          this.#maybeRelease();
        }
      });
    });
  }
}

function batchResult(first, count) {
  return {
    firstPosition: Number(first.position),
    count: Number(count),
    alreadyAppended: first.already_appended,
  };
}

function integrationResult(appended) {
  return { id: uuidString(appended.id.bytes), position: Number(appended.position) };
}

function broadcastResult(result) {
  return {
    persisted: result.persisted,
    position: result.persisted ? Number(result.position) : null,
    delivered: Number(result.delivered),
  };
}

/** The library's version string (loads the library). */
function version() {
  return loadNative().version();
}

module.exports = {
  EventSystem,
  EventReader,
  Subscription,
  CallbackSubscription,
  HeraldError,
  NullParameterError,
  InvalidUtf8Error,
  InvalidArgumentError,
  ConfigError,
  VersionConflictError,
  DuplicateIdError,
  NotFoundError,
  GoneError,
  OverloadedError,
  ShuttingDownError,
  TooLargeError,
  StorageError,
  ConflictError,
  PanicError,
  InternalError,
  ClosedError,
  LibraryNotFoundError,
  version,
  libraryCandidates: () => libraryCandidates().map((candidate) => candidate.path),
};
