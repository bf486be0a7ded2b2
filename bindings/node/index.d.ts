// Type definitions for `herald`, the Node.js binding of Herald's C ABI (include/herald.h).

/// <reference types="node" />

/** JSON values as Herald stores them (event payloads are one JSON value). */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** Event metadata: a JSON object of strings. */
export type Metadata = Record<string, string>;

// ------------------------------------------------------------------------------------------
// Publishing

/** A domain event to publish (POST /v1/events draft, camelCase). */
export interface DomainEventInput {
  /** The event type, e.g. `TaskCreated` (1–256 bytes); its routing key is `task.created`. */
  type: string;
  /** The aggregate (stream) id (1–256 bytes). */
  aggregateId: string;
  /** The payload: any JSON-serialisable value. */
  data: unknown;
  metadata?: Metadata;
  /** A UUID; re-publishing a stored id is an idempotent retry. Default: a new UUIDv7. */
  id?: string;
  /**
   * The stream must be at exactly this version (0: must not exist yet); `'any'` (the default)
   * sets no condition. A miss throws VersionConflictError and stores nothing.
   */
  expectedVersion?: number | 'any';
  /** The workflow id (default: the event's own id, or the handled event's inside on()). */
  correlationId?: string;
  /** The causing event's id (default: none, or the handled event's inside on()). */
  causationId?: string;
}

/** Where a published domain event landed. */
export interface Appended {
  id: string;
  /** Its log position (0-based, gap-free over all kinds). */
  position: number;
  /** Its version within the aggregate (1-based). */
  aggregateVersion: number;
  /** True for an idempotent retry: nothing was appended; these are the original results. */
  alreadyAppended: boolean;
}

/** The outcome of an atomic batch: its positions are firstPosition .. firstPosition+count-1. */
export interface BatchResult {
  firstPosition: number;
  count: number;
  /** True when every id was stored already (an idempotent retry of the whole batch). */
  alreadyAppended: boolean;
}

/** An integration event source: `service` is required; keys are sent in snake_case. */
export interface IntegrationSource {
  service: string;
  userId?: string;
  [key: string]: unknown;
}

/** An integration event (POST /v1/integration-events, camelCase). */
export interface IntegrationEventInput {
  /** Dot-separated words of `[a-z0-9_-]`, e.g. `task.completed`. */
  routingKey: string;
  /** The schema version of `data`, e.g. `1.0.0`. */
  version: string;
  source: IntegrationSource;
  data: unknown;
  id?: string;
  correlationId?: string;
  causationId?: string;
}

/** The seed's class-style integration event (IntegrationEvent subclasses) is accepted too. */
export interface IntegrationEventLike {
  getRoutingKey(): string;
  getEventVersion(): string;
  getEventData(): unknown;
  /** `{service, userId?}`; read from `source`, else `metadata`. */
  source?: IntegrationSource;
  metadata?: IntegrationSource;
  id?: string;
}

export interface IntegrationAppended {
  id: string;
  position: number;
}

export type Priority = 'low' | 'normal' | 'high' | 'critical';

/** A WebSocket event in the seed's shape (POST /v1/broadcast, camelCase). */
export interface WebSocketEventInput {
  /** Any string of 1–256 bytes; default: a new UUIDv7. */
  id?: string;
  /** The event's category, e.g. `task`. */
  type: string;
  /** The event name, e.g. `task.updated`. */
  event: string;
  data: unknown;
  /** A Date, unix milliseconds (as Date.now()) or an RFC 3339 string; default: now. */
  timestamp?: Date | number | string;
  /** Who caused it; keys are sent in snake_case (`userId` → `user_id`). */
  source?: { userId?: string; workspaceId?: string; [key: string]: unknown };
  /** Room `type:id`, or `{type: 'all'}` for every connection. */
  target: { type: string; id?: string; excludeUsers?: string[] };
  /** Default `normal`. */
  priority?: Priority;
  /** Stored for replay (default false). */
  persistent?: boolean;
}

export interface BroadcastResult {
  persisted: boolean;
  /** The log position of a persistent event; null otherwise. */
  position: number | null;
  /** How many connections it was queued on. */
  delivered: number;
}

// ------------------------------------------------------------------------------------------
// Reading

export type EventKind = 'domain' | 'integration' | 'websocket';

/** A stored event, copied out of Herald. */
export interface Event {
  kind: EventKind;
  id: string;
  /** Domain: the event type. Integration: the routing key. WebSocket: the room. */
  type: string;
  /** Empty for kinds without an aggregate. */
  aggregateId: string;
  /** 1-based; 0 for kinds without an aggregate. */
  aggregateVersion: number;
  position: number;
  /** Unix nanoseconds at append. */
  timestampNs: bigint;
  correlationId: string;
  causationId: string | null;
  /** Integration events carry `version` and `source` (JSON text) here; WebSocket events `room`. */
  metadata: Metadata;
  /** The payload, parsed. WebSocket events: the whole WebSocket event object (snake_case). */
  data: any;
}

/**
 * A synchronous iterator over stored events (for...of, spread, Array.from). The native reader
 * is freed when iteration ends, on return() (a `break`), on close(), or when collected.
 */
export class EventReader implements IterableIterator<Event> {
  private constructor();
  next(): IteratorResult<Event, undefined>;
  return(value?: unknown): IteratorResult<Event, undefined>;
  /** Closes the reader and throws `error`. */
  throw(error?: unknown): IteratorResult<Event, undefined>;
  [Symbol.iterator](): EventReader;
  /** Frees the native reader now; iteration then ends. Idempotent. */
  close(): void;
  /** The remaining events as an array. */
  toArray(): Event[];
}

export interface ReadOptions {
  /** First position to read (default 0). */
  fromPosition?: number | bigint;
  /** Most events to read; 0 or absent: no limit. */
  limit?: number | bigint;
}

export interface StreamReadOptions {
  /** First version to read (1-based; default 1). */
  fromVersion?: number | bigint;
  limit?: number | bigint;
}

export interface Snapshot {
  /** The stream version the state reflects. */
  aggregateVersion: number;
  /** Unix nanoseconds when it was saved. */
  timestampNs: bigint;
  /** The state bytes as saved (a copy). */
  state: Buffer;
}

// ------------------------------------------------------------------------------------------
// Subscriptions

export interface SubscribeOptions {
  /**
   * An AMQP topic pattern over domain events' routing keys (`task.*`, `task.#`, `#`);
   * absent: every event of every kind.
   */
  pattern?: string;
  /** 'beginning', 'end' (default: only events committed after subscribing) or a position. */
  start?: 'beginning' | 'end' | number | bigint;
}

/**
 * A pull subscription. Each native wait runs on a libuv worker thread for at most 250 ms, so
 * the event loop is never blocked and close() takes effect within that time. Calls to next()
 * run one after another.
 */
export class Subscription implements AsyncIterable<Event> {
  private constructor();
  readonly closed: boolean;
  /** The next event, waiting up to `timeoutMs` (default: until one arrives or close()); null on timeout or once closed. */
  next(timeoutMs?: number): Promise<Event | null>;
  /** Stops the subscription; resolves once the native handle is freed. Idempotent. */
  close(): Promise<void>;
  /** Ends (done) when the subscription is closed; `break` closes it. */
  [Symbol.asyncIterator](): AsyncIterableIterator<Event>;
}

export interface OnOptions extends SubscribeOptions {
  /** Receives errors the callback throws; default: rethrown as an uncaught exception. */
  onError?: (error: unknown) => void;
}

/** A callback subscription made by on(). */
export class CallbackSubscription {
  private constructor();
  readonly closed: boolean;
  /** Stops Herald's thread (after a running callback returns) and frees it. Idempotent. */
  close(): Promise<void>;
}

// ------------------------------------------------------------------------------------------
// Webhooks and metrics

export interface WebhookInput {
  /** An absolute http(s) URL. */
  url: string;
  /** 1–64 routing-key patterns (`task.*`, `project.#`). `filter` is accepted as an alias. */
  filters?: string[];
  filter?: string[];
  description?: string;
  /** `whsec_<base64>`; default: generated. */
  secret?: string;
  /** Accepted and sent, but not stored by this Herald version. */
  metadata?: Record<string, unknown>;
}

export interface Webhook {
  id: string;
  url: string;
  filters: string[];
  description: string;
  /** The signing secret, `whsec_<base64>`. */
  secret: string;
  enabled: boolean;
  /** RFC 3339. */
  createdAt: string;
}

/** The metrics, in the TypeScript event system's shape. */
export interface Metrics {
  domainEvents: {
    published: number;
    handled: number;
    failed: number;
    /** Milliseconds. */
    averageHandlingTime: number;
    [key: string]: number;
  };
  integrationEvents: {
    published: number;
    webhooksDelivered: number;
    webhooksFailed: number;
    webhooksPending?: number;
    webhooksRetried?: number;
    [key: string]: number | undefined;
  };
  websocketEvents: {
    broadcast: number;
    delivered: number;
    connections: number;
    [key: string]: number;
  };
  eventStore: {
    totalEvents: number;
    totalSnapshots: number;
    /** Bytes. */
    storageSize: number;
    [key: string]: number;
  };
}

// ------------------------------------------------------------------------------------------
// The system

export type Preset = 'development' | 'production' | 'testing';

export interface CreateOptions {
  /** Default: the config's `preset` key, else development. */
  preset?: Preset;
  /** TOML text (docs/config.md). */
  config?: string;
  /** Sets `server.data_dir` (not with a data_dir in `config`). */
  dataDir?: string;
}

/** A token from share(), to be posted to a worker thread and passed to EventSystem.attach(). */
export interface SharedSystem {
  address: bigint;
  state: SharedArrayBuffer;
}

export class EventSystem {
  private constructor();

  static create(options?: CreateOptions): EventSystem;
  /** Development preset: mmap store in `dataDir` (default ./herald-data), fsync never. */
  static createForDevelopment(options?: { dataDir?: string; config?: string }): EventSystem;
  /** Production preset (fsync always); the TOML must set auth.api_keys and auth.jwt_secret. */
  static createForProduction(configToml: string | { config: string; dataDir?: string }): EventSystem;
  /** Testing preset: in-memory store, synchronous dispatch. */
  static createForTesting(options?: { config?: string }): EventSystem;
  /** A view, in a worker thread, of a system another thread share()d. */
  static attach(token: SharedSystem): EventSystem;
  /** The library's version string. */
  static readonly version: string;
  /** The shared library's path. */
  static readonly libraryPath: string;

  readonly closed: boolean;

  /** A postMessage-able token for EventSystem.attach(); the system outlives every attached view. */
  share(): SharedSystem;

  /** Publishes one domain event on a worker thread. */
  publishDomainEvent(event: DomainEventInput): Promise<Appended>;
  publishDomainEventSync(event: DomainEventInput): Appended;
  /** Publishes events atomically (all or none) on a worker thread. */
  publishDomainEvents(events: DomainEventInput[]): Promise<BatchResult>;
  publishDomainEventsSync(events: DomainEventInput[]): BatchResult;
  /** Publishes a POST /v1/events body verbatim (one draft, or {"events": [...]}). */
  publishJson(body: string): Promise<BatchResult>;
  publishJsonSync(body: string): BatchResult;
  publishIntegrationEvent(event: IntegrationEventInput | IntegrationEventLike): Promise<IntegrationAppended>;
  publishIntegrationEventSync(event: IntegrationEventInput | IntegrationEventLike): IntegrationAppended;
  broadcastWebSocketEvent(event: WebSocketEventInput): Promise<BroadcastResult>;
  broadcastWebSocketEventSync(event: WebSocketEventInput): BroadcastResult;

  readAll(options?: ReadOptions): EventReader;
  readByType(type: string, options?: ReadOptions): EventReader;
  /** Events appended at or after a Date, or unix nanoseconds (bigint or number). */
  readSince(since: Date | bigint | number, options?: { limit?: number | bigint }): EventReader;
  readStream(aggregateId: string, options?: StreamReadOptions): EventReader;
  /** The aggregate's current version (0: no such stream). */
  streamVersion(aggregateId: string): number;

  /** The stream must exist (NotFoundError) and be at `version` or later (VersionConflictError). */
  saveSnapshot(aggregateId: string, version: number | bigint, state: Buffer | Uint8Array | string): void;
  loadSnapshot(aggregateId: string): Snapshot | null;

  subscribe(options?: SubscribeOptions): Subscription;
  on(callback: (event: Event) => void, options?: OnOptions): CallbackSubscription;

  registerWebhook(webhook: WebhookInput): Webhook;
  listWebhooks(): Webhook[];
  deleteWebhook(id: string): void;

  getMetrics(): Metrics;

  /** Stops publishing, drains dispatch for up to `timeoutMs` (default 5000); resolves to whether it drained. */
  shutdown(timeoutMs?: number): Promise<boolean>;
  /** Frees the system once no asynchronous call runs on it. Idempotent; later calls throw ClosedError. */
  close(): void;
}

// ------------------------------------------------------------------------------------------
// Errors

export type StatusCode =
  | 'HERALD_NULL_PARAMETER'
  | 'HERALD_INVALID_UTF8'
  | 'HERALD_INVALID_ARGUMENT'
  | 'HERALD_INVALID_CONFIG'
  | 'HERALD_VERSION_CONFLICT'
  | 'HERALD_DUPLICATE_ID'
  | 'HERALD_NOT_FOUND'
  | 'HERALD_GONE'
  | 'HERALD_OVERLOADED'
  | 'HERALD_SHUTTING_DOWN'
  | 'HERALD_TOO_LARGE'
  | 'HERALD_STORAGE'
  | 'HERALD_CONFLICT'
  | 'HERALD_PANIC'
  | 'HERALD_INTERNAL'
  | 'HERALD_UNKNOWN';

/** A failed Herald call: `status` is the herald_status, `code` its name. */
export class HeraldError extends Error {
  constructor(message: string, status?: number);
  readonly status: number;
  readonly code: StatusCode | string;
  static readonly status: number;
}
export class NullParameterError extends HeraldError {}
export class InvalidArgumentError extends HeraldError {}
export class InvalidUtf8Error extends InvalidArgumentError {}
export class ConfigError extends HeraldError {}
export class VersionConflictError extends HeraldError {
  /** Parsed from Herald's message when it has the usual form. */
  readonly aggregateId: string | undefined;
  readonly currentVersion: number | undefined;
}
export class DuplicateIdError extends HeraldError {}
export class NotFoundError extends HeraldError {}
export class GoneError extends HeraldError {}
export class OverloadedError extends HeraldError {}
export class ShuttingDownError extends HeraldError {}
export class TooLargeError extends HeraldError {}
export class StorageError extends HeraldError {}
export class ConflictError extends HeraldError {}
export class PanicError extends HeraldError {}
export class InternalError extends HeraldError {}
/** Use after close(); status HERALD_SHUTTING_DOWN. */
export class ClosedError extends ShuttingDownError {
  constructor(message?: string);
}
/** The shared library could not be loaded. */
export class LibraryNotFoundError extends Error {
  readonly tried: { path: string; error: string }[];
}

/** The library's version string. */
export function version(): string;
/** The library paths tried, in order (HERALD_LIBRARY, target/release, target/debug, system). */
export function libraryCandidates(): string[];
