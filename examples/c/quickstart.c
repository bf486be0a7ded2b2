/*
 * Herald from C, end to end: proves that an in-memory system publishes domain events (one draft,
 * an idempotent retry, a version conflict, an atomic batch), reads them back through readers,
 * saves and loads snapshots, tails the log with pull and callback subscriptions (events published
 * inside a callback carry the handled event as their cause), takes integration events and
 * broadcasts as the spec's JSON, reports metrics, manages webhooks, shuts down cleanly, and that
 * readers, snapshots and subscriptions outlive the system they came from.
 *
 * It is a test: every status and value is checked, and any surprise exits with status 1.
 *
 * Build (from the repository root, after `cargo build -p herald-ffi`):
 *   cc -std=c11 -Iinclude examples/c/quickstart.c -Ltarget/debug -Wl,-rpath,$PWD/target/debug \
 *      -lherald -lpthread -o quickstart && ./quickstart
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "herald.h"

/* How long the main thread waits for the callback subscription before giving up. */
#define CALLBACK_WAIT_MS 5000
/* How long a pull subscription waits for an event that is expected to be there already. */
#define PULL_WAIT_MS 1000
/* How long a pull subscription waits to prove that no further event comes. */
#define QUIET_WAIT_MS 20

/* ---- checking helpers: print where and why, then exit 1 ---- */

static void fail_at(const char *file, int line, const char *what) {
    fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what);
    exit(1);
}

/* The call must return `expected`; on any other status print its name and herald_last_error(). */
static void expect_status_at(const char *file, int line, const char *call, herald_status got, herald_status expected) {
    if (got == expected) {
        return;
    }
    fprintf(stderr, "%s:%d: FAILED: %s returned %s, expected %s; herald_last_error(): %s\n", file, line, call,
            herald_status_name(got), herald_status_name(expected), herald_last_error());
    exit(1);
}

#define CHECK(call) expect_status_at(__FILE__, __LINE__, #call, (call), HERALD_OK)
#define EXPECT_STATUS(call, expected) expect_status_at(__FILE__, __LINE__, #call, (call), (expected))
#define EXPECT(condition)                                                                                              \
    do {                                                                                                               \
        if (!(condition)) {                                                                                            \
            fail_at(__FILE__, __LINE__, #condition);                                                                   \
        }                                                                                                              \
    } while (0)
/* A failed call must leave a message for herald_last_error() on this thread. */
#define EXPECT_FAILURE(call, expected)                                                                                 \
    do {                                                                                                               \
        EXPECT_STATUS(call, expected);                                                                                 \
        EXPECT(herald_last_error()[0] != '\0');                                                                        \
        printf("  expected failure %s: %s\n", herald_status_name(expected), herald_last_error());                     \
    } while (0)

/* ---- small helpers over the ABI's length-delimited strings ---- */

/* Whether the `len` bytes at `bytes` are exactly the NUL-terminated `text`. */
static bool bytes_equal(const void *bytes, size_t len, const char *text) {
    return len == strlen(text) && (len == 0 || memcmp(bytes, text, len) == 0);
}

/* Whether `text` occurs in the `len` bytes at `bytes` (JSON answers are not NUL-terminated). */
static bool bytes_contain(const void *bytes, size_t len, const char *text) {
    size_t needle = strlen(text);
    const char *haystack = bytes;
    for (size_t i = 0; needle <= len && i <= len - needle; i++) {
        if (memcmp(haystack + i, text, needle) == 0) {
            return true;
        }
    }
    return false;
}

static bool uuid_equal(const herald_uuid *a, const herald_uuid *b) {
    return memcmp(a->bytes, b->bytes, sizeof a->bytes) == 0;
}

static bool uuid_is_nil(const herald_uuid *id) {
    static const herald_uuid nil = {{0}};
    return uuid_equal(id, &nil);
}

/* Formats `id` as the canonical 36-character string into `out` (37 bytes). */
static void uuid_format(const herald_uuid *id, char out[37]) {
    static const char hex[] = "0123456789abcdef";
    size_t at = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            out[at++] = '-';
        }
        out[at++] = hex[id->bytes[i] >> 4];
        out[at++] = hex[id->bytes[i] & 0xf];
    }
    out[at] = '\0';
}

static void print_event(const char *prefix, const herald_event *event) {
    char id[37];
    uuid_format(&event->id, id);
    printf("%s#%" PRIu64 " kind=%" PRIu32 " %.*s %.*s v%" PRIu64 " id=%s data=%.*s\n", prefix, event->position,
           event->kind, (int)event->event_type_len, event->event_type, (int)event->aggregate_id_len,
           event->aggregate_id, event->aggregate_version, id, (int)event->data_len, (const char *)event->data);
}

/* A domain draft with the required fields from NUL-terminated strings and no condition. */
static herald_draft draft_of(const char *event_type, const char *aggregate_id, const char *data) {
    herald_draft draft;
    memset(&draft, 0, sizeof draft);
    draft.event_type = event_type;
    draft.event_type_len = strlen(event_type);
    draft.aggregate_id = aggregate_id;
    draft.aggregate_id_len = strlen(aggregate_id);
    draft.data = (const uint8_t *)data;
    draft.data_len = strlen(data);
    draft.expect = HERALD_EXPECT_ANY;
    return draft;
}

/* Counts what a reader yields (and checks the positions rise), then frees it. */
static size_t drain_reader(herald_reader *reader, uint64_t *first_position_out) {
    herald_event event;
    size_t count = 0;
    uint64_t previous = 0;
    herald_status status;
    while ((status = herald_reader_next(reader, &event)) == HERALD_OK) {
        if (count == 0 && first_position_out != NULL) {
            *first_position_out = event.position;
        }
        EXPECT(count == 0 || event.position > previous);
        previous = event.position;
        count++;
    }
    EXPECT_STATUS(status, HERALD_END);
    herald_reader_free(reader);
    return count;
}

/* ---- the callback subscription and the second thread ---- */

/* Shared between the main thread, the publishing thread and Herald's subscription thread. */
struct callback_state {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    const herald_system *system;
    /* Written by the callback under `lock`. */
    size_t handled;
    herald_uuid handled_id;
    uint64_t handled_position;
    herald_status reaction_status;
    herald_appended reaction;
    char reaction_error[256];
    bool reacted;
};

/* On Herald's thread: each TaskCreated is answered with a TaskAssigned on the same aggregate,
 * published from inside the callback, so Herald fills in its causation and correlation ids. */
static void on_task_created(void *userdata, const herald_event *event) {
    struct callback_state *state = userdata;
    print_event("  callback saw ", event);
    herald_draft reaction = draft_of("TaskAssigned", "", "{\"assignee\":\"user-7\"}");
    reaction.aggregate_id = event->aggregate_id; /* valid during this call */
    reaction.aggregate_id_len = event->aggregate_id_len;
    herald_appended appended;
    memset(&appended, 0, sizeof appended);
    herald_status status = herald_publish(state->system, &reaction, &appended);

    pthread_mutex_lock(&state->lock);
    state->handled++;
    state->handled_id = event->id;
    state->handled_position = event->position;
    state->reaction_status = status;
    state->reaction = appended;
    if (status != HERALD_OK) {
        /* herald_last_error() is per thread: copy it here for the main thread to print. */
        snprintf(state->reaction_error, sizeof state->reaction_error, "%s", herald_last_error());
    }
    state->reacted = true;
    pthread_cond_broadcast(&state->changed);
    pthread_mutex_unlock(&state->lock);
}

struct publisher {
    const herald_system *system;
    herald_status status;
    herald_appended appended;
    char error[256];
};

/* A second thread publishes the event the callback reacts to (a system is shared by threads). */
static void *publish_from_thread(void *arg) {
    struct publisher *publisher = arg;
    herald_draft draft = draft_of("TaskCreated", "task-2", "{\"title\":\"Write the C example\"}");
    draft.expect = HERALD_EXPECT_NO_STREAM;
    publisher->status = herald_publish(publisher->system, &draft, &publisher->appended);
    if (publisher->status != HERALD_OK) {
        snprintf(publisher->error, sizeof publisher->error, "%s", herald_last_error());
    }
    return NULL;
}

/* The absolute CLOCK_REALTIME time `timeout_ms` from now, for pthread_cond_timedwait. */
static struct timespec deadline_after(long timeout_ms) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec += 1;
        deadline.tv_nsec -= 1000000000L;
    }
    return deadline;
}

int main(void) {
    /* The version string and the macros agree. */
    char expected_version[32];
    snprintf(expected_version, sizeof expected_version, "%d.%d.%d", HERALD_VERSION_MAJOR, HERALD_VERSION_MINOR,
             HERALD_VERSION_PATCH);
    printf("herald %s\n", herald_version());
    EXPECT(strcmp(herald_version(), expected_version) == 0);
    EXPECT(strcmp(herald_status_name(HERALD_VERSION_CONFLICT), "HERALD_VERSION_CONFLICT") == 0);

    /* An unknown preset is a configuration error that names the preset. */
    herald_system *system = NULL;
    EXPECT_FAILURE(herald_system_new("nonsense", 8, NULL, 0, &system), HERALD_INVALID_CONFIG);
    EXPECT(system == NULL);

    /* The testing preset: in-memory store, synchronous dispatch. */
    CHECK(herald_system_new("testing", 7, NULL, 0, &system));
    EXPECT(system != NULL);

    /* ---- 1. one domain event, with a chosen id and metadata ---- */
    printf("publish\n");
    const herald_uuid task1_id = {{0x01, 0x93, 0x00, 0x00, 0x00, 0x00, 0x70, 0x00, 0x80, 0x00, 0, 0, 0, 0, 0, 1}};
    const char *metadata = "{\"user_id\":\"user-456\",\"project_id\":\"project-101\"}";
    herald_draft created = draft_of("TaskCreated", "task-1", "{\"title\":\"Implement feature X\"}");
    created.metadata_json = (const uint8_t *)metadata;
    created.metadata_json_len = strlen(metadata);
    created.id = &task1_id;
    created.expect = HERALD_EXPECT_NO_STREAM;
    herald_appended appended;
    CHECK(herald_publish(system, &created, &appended));
    EXPECT(uuid_equal(&appended.id, &task1_id));
    EXPECT(appended.position == 0);
    EXPECT(appended.aggregate_version == 1);
    EXPECT(!appended.already_appended);

    /* Re-publishing the same id is an idempotent retry: the original results, nothing appended. */
    herald_appended retried;
    CHECK(herald_publish(system, &created, &retried));
    EXPECT(retried.already_appended);
    EXPECT(retried.position == 0 && retried.aggregate_version == 1 && uuid_equal(&retried.id, &task1_id));

    /* A wrong expected version stores nothing, and leaves the output untouched. */
    herald_draft stale = draft_of("TaskRenamed", "task-1", "{\"title\":\"Y\"}");
    stale.expect = HERALD_EXPECT_EXACT;
    stale.expected_version = 5;
    herald_appended untouched;
    memset(&untouched, 0xAB, sizeof untouched);
    EXPECT_FAILURE(herald_publish(system, &stale, &untouched), HERALD_VERSION_CONFLICT);
    EXPECT(untouched.position == 0xABABABABABABABABULL);

    /* Data that is not JSON is refused. */
    herald_draft broken = draft_of("TaskRenamed", "task-1", "{not json");
    EXPECT_FAILURE(herald_publish(system, &broken, NULL), HERALD_INVALID_ARGUMENT);

    uint64_t version = 99;
    CHECK(herald_stream_version(system, "task-1", 6, &version));
    EXPECT(version == 1);
    CHECK(herald_stream_version(system, "no-such-task", 12, &version));
    EXPECT(version == 0);

    /* ---- 2. an atomic batch, the first draft conditioned on the version ---- */
    printf("publish a batch\n");
    herald_draft batch[2] = {
        draft_of("TaskRenamed", "task-1", "{\"title\":\"Implement feature Y\"}"),
        draft_of("TaskCompleted", "task-1", "{\"done\":true}"),
    };
    batch[0].expect = HERALD_EXPECT_EXACT;
    batch[0].expected_version = 1;
    herald_appended batch_appended[2];
    CHECK(herald_publish_batch(system, batch, 2, batch_appended));
    EXPECT(batch_appended[0].position == 1 && batch_appended[0].aggregate_version == 2);
    EXPECT(batch_appended[1].position == 2 && batch_appended[1].aggregate_version == 3);
    EXPECT(!uuid_is_nil(&batch_appended[0].id) && !uuid_equal(&batch_appended[0].id, &batch_appended[1].id));

    /* The same batch again fails as a whole on its first draft's condition: nothing is stored. */
    batch[0].expected_version = 1;
    EXPECT_FAILURE(herald_publish_batch(system, batch, 2, NULL), HERALD_VERSION_CONFLICT);
    CHECK(herald_stream_version(system, "task-1", 6, &version));
    EXPECT(version == 3);

    /* ---- 3. readers ---- */
    printf("read the stream back\n");
    herald_reader *reader = NULL;
    CHECK(herald_read_stream(system, "task-1", 6, 0, 0, &reader));
    static const char *const task1_types[3] = {"TaskCreated", "TaskRenamed", "TaskCompleted"};
    herald_event event;
    uint64_t completed_timestamp_ns = 0;
    for (uint64_t i = 0; i < 3; i++) {
        CHECK(herald_reader_next(reader, &event));
        print_event("  ", &event);
        EXPECT(event.kind == HERALD_KIND_DOMAIN);
        EXPECT(event.position == i);
        EXPECT(event.aggregate_version == i + 1);
        EXPECT(bytes_equal(event.event_type, event.event_type_len, task1_types[i]));
        EXPECT(bytes_equal(event.aggregate_id, event.aggregate_id_len, "task-1"));
        EXPECT(event.timestamp_ns > 0);
        /* Outside a callback the correlation id defaults to the event's own id, with no cause. */
        EXPECT(uuid_equal(&event.correlation_id, &event.id));
        EXPECT(!event.has_causation_id);
        if (i == 0) {
            EXPECT(uuid_equal(&event.id, &task1_id));
            EXPECT(bytes_equal(event.data, event.data_len, "{\"title\":\"Implement feature X\"}"));
            EXPECT(bytes_contain(event.metadata_json, event.metadata_json_len, "\"user_id\":\"user-456\""));
        } else {
            EXPECT(uuid_equal(&event.id, &batch_appended[i - 1].id));
            EXPECT(bytes_equal(event.metadata_json, event.metadata_json_len, "{}"));
        }
        completed_timestamp_ns = event.timestamp_ns;
    }
    EXPECT_STATUS(herald_reader_next(reader, &event), HERALD_END);
    EXPECT_STATUS(herald_reader_next(reader, &event), HERALD_END); /* END stays END */
    herald_reader_free(reader);

    /* From version 2, at most one event. */
    CHECK(herald_read_stream(system, "task-1", 6, 2, 1, &reader));
    CHECK(herald_reader_next(reader, &event));
    EXPECT(event.aggregate_version == 2 && event.position == 1);
    EXPECT_STATUS(herald_reader_next(reader, &event), HERALD_END);
    herald_reader_free(reader);

    /* An unknown aggregate reads as empty. */
    CHECK(herald_read_stream(system, "no-such-task", 12, 0, 0, &reader));
    EXPECT(drain_reader(reader, NULL) == 0);

    /* By type, the whole log, and by time. */
    uint64_t first_position = UINT64_MAX;
    CHECK(herald_read_by_type(system, "TaskCompleted", 13, 0, 0, &reader));
    EXPECT(drain_reader(reader, &first_position) == 1);
    EXPECT(first_position == 2);
    CHECK(herald_read_all(system, 0, 0, &reader));
    EXPECT(drain_reader(reader, NULL) == 3);
    CHECK(herald_read_all(system, 1, 1, &reader));
    EXPECT(drain_reader(reader, &first_position) == 1);
    EXPECT(first_position == 1);
    CHECK(herald_read_since(system, completed_timestamp_ns, 0, &reader));
    EXPECT(drain_reader(reader, &first_position) >= 1);
    EXPECT(first_position <= 2);
    CHECK(herald_read_since(system, UINT64_MAX, 0, &reader));
    EXPECT(drain_reader(reader, NULL) == 0);

    /* ---- 4. snapshots ---- */
    printf("snapshots\n");
    /* Binary state with a NUL inside: lengths, not terminators. */
    static const uint8_t state_v2[] = {'v', '2', 0x00, 0xff};
    static const uint8_t state_v3[] = {'v', '3', 0x00, 0x01, 0x02, 0xfe};
    CHECK(herald_snapshot_save(system, "task-1", 6, 2, state_v2, sizeof state_v2));
    CHECK(herald_snapshot_save(system, "task-1", 6, 3, state_v3, sizeof state_v3));
    EXPECT_FAILURE(herald_snapshot_save(system, "task-1", 6, 4, state_v3, sizeof state_v3), HERALD_VERSION_CONFLICT);
    EXPECT_FAILURE(herald_snapshot_save(system, "no-such-task", 12, 1, state_v3, sizeof state_v3), HERALD_NOT_FOUND);
    herald_snapshot *snapshot = NULL;
    CHECK(herald_snapshot_load(system, "task-1", 6, &snapshot));
    herald_snapshot_view view;
    CHECK(herald_snapshot_get(snapshot, &view));
    EXPECT(view.aggregate_version == 3);
    EXPECT(view.timestamp_ns > 0);
    EXPECT(view.state_len == sizeof state_v3 && memcmp(view.state, state_v3, sizeof state_v3) == 0);
    EXPECT((uintptr_t)view.state % 16 == 0); /* documented alignment */
    herald_snapshot_free(snapshot);
    snapshot = NULL;
    EXPECT_FAILURE(herald_snapshot_load(system, "no-such-task", 12, &snapshot), HERALD_NOT_FOUND);
    EXPECT(snapshot == NULL);

    /* ---- 5. a callback subscription, fed by a publish from a second thread ---- */
    printf("callback subscription\n");
    struct callback_state state;
    memset(&state, 0, sizeof state);
    EXPECT(pthread_mutex_init(&state.lock, NULL) == 0);
    EXPECT(pthread_cond_init(&state.changed, NULL) == 0);
    state.system = system;
    herald_subscription *callback_subscription = NULL;
    /* Only TaskCreated (routing key task.created), so the TaskAssigned it publishes is not fed
     * back to it; only events committed from now on. */
    CHECK(herald_subscription_callback_new(system, "task.created", 12, HERALD_START_END, 0, on_task_created, &state,
                                           &callback_subscription));
    /* A callback subscription cannot be pulled. */
    EXPECT_FAILURE(herald_subscription_next(callback_subscription, 0, &event), HERALD_CONFLICT);

    struct publisher publisher;
    memset(&publisher, 0, sizeof publisher);
    publisher.system = system;
    pthread_t thread;
    EXPECT(pthread_create(&thread, NULL, publish_from_thread, &publisher) == 0);
    EXPECT(pthread_join(thread, NULL) == 0);
    if (publisher.status != HERALD_OK) {
        fprintf(stderr, "publish from the second thread: %s: %s\n", herald_status_name(publisher.status),
                publisher.error);
        return 1;
    }
    EXPECT(publisher.appended.position == 3 && publisher.appended.aggregate_version == 1);

    struct timespec deadline = deadline_after(CALLBACK_WAIT_MS);
    EXPECT(pthread_mutex_lock(&state.lock) == 0);
    int wait_result = 0;
    while (!state.reacted && wait_result != ETIMEDOUT) {
        wait_result = pthread_cond_timedwait(&state.changed, &state.lock, &deadline);
        EXPECT(wait_result == 0 || wait_result == ETIMEDOUT);
    }
    bool reacted = state.reacted;
    EXPECT(pthread_mutex_unlock(&state.lock) == 0);
    EXPECT(reacted); /* else the callback did not run within CALLBACK_WAIT_MS */

    /* Freeing stops Herald's thread (waiting for a running callback); after it nothing runs. */
    herald_subscription_free(callback_subscription);
    EXPECT(state.handled == 1);
    if (state.reaction_status != HERALD_OK) {
        fprintf(stderr, "publish inside the callback: %s: %s\n", herald_status_name(state.reaction_status),
                state.reaction_error);
        return 1;
    }
    EXPECT(uuid_equal(&state.handled_id, &publisher.appended.id));
    EXPECT(state.handled_position == 3);
    EXPECT(state.reaction.position == 4 && state.reaction.aggregate_version == 2);
    pthread_cond_destroy(&state.changed);
    pthread_mutex_destroy(&state.lock);

    /* The reaction is caused by the handled event and shares its workflow (correlation) id. */
    CHECK(herald_read_stream(system, "task-2", 6, 0, 0, &reader));
    CHECK(herald_reader_next(reader, &event));
    print_event("  ", &event);
    herald_uuid handled_id = event.id, handled_correlation = event.correlation_id;
    EXPECT(uuid_equal(&handled_id, &publisher.appended.id));
    EXPECT(!event.has_causation_id);
    CHECK(herald_reader_next(reader, &event));
    print_event("  ", &event);
    EXPECT(bytes_equal(event.event_type, event.event_type_len, "TaskAssigned"));
    EXPECT(uuid_equal(&event.id, &state.reaction.id));
    EXPECT(event.has_causation_id);
    EXPECT(uuid_equal(&event.causation_id, &handled_id));
    EXPECT(uuid_equal(&event.correlation_id, &handled_correlation));
    EXPECT_STATUS(herald_reader_next(reader, &event), HERALD_END);
    herald_reader_free(reader);

    /* ---- 6. the JSON calls: domain events, an integration event, broadcasts ---- */
    printf("JSON publishes\n");
    const char *events_json = "{\"events\": ["
                              "{\"type\":\"TaskCreated\",\"aggregate_id\":\"task-3\",\"data\":{\"title\":\"Z\"},"
                              "\"expected_version\":0,\"metadata\":{\"user_id\":\"user-1\"}},"
                              "{\"type\":\"TaskStarted\",\"aggregate_id\":\"task-3\",\"data\":{}}]}";
    herald_appended json_appended[4];
    size_t published = 0;
    CHECK(herald_publish_json(system, (const uint8_t *)events_json, strlen(events_json), json_appended, 4,
                              &published));
    EXPECT(published == 2);
    EXPECT(json_appended[0].position == 5 && json_appended[0].aggregate_version == 1);
    EXPECT(json_appended[1].position == 6 && json_appended[1].aggregate_version == 2);
    const char *not_json = "{\"events\": [";
    EXPECT_FAILURE(herald_publish_json(system, (const uint8_t *)not_json, strlen(not_json), NULL, 0, NULL),
                   HERALD_INVALID_ARGUMENT);

    const char *integration_json = "{\"routing_key\":\"task.completed\",\"version\":\"1.0.0\","
                                   "\"source\":{\"service\":\"quickstart\"},\"data\":{\"task_id\":\"task-1\"}}";
    herald_appended integration;
    CHECK(herald_publish_integration_json(system, (const uint8_t *)integration_json, strlen(integration_json),
                                          &integration));
    EXPECT(integration.position == 7 && integration.aggregate_version == 0 && !uuid_is_nil(&integration.id));

    const char *broadcast_json = "{\"type\":\"task\",\"event\":\"task.updated\",\"data\":{\"task_id\":\"task-1\"},"
                                 "\"target\":{\"type\":\"project\",\"id\":\"project-101\"},\"persistent\":true}";
    herald_broadcast_result broadcast;
    CHECK(herald_broadcast_json(system, (const uint8_t *)broadcast_json, strlen(broadcast_json), &broadcast));
    EXPECT(broadcast.persisted && broadcast.position == 8 && broadcast.delivered == 0);
    const char *transient_json = "{\"type\":\"task\",\"event\":\"task.typing\",\"data\":{},"
                                 "\"target\":{\"type\":\"all\"}}";
    CHECK(herald_broadcast_json(system, (const uint8_t *)transient_json, strlen(transient_json), &broadcast));
    EXPECT(!broadcast.persisted && broadcast.delivered == 0);
    const uint64_t total_events = 9; /* positions 0..8; the transient broadcast is not stored */

    /* ---- 7. pull subscriptions from the beginning ---- */
    printf("pull subscription\n");
    herald_subscription *everything = NULL;
    CHECK(herald_subscription_new(system, NULL, 0, HERALD_START_BEGINNING, 0, &everything));
    for (uint64_t i = 0; i < total_events; i++) {
        CHECK(herald_subscription_next(everything, PULL_WAIT_MS, &event));
        EXPECT(event.position == i);
        uint32_t kind = i == 7 ? HERALD_KIND_INTEGRATION : i == 8 ? HERALD_KIND_WEBSOCKET : HERALD_KIND_DOMAIN;
        EXPECT(event.kind == kind);
        if (i == 7) {
            EXPECT(uuid_equal(&event.id, &integration.id));
            EXPECT(event.aggregate_id_len == 0);
        }
    }
    EXPECT_STATUS(herald_subscription_next(everything, QUIET_WAIT_MS, &event), HERALD_TIMEOUT);

    /* Live: an event published now reaches the open subscription. */
    herald_draft live = draft_of("TaskArchived", "task-1", "{}");
    CHECK(herald_publish(system, &live, &appended));
    EXPECT(appended.position == total_events && appended.aggregate_version == 4);
    CHECK(herald_subscription_next(everything, PULL_WAIT_MS, &event));
    EXPECT(event.position == total_events);
    EXPECT(bytes_equal(event.event_type, event.event_type_len, "TaskArchived"));
    herald_subscription_free(everything);

    /* A pattern takes only matching domain events. */
    herald_subscription *created_only = NULL;
    CHECK(herald_subscription_new(system, "task.created", 12, HERALD_START_BEGINNING, 0, &created_only));
    static const uint64_t created_positions[3] = {0, 3, 5};
    for (size_t i = 0; i < 3; i++) {
        CHECK(herald_subscription_next(created_only, PULL_WAIT_MS, &event));
        EXPECT(event.position == created_positions[i]);
        EXPECT(bytes_equal(event.event_type, event.event_type_len, "TaskCreated"));
    }
    EXPECT_STATUS(herald_subscription_next(created_only, QUIET_WAIT_MS, &event), HERALD_TIMEOUT);
    herald_subscription_free(created_only);

    /* From a position. */
    herald_subscription *from_seven = NULL;
    CHECK(herald_subscription_new(system, NULL, 0, HERALD_START_POSITION, 7, &from_seven));
    CHECK(herald_subscription_next(from_seven, PULL_WAIT_MS, &event));
    EXPECT(event.position == 7 && event.kind == HERALD_KIND_INTEGRATION);
    herald_subscription_free(from_seven);

    EXPECT_FAILURE(herald_subscription_new(system, "task.x*", 7, HERALD_START_END, 0, &from_seven),
                   HERALD_INVALID_ARGUMENT);
    EXPECT_FAILURE(herald_subscription_new(system, NULL, 0, 42, 0, &from_seven), HERALD_INVALID_ARGUMENT);

    /* ---- 8. webhooks (filtered away from the integration event above: nothing is sent) ---- */
    printf("webhooks\n");
    const char *webhook_json = "{\"url\":\"http://127.0.0.1:9/hook\",\"filter\":[\"billing.#\"],"
                               "\"description\":\"quickstart\"}";
    herald_buffer *buffer = NULL;
    const uint8_t *data = NULL;
    size_t len = 0;
    CHECK(herald_webhook_create_json(system, (const uint8_t *)webhook_json, strlen(webhook_json), &buffer));
    CHECK(herald_buffer_data(buffer, &data, &len));
    printf("  created %.*s\n", (int)len, (const char *)data);
    EXPECT(bytes_contain(data, len, "\"secret\":\"whsec_"));
    /* The id: the string value after "id":" (ids look like wh_…). */
    char webhook_id[128] = {0};
    const char *id_key = "\"id\":\"";
    for (size_t i = 0; i + strlen(id_key) < len; i++) {
        if (memcmp(data + i, id_key, strlen(id_key)) == 0) {
            const char *start = (const char *)data + i + strlen(id_key);
            const char *end = memchr(start, '"', len - (size_t)(start - (const char *)data));
            EXPECT(end != NULL && (size_t)(end - start) < sizeof webhook_id);
            memcpy(webhook_id, start, (size_t)(end - start));
            break;
        }
    }
    EXPECT(strncmp(webhook_id, "wh_", 3) == 0);
    herald_buffer_free(buffer);

    CHECK(herald_webhook_list_json(system, &buffer));
    CHECK(herald_buffer_data(buffer, &data, &len));
    EXPECT(bytes_contain(data, len, "\"webhooks\""));
    EXPECT(bytes_contain(data, len, webhook_id));
    herald_buffer_free(buffer);
    CHECK(herald_webhook_delete(system, webhook_id, strlen(webhook_id)));
    EXPECT_FAILURE(herald_webhook_delete(system, webhook_id, strlen(webhook_id)), HERALD_NOT_FOUND);
    const char *no_filter = "{\"url\":\"http://127.0.0.1:9/hook\"}";
    EXPECT_FAILURE(herald_webhook_create_json(system, (const uint8_t *)no_filter, strlen(no_filter), &buffer),
                   HERALD_INVALID_ARGUMENT);

    /* ---- 9. metrics ---- */
    CHECK(herald_metrics_json(system, &buffer));
    CHECK(herald_buffer_data(buffer, &data, &len));
    printf("metrics %.*s\n", (int)len, (const char *)data);
    EXPECT(bytes_contain(data, len, "\"domain_events\""));
    EXPECT(bytes_contain(data, len, "\"integration_events\""));
    EXPECT(bytes_contain(data, len, "\"websocket_events\""));
    EXPECT(bytes_contain(data, len, "\"event_store\""));
    EXPECT(bytes_contain(data, len, "\"total_events\":10")); /* 9 above plus TaskArchived */
    EXPECT(bytes_contain(data, len, "\"total_snapshots\":2"));
    EXPECT(bytes_contain(data, len, "\"published\":8")); /* domain events, TaskArchived included */
    EXPECT(bytes_contain(data, len, "\"broadcast\":2"));
    herald_buffer_free(buffer);

    /* ---- 10. shutdown: publishes are refused, reads keep working ---- */
    printf("shutdown\n");
    bool drained = false;
    CHECK(herald_system_shutdown(system, 2000, &drained));
    EXPECT(drained);
    EXPECT_FAILURE(herald_publish(system, &live, NULL), HERALD_SHUTTING_DOWN);
    CHECK(herald_read_all(system, 0, 0, &reader));
    EXPECT(drain_reader(reader, NULL) == total_events + 1);

    /* Readers, snapshots and subscriptions stay valid after their system is freed. */
    herald_subscription *after = NULL;
    CHECK(herald_read_stream(system, "task-1", 6, 0, 0, &reader));
    CHECK(herald_snapshot_load(system, "task-1", 6, &snapshot));
    CHECK(herald_subscription_new(system, NULL, 0, HERALD_START_POSITION, total_events, &after));
    herald_system_free(system);
    system = NULL;
    EXPECT(drain_reader(reader, NULL) == 4);
    CHECK(herald_snapshot_get(snapshot, &view));
    EXPECT(view.aggregate_version == 3 && view.state_len == sizeof state_v3);
    herald_snapshot_free(snapshot);
    CHECK(herald_subscription_next(after, PULL_WAIT_MS, &event));
    EXPECT(event.position == total_events);
    EXPECT_STATUS(herald_subscription_next(after, QUIET_WAIT_MS, &event), HERALD_TIMEOUT);
    herald_subscription_free(after);

    printf("ok\n");
    return 0;
}
