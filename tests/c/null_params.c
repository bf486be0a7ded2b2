/*
 * Proves the C ABI's argument checks: every exported function, given NULL in each pointer
 * argument in turn (the others valid), returns HERALD_NULL_PARAMETER without writing any output,
 * or the documented default where NULL is allowed (*_free(NULL) is a no-op, optional outputs
 * and inputs may be NULL); text that is not UTF-8 gives HERALD_INVALID_UTF8 and a length beyond
 * any buffer HERALD_INVALID_ARGUMENT; and each failure leaves its own message, naming the
 * argument, for herald_last_error().
 *
 * tests/c/check_coverage.sh fails the build when a function declared in include/herald.h is not
 * called here, so every new export needs its NULL cases in this file.
 *
 * Runs every case and reports all failures; exits 1 if any case failed.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald.h"

/* The bytes 0xff 0xfe are never UTF-8; "agg-" followed by a lone lead byte is a cut sequence. */
static const char NOT_UTF8[] = "agg-\xc3";
#define NOT_UTF8_LEN (sizeof NOT_UTF8 - 1)
/* Beyond isize::MAX: no buffer can be this long, so the length itself is refused. */
#define TOO_LONG SIZE_MAX

/* A message no real call produces: the last error before each case is reset to it, so a case can
 * tell that its own call stored a message. */
#define RESET_MARK "reset-mark-before-case"

static int failures;
static int cases;

static void reset_last_error(void) {
    herald_system *unused = NULL;
    /* An unknown preset fails with a message that quotes the name. */
    herald_status status = herald_system_new(RESET_MARK, strlen(RESET_MARK), NULL, 0, &unused);
    if (status != HERALD_INVALID_CONFIG || unused != NULL || strstr(herald_last_error(), RESET_MARK) == NULL) {
        fprintf(stderr, "FATAL: cannot reset the last error (status %s, message %s)\n", herald_status_name(status),
                herald_last_error());
        exit(1);
    }
}

/* Whether `message` contains every space-separated word of `words` (so "draft event_type" holds
 * for "draft.event_type …" and for "draft: `event_type` …": the test pins names, not wording). */
static bool mentions_all(const char *message, const char *words) {
    char word[64];
    const char *at = words;
    while (*at != '\0') {
        size_t len = strcspn(at, " ");
        if (len > 0) {
            if (len >= sizeof word) {
                return false;
            }
            memcpy(word, at, len);
            word[len] = '\0';
            if (strstr(message, word) == NULL) {
                return false;
            }
        }
        at += len + (at[len] == ' ');
    }
    return true;
}

/* One case: `call` returned `got`, the documented answer is `expected`; a failure must leave a
 * fresh, non-empty message mentioning every word of `fragment` (when not NULL). */
static void check_case(int line, const char *call, herald_status got, herald_status expected, const char *fragment) {
    cases++;
    if (got != expected) {
        failures++;
        fprintf(stderr, "null_params.c:%d: %s returned %s, expected %s (herald_last_error(): %s)\n", line, call,
                herald_status_name(got), herald_status_name(expected), herald_last_error());
        return;
    }
    if (expected == HERALD_OK) {
        return;
    }
    const char *message = herald_last_error();
    if (message == NULL || message[0] == '\0' || strstr(message, RESET_MARK) != NULL) {
        failures++;
        fprintf(stderr, "null_params.c:%d: %s failed with %s but left no message of its own (herald_last_error(): %s)\n",
                line, call, herald_status_name(got), message == NULL ? "NULL" : message);
        return;
    }
    if (fragment != NULL && !mentions_all(message, fragment)) {
        failures++;
        fprintf(stderr, "null_params.c:%d: %s: the message does not name `%s`: %s\n", line, call, fragment, message);
    }
}

/* A plain condition (outputs untouched, handles made, …). */
static void check_that(int line, const char *what, bool holds) {
    cases++;
    if (!holds) {
        failures++;
        fprintf(stderr, "null_params.c:%d: FAILED: %s\n", line, what);
    }
}

/* Each wrapper stringifies its own argument, so reports show `NULL`, not its expansion. */
#define RUN_CASE(text, call, expected, fragment)                                                                       \
    check_case(__LINE__, text, (reset_last_error(), (call)), (expected), (fragment))
#define CASE(call, expected, fragment) RUN_CASE(#call, call, expected, fragment)
/* NULL in the argument `name`: HERALD_NULL_PARAMETER, and the message names it. */
#define NULL_CASE(call, name) RUN_CASE(#call, call, HERALD_NULL_PARAMETER, name)
#define UTF8_CASE(call, name) RUN_CASE(#call, call, HERALD_INVALID_UTF8, name)
#define TOO_LONG_CASE(call, name) RUN_CASE(#call, call, HERALD_INVALID_ARGUMENT, name)
#define OK_CASE(call) RUN_CASE(#call, call, HERALD_OK, NULL)
#define THAT(condition) check_that(__LINE__, #condition, (condition))

/* Must be set up or the rest cannot run. */
#define SETUP(call)                                                                                                    \
    do {                                                                                                               \
        herald_status setup_status = (call);                                                                           \
        if (setup_status != HERALD_OK) {                                                                               \
            fprintf(stderr, "FATAL: %s: %s: %s\n", #call, herald_status_name(setup_status), herald_last_error());     \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

/* Distinct addresses to pre-fill out-pointers with: a failed call must leave them as they were. */
static char sentinel_bytes[8];
#define SENTINEL_SYSTEM ((herald_system *)(void *)&sentinel_bytes[0])
#define SENTINEL_READER ((herald_reader *)(void *)&sentinel_bytes[1])
#define SENTINEL_SNAPSHOT ((herald_snapshot *)(void *)&sentinel_bytes[2])
#define SENTINEL_SUBSCRIPTION ((herald_subscription *)(void *)&sentinel_bytes[3])
#define SENTINEL_BUFFER ((herald_buffer *)(void *)&sentinel_bytes[4])
#define SENTINEL_DATA ((const uint8_t *)&sentinel_bytes[5])
#define SENTINEL_NUMBER 0x5A5A5A5Au

static void ignore_event(void *userdata, const herald_event *event) {
    (void)userdata;
    (void)event;
}

/* A valid draft (each case then spoils one field). */
static herald_draft valid_draft(void) {
    herald_draft draft;
    memset(&draft, 0, sizeof draft);
    draft.event_type = "ThingHappened";
    draft.event_type_len = strlen(draft.event_type);
    draft.aggregate_id = "agg-1";
    draft.aggregate_id_len = 5;
    draft.data = (const uint8_t *)"{}";
    draft.data_len = 2;
    draft.expect = HERALD_EXPECT_ANY;
    return draft;
}

static uint64_t version_of(const herald_system *system, const char *aggregate_id) {
    uint64_t version = SENTINEL_NUMBER;
    SETUP(herald_stream_version(system, aggregate_id, strlen(aggregate_id), &version));
    return version;
}

/* The functions that cannot fail: static strings, never NULL. */
static void static_strings(void) {
    THAT(herald_version() != NULL && herald_version()[0] != '\0');
    THAT(herald_last_error() != NULL);
    for (uint32_t status = HERALD_OK; status <= HERALD_INTERNAL; status++) {
        const char *name = herald_status_name(status);
        THAT(name != NULL && strncmp(name, "HERALD_", 7) == 0 && strcmp(name, "HERALD_UNKNOWN") != 0);
    }
    THAT(strcmp(herald_status_name(HERALD_NULL_PARAMETER), "HERALD_NULL_PARAMETER") == 0);
    THAT(strcmp(herald_status_name(HERALD_INTERNAL + 1), "HERALD_UNKNOWN") == 0);
    THAT(strcmp(herald_status_name(UINT32_MAX), "HERALD_UNKNOWN") == 0);
}

static void frees_take_null(void) {
    herald_buffer_free(NULL);
    herald_reader_free(NULL);
    herald_snapshot_free(NULL);
    herald_subscription_free(NULL);
    herald_system_free(NULL);
    THAT("every *_free(NULL) returned");
}

static void system_new(void) {
    herald_system *system = SENTINEL_SYSTEM;
    NULL_CASE(herald_system_new("testing", 7, NULL, 0, NULL), "system_out");
    UTF8_CASE(herald_system_new(NOT_UTF8, NOT_UTF8_LEN, NULL, 0, &system), "preset");
    UTF8_CASE(herald_system_new("testing", 7, NOT_UTF8, NOT_UTF8_LEN, &system), "config_toml");
    TOO_LONG_CASE(herald_system_new("testing", TOO_LONG, NULL, 0, &system), "preset_len");
    TOO_LONG_CASE(herald_system_new("testing", 7, "", TOO_LONG, &system), "config_toml_len");
    CASE(herald_system_new("testing", 7, "[store", 6, &system), HERALD_INVALID_CONFIG, NULL);
    THAT(system == SENTINEL_SYSTEM);

    /* NULL preset: the config's `preset` key (NULL and NULL would open `development` on disk). */
    const char *config = "preset = \"testing\"\n";
    system = NULL;
    OK_CASE(herald_system_new(NULL, 0, config, strlen(config), &system));
    THAT(system != NULL);
    herald_system_free(system);
    /* NULL config: the preset's defaults. */
    system = NULL;
    OK_CASE(herald_system_new("testing", 7, NULL, 0, &system));
    THAT(system != NULL);
    herald_system_free(system);
}

static void system_shutdown(void) {
    herald_system *system = NULL;
    SETUP(herald_system_new("testing", 7, NULL, 0, &system));
    NULL_CASE(herald_system_shutdown(NULL, 100, NULL), "system");
    /* drained_out is optional. */
    OK_CASE(herald_system_shutdown(system, 1000, NULL));
    herald_draft draft = valid_draft();
    CASE(herald_publish(system, &draft, NULL), HERALD_SHUTTING_DOWN, NULL);
    bool drained = false;
    OK_CASE(herald_system_shutdown(system, 1000, &drained)); /* a second shutdown is harmless */
    THAT(drained);
    herald_system_free(system);
}

static void buffers(const herald_system *system) {
    herald_buffer *buffer = NULL;
    SETUP(herald_metrics_json(system, &buffer));
    const uint8_t *data = SENTINEL_DATA;
    size_t len = SENTINEL_NUMBER;
    NULL_CASE(herald_buffer_data(NULL, &data, &len), "buffer");
    NULL_CASE(herald_buffer_data(buffer, NULL, &len), "data_out");
    NULL_CASE(herald_buffer_data(buffer, &data, NULL), "len_out");
    THAT(data == SENTINEL_DATA && len == SENTINEL_NUMBER);
    OK_CASE(herald_buffer_data(buffer, &data, &len));
    THAT(data != SENTINEL_DATA && len > 0);
    herald_buffer_free(buffer);
}

static void readers(const herald_system *system) {
    herald_reader *reader = SENTINEL_READER;
    NULL_CASE(herald_read_all(NULL, 0, 0, &reader), "system");
    NULL_CASE(herald_read_all(system, 0, 0, NULL), "reader_out");

    NULL_CASE(herald_read_by_type(NULL, "ThingHappened", 13, 0, 0, &reader), "system");
    NULL_CASE(herald_read_by_type(system, NULL, 13, 0, 0, &reader), "event_type");
    NULL_CASE(herald_read_by_type(system, NULL, 0, 0, 0, &reader), "event_type"); /* even when empty */
    NULL_CASE(herald_read_by_type(system, "ThingHappened", 13, 0, 0, NULL), "reader_out");
    UTF8_CASE(herald_read_by_type(system, NOT_UTF8, NOT_UTF8_LEN, 0, 0, &reader), "event_type");
    TOO_LONG_CASE(herald_read_by_type(system, "ThingHappened", TOO_LONG, 0, 0, &reader), "event_type_len");

    NULL_CASE(herald_read_since(NULL, 0, 0, &reader), "system");
    NULL_CASE(herald_read_since(system, 0, 0, NULL), "reader_out");

    NULL_CASE(herald_read_stream(NULL, "agg-1", 5, 0, 0, &reader), "system");
    NULL_CASE(herald_read_stream(system, NULL, 5, 0, 0, &reader), "aggregate_id");
    NULL_CASE(herald_read_stream(system, "agg-1", 5, 0, 0, NULL), "reader_out");
    UTF8_CASE(herald_read_stream(system, NOT_UTF8, NOT_UTF8_LEN, 0, 0, &reader), "aggregate_id");
    TOO_LONG_CASE(herald_read_stream(system, "agg-1", TOO_LONG, 0, 0, &reader), "aggregate_id_len");
    THAT(reader == SENTINEL_READER);

    reader = NULL;
    OK_CASE(herald_read_stream(system, "agg-1", 5, 0, 0, &reader));
    herald_event event;
    memset(&event, 0x5A, sizeof event);
    NULL_CASE(herald_reader_next(NULL, &event), "reader");
    NULL_CASE(herald_reader_next(reader, NULL), "event_out");
    THAT(event.position == 0x5A5A5A5A5A5A5A5AULL);
    /* The failed calls consumed nothing: the first event is still next. */
    OK_CASE(herald_reader_next(reader, &event));
    THAT(event.aggregate_version == 1);
    herald_reader_free(reader);
}

static void snapshots(const herald_system *system) {
    static const uint8_t state[] = {1, 2, 3};
    NULL_CASE(herald_snapshot_save(NULL, "agg-1", 5, 1, state, sizeof state), "system");
    NULL_CASE(herald_snapshot_save(system, NULL, 5, 1, state, sizeof state), "aggregate_id");
    NULL_CASE(herald_snapshot_save(system, "agg-1", 5, 1, NULL, sizeof state), "state");
    UTF8_CASE(herald_snapshot_save(system, NOT_UTF8, NOT_UTF8_LEN, 1, state, sizeof state), "aggregate_id");
    TOO_LONG_CASE(herald_snapshot_save(system, "agg-1", TOO_LONG, 1, state, sizeof state), "aggregate_id_len");
    TOO_LONG_CASE(herald_snapshot_save(system, "agg-1", 5, 1, state, TOO_LONG), "state_len");

    herald_snapshot *snapshot = SENTINEL_SNAPSHOT;
    /* Nothing was saved by the failed calls. */
    CASE(herald_snapshot_load(system, "agg-1", 5, &snapshot), HERALD_NOT_FOUND, "agg-1");
    NULL_CASE(herald_snapshot_load(NULL, "agg-1", 5, &snapshot), "system");
    NULL_CASE(herald_snapshot_load(system, NULL, 5, &snapshot), "aggregate_id");
    NULL_CASE(herald_snapshot_load(system, "agg-1", 5, NULL), "snapshot_out");
    UTF8_CASE(herald_snapshot_load(system, NOT_UTF8, NOT_UTF8_LEN, &snapshot), "aggregate_id");
    TOO_LONG_CASE(herald_snapshot_load(system, "agg-1", TOO_LONG, &snapshot), "aggregate_id_len");
    THAT(snapshot == SENTINEL_SNAPSHOT);

    OK_CASE(herald_snapshot_save(system, "agg-1", 5, 1, state, sizeof state));
    snapshot = NULL;
    OK_CASE(herald_snapshot_load(system, "agg-1", 5, &snapshot));
    herald_snapshot_view view;
    memset(&view, 0x5A, sizeof view);
    NULL_CASE(herald_snapshot_get(NULL, &view), "snapshot");
    NULL_CASE(herald_snapshot_get(snapshot, NULL), "view_out");
    THAT(view.aggregate_version == 0x5A5A5A5A5A5A5A5AULL);
    OK_CASE(herald_snapshot_get(snapshot, &view));
    THAT(view.aggregate_version == 1 && view.state_len == sizeof state && memcmp(view.state, state, sizeof state) == 0);
    herald_snapshot_free(snapshot);
}

static void subscriptions(const herald_system *system) {
    herald_subscription *subscription = SENTINEL_SUBSCRIPTION;
    NULL_CASE(herald_subscription_new(NULL, "thing.#", 7, HERALD_START_BEGINNING, 0, &subscription), "system");
    NULL_CASE(herald_subscription_new(system, "thing.#", 7, HERALD_START_BEGINNING, 0, NULL), "subscription_out");
    UTF8_CASE(herald_subscription_new(system, NOT_UTF8, NOT_UTF8_LEN, HERALD_START_BEGINNING, 0, &subscription),
              "pattern");
    TOO_LONG_CASE(herald_subscription_new(system, "thing.#", TOO_LONG, HERALD_START_BEGINNING, 0, &subscription),
                  "pattern_len");
    THAT(subscription == SENTINEL_SUBSCRIPTION);

    /* NULL pattern: every event of every kind. */
    subscription = NULL;
    OK_CASE(herald_subscription_new(system, NULL, 0, HERALD_START_BEGINNING, 0, &subscription));
    herald_event event;
    memset(&event, 0x5A, sizeof event);
    NULL_CASE(herald_subscription_next(NULL, 0, &event), "subscription");
    NULL_CASE(herald_subscription_next(subscription, 0, NULL), "event_out");
    THAT(event.position == 0x5A5A5A5A5A5A5A5AULL);
    OK_CASE(herald_subscription_next(subscription, 1000, &event));
    THAT(event.position == 0);
    herald_subscription_free(subscription);

    int userdata = 0;
    subscription = SENTINEL_SUBSCRIPTION;
    NULL_CASE(herald_subscription_callback_new(NULL, "thing.#", 7, HERALD_START_END, 0, ignore_event, &userdata,
                                               &subscription),
              "system");
    NULL_CASE(herald_subscription_callback_new(system, "thing.#", 7, HERALD_START_END, 0, NULL, &userdata,
                                               &subscription),
              "callback");
    NULL_CASE(herald_subscription_callback_new(system, "thing.#", 7, HERALD_START_END, 0, ignore_event, &userdata,
                                               NULL),
              "subscription_out");
    UTF8_CASE(herald_subscription_callback_new(system, NOT_UTF8, NOT_UTF8_LEN, HERALD_START_END, 0, ignore_event,
                                               &userdata, &subscription),
              "pattern");
    TOO_LONG_CASE(herald_subscription_callback_new(system, "thing.#", TOO_LONG, HERALD_START_END, 0, ignore_event,
                                                   &userdata, &subscription),
                  "pattern_len");
    THAT(subscription == SENTINEL_SUBSCRIPTION);
    /* NULL pattern and NULL userdata are allowed (userdata is only handed back). */
    subscription = NULL;
    OK_CASE(herald_subscription_callback_new(system, NULL, 0, HERALD_START_END, 0, ignore_event, NULL,
                                             &subscription));
    THAT(subscription != NULL);
    herald_subscription_free(subscription);
}

static void publish(const herald_system *system) {
    herald_appended appended;
    memset(&appended, 0x5A, sizeof appended);
    herald_draft draft = valid_draft();
    uint64_t before = version_of(system, "agg-1");

    NULL_CASE(herald_publish(NULL, &draft, &appended), "system");
    NULL_CASE(herald_publish(system, NULL, &appended), "draft");
    herald_draft spoiled = draft;
    spoiled.event_type = NULL;
    NULL_CASE(herald_publish(system, &spoiled, &appended), "draft event_type");
    spoiled = draft;
    spoiled.aggregate_id = NULL;
    NULL_CASE(herald_publish(system, &spoiled, &appended), "draft aggregate_id");
    spoiled = draft;
    spoiled.data = NULL;
    NULL_CASE(herald_publish(system, &spoiled, &appended), "draft data");
    spoiled = draft;
    spoiled.event_type = NOT_UTF8;
    spoiled.event_type_len = NOT_UTF8_LEN;
    UTF8_CASE(herald_publish(system, &spoiled, &appended), "draft event_type");
    spoiled = draft;
    spoiled.aggregate_id = NOT_UTF8;
    spoiled.aggregate_id_len = NOT_UTF8_LEN;
    UTF8_CASE(herald_publish(system, &spoiled, &appended), "draft aggregate_id");
    spoiled = draft;
    spoiled.event_type_len = TOO_LONG;
    TOO_LONG_CASE(herald_publish(system, &spoiled, &appended), "draft event_type");
    spoiled = draft;
    spoiled.aggregate_id_len = TOO_LONG;
    TOO_LONG_CASE(herald_publish(system, &spoiled, &appended), "draft aggregate_id");
    spoiled = draft;
    spoiled.data_len = TOO_LONG;
    TOO_LONG_CASE(herald_publish(system, &spoiled, &appended), "draft data");
    spoiled = draft;
    spoiled.metadata_json = (const uint8_t *)"{}";
    spoiled.metadata_json_len = TOO_LONG;
    TOO_LONG_CASE(herald_publish(system, &spoiled, &appended), "draft metadata_json");
    spoiled = draft;
    spoiled.expect = 42;
    CASE(herald_publish(system, &spoiled, &appended), HERALD_INVALID_ARGUMENT, "draft expect");
    THAT(appended.position == 0x5A5A5A5A5A5A5A5AULL);
    THAT(version_of(system, "agg-1") == before);

    /* Optional: appended_out, and in the draft metadata_json, id, correlation_id, causation_id
     * (valid_draft leaves all four NULL). */
    OK_CASE(herald_publish(system, &draft, NULL));
    OK_CASE(herald_publish(system, &draft, &appended));
    THAT(appended.aggregate_version == before + 2 && !appended.already_appended);
}

static void publish_batch(const herald_system *system) {
    herald_draft drafts[2] = {valid_draft(), valid_draft()};
    herald_appended appended[2];
    memset(appended, 0x5A, sizeof appended);
    uint64_t before = version_of(system, "agg-1");

    NULL_CASE(herald_publish_batch(NULL, drafts, 2, appended), "system");
    NULL_CASE(herald_publish_batch(system, NULL, 2, appended), "drafts");
    CASE(herald_publish_batch(system, drafts, 0, appended), HERALD_INVALID_ARGUMENT, "count");
    TOO_LONG_CASE(herald_publish_batch(system, drafts, TOO_LONG, appended), "count");
    /* One bad draft spoils the batch: nothing of it is stored, and the message says which. */
    drafts[1].event_type = NULL;
    NULL_CASE(herald_publish_batch(system, drafts, 2, appended), "drafts[1] event_type");
    drafts[1] = valid_draft();
    drafts[1].aggregate_id = NULL;
    NULL_CASE(herald_publish_batch(system, drafts, 2, appended), "drafts[1] aggregate_id");
    drafts[1] = valid_draft();
    drafts[1].data = NULL;
    NULL_CASE(herald_publish_batch(system, drafts, 2, appended), "drafts[1] data");
    drafts[1] = valid_draft();
    drafts[1].aggregate_id = NOT_UTF8;
    drafts[1].aggregate_id_len = NOT_UTF8_LEN;
    UTF8_CASE(herald_publish_batch(system, drafts, 2, appended), "drafts[1] aggregate_id");
    drafts[1] = valid_draft();
    THAT(appended[0].position == 0x5A5A5A5A5A5A5A5AULL && appended[1].position == 0x5A5A5A5A5A5A5A5AULL);
    THAT(version_of(system, "agg-1") == before);

    OK_CASE(herald_publish_batch(system, drafts, 2, NULL));
    OK_CASE(herald_publish_batch(system, drafts, 2, appended));
    THAT(appended[0].aggregate_version == before + 3 && appended[1].aggregate_version == before + 4);
}

static void publish_json(const herald_system *system) {
    const char *json = "{\"type\":\"ThingHappened\",\"aggregate_id\":\"agg-json\",\"data\":{}}";
    const size_t len = strlen(json);
    herald_appended appended[2];
    memset(appended, 0x5A, sizeof appended);
    size_t count = SENTINEL_NUMBER;

    NULL_CASE(herald_publish_json(NULL, (const uint8_t *)json, len, appended, 2, &count), "system");
    NULL_CASE(herald_publish_json(system, NULL, len, appended, 2, &count), "json");
    TOO_LONG_CASE(herald_publish_json(system, (const uint8_t *)json, TOO_LONG, appended, 2, &count), "json_len");
    /* JSON is bytes, not a string argument: text that is not UTF-8 is a bad body. */
    const char *bad = "{\"type\":\"\xff\"}";
    CASE(herald_publish_json(system, (const uint8_t *)bad, strlen(bad), appended, 2, &count), HERALD_INVALID_ARGUMENT,
         NULL);
    THAT(count == SENTINEL_NUMBER && appended[0].position == 0x5A5A5A5A5A5A5A5AULL);
    THAT(version_of(system, "agg-json") == 0);

    /* Optional: appended_out (with capacity 0, and even with a capacity), count_out. */
    OK_CASE(herald_publish_json(system, (const uint8_t *)json, len, NULL, 0, &count));
    THAT(count == 1);
    OK_CASE(herald_publish_json(system, (const uint8_t *)json, len, NULL, 2, &count));
    OK_CASE(herald_publish_json(system, (const uint8_t *)json, len, appended, 2, NULL));
    THAT(appended[0].aggregate_version == 3);
    THAT(appended[1].position == 0x5A5A5A5A5A5A5A5AULL); /* only as many results as events */
}

static void publish_integration_json(const herald_system *system) {
    const char *json = "{\"routing_key\":\"thing.happened\",\"version\":\"1.0.0\","
                       "\"source\":{\"service\":\"null-test\"},\"data\":{}}";
    const size_t len = strlen(json);
    herald_appended appended;
    memset(&appended, 0x5A, sizeof appended);
    NULL_CASE(herald_publish_integration_json(NULL, (const uint8_t *)json, len, &appended), "system");
    NULL_CASE(herald_publish_integration_json(system, NULL, len, &appended), "json");
    TOO_LONG_CASE(herald_publish_integration_json(system, (const uint8_t *)json, TOO_LONG, &appended), "json_len");
    THAT(appended.position == 0x5A5A5A5A5A5A5A5AULL);
    OK_CASE(herald_publish_integration_json(system, (const uint8_t *)json, len, NULL));
    OK_CASE(herald_publish_integration_json(system, (const uint8_t *)json, len, &appended));
    THAT(appended.aggregate_version == 0 && !appended.already_appended);
}

static void broadcast_json(const herald_system *system) {
    const char *json = "{\"type\":\"thing\",\"event\":\"thing.happened\",\"data\":{},"
                       "\"target\":{\"type\":\"all\"},\"persistent\":true}";
    const size_t len = strlen(json);
    herald_broadcast_result result;
    memset(&result, 0x5A, sizeof result);
    NULL_CASE(herald_broadcast_json(NULL, (const uint8_t *)json, len, &result), "system");
    NULL_CASE(herald_broadcast_json(system, NULL, len, &result), "json");
    TOO_LONG_CASE(herald_broadcast_json(system, (const uint8_t *)json, TOO_LONG, &result), "json_len");
    THAT(result.position == 0x5A5A5A5A5A5A5A5AULL);
    OK_CASE(herald_broadcast_json(system, (const uint8_t *)json, len, NULL));
    OK_CASE(herald_broadcast_json(system, (const uint8_t *)json, len, &result));
    THAT(result.persisted && result.delivered == 0);
}

static void stream_version(const herald_system *system) {
    uint64_t version = SENTINEL_NUMBER;
    NULL_CASE(herald_stream_version(NULL, "agg-1", 5, &version), "system");
    NULL_CASE(herald_stream_version(system, NULL, 5, &version), "aggregate_id");
    NULL_CASE(herald_stream_version(system, "agg-1", 5, NULL), "version_out");
    UTF8_CASE(herald_stream_version(system, NOT_UTF8, NOT_UTF8_LEN, &version), "aggregate_id");
    TOO_LONG_CASE(herald_stream_version(system, "agg-1", TOO_LONG, &version), "aggregate_id_len");
    THAT(version == SENTINEL_NUMBER);
    OK_CASE(herald_stream_version(system, "agg-1", 5, &version));
    THAT(version >= 1 && version != SENTINEL_NUMBER);
}

static void metrics_json(const herald_system *system) {
    herald_buffer *buffer = SENTINEL_BUFFER;
    NULL_CASE(herald_metrics_json(NULL, &buffer), "system");
    NULL_CASE(herald_metrics_json(system, NULL), "buffer_out");
    THAT(buffer == SENTINEL_BUFFER);
}

/* Whether the webhook list mentions `text`. */
static bool webhook_list_contains(const herald_system *system, const char *text) {
    herald_buffer *buffer = NULL;
    const uint8_t *data = NULL;
    size_t len = 0;
    SETUP(herald_webhook_list_json(system, &buffer));
    SETUP(herald_buffer_data(buffer, &data, &len));
    bool found = false;
    for (size_t i = 0; !found && i + strlen(text) <= len; i++) {
        found = memcmp(data + i, text, strlen(text)) == 0;
    }
    herald_buffer_free(buffer);
    return found;
}

static void webhooks(const herald_system *system) {
    const char *json = "{\"url\":\"http://127.0.0.1:9/null-test\",\"filter\":[\"nothing.#\"]}";
    const size_t len = strlen(json);
    herald_buffer *buffer = SENTINEL_BUFFER;
    NULL_CASE(herald_webhook_create_json(NULL, (const uint8_t *)json, len, &buffer), "system");
    NULL_CASE(herald_webhook_create_json(system, NULL, len, &buffer), "json");
    NULL_CASE(herald_webhook_create_json(system, (const uint8_t *)json, len, NULL), "buffer_out");
    TOO_LONG_CASE(herald_webhook_create_json(system, (const uint8_t *)json, TOO_LONG, &buffer), "json_len");
    THAT(buffer == SENTINEL_BUFFER);
    /* No failed call registered the endpoint. */
    THAT(!webhook_list_contains(system, "null-test"));

    NULL_CASE(herald_webhook_list_json(NULL, &buffer), "system");
    NULL_CASE(herald_webhook_list_json(system, NULL), "buffer_out");
    THAT(buffer == SENTINEL_BUFFER);

    NULL_CASE(herald_webhook_delete(NULL, "wh_x", 4), "system");
    NULL_CASE(herald_webhook_delete(system, NULL, 4), "id");
    UTF8_CASE(herald_webhook_delete(system, NOT_UTF8, NOT_UTF8_LEN), "id");
    TOO_LONG_CASE(herald_webhook_delete(system, "wh_x", TOO_LONG), "id_len");
    CASE(herald_webhook_delete(system, "wh_x", 4), HERALD_NOT_FOUND, "wh_x");
}

int main(void) {
    static_strings();
    frees_take_null();
    system_new();
    system_shutdown();

    herald_system *system = NULL;
    SETUP(herald_system_new("testing", 7, NULL, 0, &system));
    herald_draft draft = valid_draft();
    SETUP(herald_publish(system, &draft, NULL));

    buffers(system);
    readers(system);
    snapshots(system);
    subscriptions(system);
    publish(system);
    publish_batch(system);
    publish_json(system);
    publish_integration_json(system);
    broadcast_json(system);
    stream_version(system);
    metrics_json(system);
    webhooks(system);

    herald_system_free(system);
    printf("null_params: %d cases, %d failed\n", cases, failures);
    return failures == 0 ? 0 : 1;
}
