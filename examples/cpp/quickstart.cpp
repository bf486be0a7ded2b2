// Herald from C++17 through include/herald.hpp: proves that the RAII layer publishes (one draft,
// an idempotent retry, an atomic batch, the spec's JSON), reads with range-for, keeps snapshots,
// tails the log with pull and callback subscriptions (a publish from inside a callback is caused
// by the handled event; an exception thrown by a callback is kept, not unwound into Herald),
// turns every failure into herald::Error with its status, and frees every handle exactly once
// (move-only handles; AddressSanitizer checks the rest).
//
// It is a test: any surprise exits with status 1.
//
// Build (from the repository root, after `cargo build -p herald-ffi`):
//   c++ -std=c++17 -Iinclude examples/cpp/quickstart.cpp -Ltarget/debug
//       -Wl,-rpath,$PWD/target/debug -lherald -lpthread -o quickstart_cpp && ./quickstart_cpp
// (one line; or see examples/README.md).

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "herald.hpp"

using namespace std::chrono_literals;

// Handles are move-only.
static_assert(!std::is_copy_constructible_v<herald::System> && !std::is_copy_assignable_v<herald::System>);
static_assert(!std::is_copy_constructible_v<herald::Reader> && !std::is_copy_assignable_v<herald::Reader>);
static_assert(!std::is_copy_constructible_v<herald::Subscription>);
static_assert(!std::is_copy_constructible_v<herald::Snapshot>);
static_assert(!std::is_copy_constructible_v<herald::Buffer>);
static_assert(std::is_nothrow_move_constructible_v<herald::System>);
static_assert(std::is_nothrow_move_assignable_v<herald::Reader>);
static_assert(std::is_nothrow_move_constructible_v<herald::Subscription>);
static_assert(std::is_nothrow_move_constructible_v<herald::Snapshot>);
static_assert(std::is_nothrow_move_constructible_v<herald::Buffer>);

// How long to wait for Herald's callback thread before failing.
constexpr auto CALLBACK_WAIT = 5000ms;
// How long a pull waits for an event that should be there already, and to prove none comes.
constexpr auto PULL_WAIT = 1000ms;
constexpr auto QUIET_WAIT = 20ms;

#define EXPECT(condition)                                                                                              \
    do {                                                                                                               \
        if (!(condition)) {                                                                                            \
            std::fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #condition);                               \
            std::exit(1);                                                                                              \
        }                                                                                                              \
    } while (0)

// `body` must throw herald::Error with `expected`; returns its message.
template <typename Body> static std::string expect_error(int line, herald_status expected, Body &&body) {
    try {
        body();
    } catch (const herald::Error &error) {
        if (error.status() != expected) {
            std::fprintf(stderr, "quickstart.cpp:%d: FAILED: threw %s, expected %s\n", line, error.what(),
                         herald_status_name(expected));
            std::exit(1);
        }
        EXPECT(!error.message().empty());
        std::printf("  expected failure %s\n", error.what());
        return error.message();
    }
    std::fprintf(stderr, "quickstart.cpp:%d: FAILED: no herald::Error, expected %s\n", line,
                 herald_status_name(expected));
    std::exit(1);
}
#define EXPECT_ERROR(expected, ...) expect_error(__LINE__, expected, [&] { __VA_ARGS__; })

static bool contains(std::string_view text, std::string_view part) { return text.find(part) != std::string_view::npos; }

static void run() {
    std::printf("herald %s\n", std::string(herald::version()).c_str());
    EXPECT(herald::version() == std::to_string(HERALD_VERSION_MAJOR) + "." + std::to_string(HERALD_VERSION_MINOR) +
                                    "." + std::to_string(HERALD_VERSION_PATCH));

    EXPECT_ERROR(HERALD_INVALID_CONFIG, herald::System::open("nonsense"));

    // Moving a system leaves the source empty; only the target frees it.
    herald::System opened = herald::System::open("testing");
    herald::System system = std::move(opened);
    EXPECT(opened.raw() == nullptr && system.raw() != nullptr);

    // ---- one domain event, then an idempotent retry, then a version conflict ----
    const herald::Uuid task1_id(herald_uuid{{0x01, 0x93, 0, 0, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 1}});
    herald::Draft created("TaskCreated", "task-1", R"({"title":"Implement feature X"})");
    created.metadata(R"({"user_id":"user-456"})").with_id(task1_id).expect_no_stream();
    herald::Appended appended = system.publish(created);
    EXPECT(herald::Uuid(appended.id) == task1_id);
    EXPECT(appended.position == 0 && appended.aggregate_version == 1 && !appended.already_appended);
    herald::Appended retried = system.publish(created);
    EXPECT(retried.already_appended && retried.position == 0);
    std::string conflict = EXPECT_ERROR(
        HERALD_VERSION_CONFLICT, system.publish(herald::Draft("TaskRenamed", "task-1", "{}").expect_version(7)));
    EXPECT(contains(conflict, "task-1"));

    // ---- an atomic batch ----
    std::vector<herald::Draft> batch{
        herald::Draft("TaskRenamed", "task-1", R"({"title":"Implement feature Y"})").expect_version(1),
        herald::Draft("TaskCompleted", "task-1", R"({"done":true})"),
    };
    std::vector<herald::Appended> batch_appended = system.publish_batch(batch);
    EXPECT(batch_appended.size() == 2);
    EXPECT(batch_appended[0].position == 1 && batch_appended[0].aggregate_version == 2);
    EXPECT(batch_appended[1].position == 2 && batch_appended[1].aggregate_version == 3);
    EXPECT(system.stream_version("task-1") == 3 && system.stream_version("nobody") == 0);

    // ---- readers, with range-for ----
    const char *const types[] = {"TaskCreated", "TaskRenamed", "TaskCompleted"};
    std::uint64_t expected_version = 1;
    for (const herald::Event &event : system.read_stream("task-1")) {
        std::printf("  #%llu %s v%llu %s\n", static_cast<unsigned long long>(event.position()),
                    std::string(event.type()).c_str(), static_cast<unsigned long long>(event.aggregate_version()),
                    std::string(event.data()).c_str());
        EXPECT(event.kind() == HERALD_KIND_DOMAIN);
        EXPECT(event.aggregate_version() == expected_version && event.position() == expected_version - 1);
        EXPECT(event.type() == types[expected_version - 1]);
        EXPECT(event.aggregate_id() == "task-1");
        EXPECT(event.correlation_id() == event.id() && !event.causation_id());
        expected_version++;
    }
    EXPECT(expected_version == 4);
    {
        herald::Reader reader = system.read_stream("task-1");
        std::optional<herald::Event> first = reader.next();
        EXPECT(first && first->id() == task1_id && contains(first->metadata_json(), "user-456"));
        herald::Reader moved = std::move(reader); // the position moves along with the handle
        EXPECT(reader.raw() == nullptr);
        std::optional<herald::Event> second = moved.next();
        EXPECT(second && second->aggregate_version() == 2);
    }
    auto count = [](herald::Reader reader) {
        std::size_t n = 0;
        for (const herald::Event &event : reader) {
            (void)event;
            n++;
        }
        return n;
    };
    EXPECT(count(system.read_all()) == 3);
    EXPECT(count(system.read_all(1, 1)) == 1);
    EXPECT(count(system.read_by_type("TaskCompleted")) == 1);
    EXPECT(count(system.read_since(0)) == 3);
    EXPECT(count(system.read_stream("nobody")) == 0);

    // ---- snapshots ----
    const std::string state("v3\0\x01\x02", 5);
    system.snapshot_save("task-1", 3, state);
    std::optional<herald::Snapshot> snapshot = system.snapshot_load("task-1");
    EXPECT(snapshot && snapshot->aggregate_version() == 3 && snapshot->state() == state);
    EXPECT(reinterpret_cast<std::uintptr_t>(snapshot->state_data()) % 16 == 0);
    EXPECT(!system.snapshot_load("nobody"));
    EXPECT_ERROR(HERALD_VERSION_CONFLICT, system.snapshot_save("task-1", 9, state));
    EXPECT_ERROR(HERALD_NOT_FOUND, system.snapshot_save("nobody", 1, state));

    // ---- a callback subscription fed by a second thread ----
    struct Seen {
        std::mutex lock;
        std::condition_variable changed;
        std::size_t handled = 0;
        herald::Uuid handled_id;
        std::optional<herald::Appended> reaction;
        std::string reaction_error;
    } seen;
    {
        herald::Subscription reacting = system.subscribe("task.created", herald::Start::end(), [&](const herald::Event &event) {
            // Herald's thread: the reaction is caused by `event`.
            std::optional<herald::Appended> reaction;
            std::string error;
            try {
                reaction = system.publish(herald::Draft("TaskAssigned", event.aggregate_id(), R"({"to":"user-7"})"));
            } catch (const herald::Error &failure) {
                error = failure.what();
            }
            std::lock_guard<std::mutex> lock(seen.lock);
            seen.handled++;
            seen.handled_id = event.id();
            seen.reaction = reaction;
            seen.reaction_error = error;
            seen.changed.notify_all();
        });
        EXPECT_ERROR(HERALD_CONFLICT, reacting.next(0ms)); // callback subscriptions are not pulled

        herald::Appended from_thread{};
        std::thread publisher(
            [&] { from_thread = system.publish(herald::Draft("TaskCreated", "task-2", R"({"title":"C++"})")); });
        publisher.join();
        EXPECT(from_thread.position == 3);

        std::unique_lock<std::mutex> lock(seen.lock);
        EXPECT(seen.changed.wait_for(lock, CALLBACK_WAIT, [&] { return seen.handled > 0; }));
        EXPECT(seen.reaction_error.empty());
        EXPECT(seen.handled_id == herald::Uuid(from_thread.id));
        EXPECT(seen.reaction && seen.reaction->position == 4 && seen.reaction->aggregate_version == 2);
        lock.unlock();
        herald::Subscription moved = std::move(reacting); // still the same running subscription
        EXPECT(reacting.raw() == nullptr && !moved.failed());
    } // freed here: Herald's thread is stopped before `seen` goes away
    EXPECT(seen.handled == 1);
    {
        herald::Reader reader = system.read_stream("task-2");
        std::optional<herald::Event> cause = reader.next();
        EXPECT(cause && cause->type() == "TaskCreated");
        herald::Uuid cause_id = cause->id(), cause_correlation = cause->correlation_id();
        std::optional<herald::Event> effect = reader.next();
        EXPECT(effect && effect->type() == "TaskAssigned");
        EXPECT(effect->causation_id() && *effect->causation_id() == cause_id);
        EXPECT(effect->correlation_id() == cause_correlation);
        EXPECT(!reader.next());
    }

    // A callback that throws: the exception stays on this side, and is rethrown on request.
    {
        std::mutex lock;
        std::condition_variable changed;
        bool called = false;
        herald::Subscription throwing = system.subscribe("task.failed", herald::Start::end(), [&](const herald::Event &) {
            {
                std::lock_guard<std::mutex> guard(lock);
                called = true;
            }
            changed.notify_all();
            throw std::runtime_error("boom from the callback");
        });
        system.publish(herald::Draft("TaskFailed", "task-9", "{}"));
        std::unique_lock<std::mutex> guard(lock);
        EXPECT(changed.wait_for(guard, CALLBACK_WAIT, [&] { return called; }));
        guard.unlock();
        // The exception is stored just after `called` is set: allow it a bounded moment.
        for (int i = 0; i < 500 && !throwing.failed(); i++) {
            std::this_thread::sleep_for(1ms);
        }
        EXPECT(throwing.failed());
        bool rethrown = false;
        try {
            throwing.rethrow_if_failed();
        } catch (const std::runtime_error &error) {
            rethrown = std::string(error.what()) == "boom from the callback";
        }
        EXPECT(rethrown);
    }

    // ---- the JSON calls ----
    herald::System::JsonPublished published = system.publish_json(
        R"({"events":[{"type":"TaskCreated","aggregate_id":"task-3","data":{}},)"
        R"({"type":"TaskStarted","aggregate_id":"task-3","data":{},"expected_version":1}]})");
    EXPECT(published.count == 2 && published.results.size() == 2);
    EXPECT(published.results[0].position == 6 && published.results[1].aggregate_version == 2);
    herald::System::JsonPublished capped =
        system.publish_json(R"({"type":"TaskStopped","aggregate_id":"task-3","data":{}})", 0);
    EXPECT(capped.count == 1 && capped.results.empty());
    EXPECT_ERROR(HERALD_INVALID_ARGUMENT, system.publish_json("{"));
    herald::Appended integration = system.publish_integration_json(
        R"({"routing_key":"task.completed","version":"1.0.0","source":{"service":"cpp"},"data":{"n":1}})");
    EXPECT(integration.position == 9 && integration.aggregate_version == 0);
    herald::BroadcastResult broadcast = system.broadcast_json(
        R"({"type":"task","event":"task.updated","data":{},"target":{"type":"project","id":"p1"},"persistent":true})");
    EXPECT(broadcast.persisted && broadcast.position == 10 && broadcast.delivered == 0);
    const std::uint64_t total_events = 11;

    // ---- a pull subscription from the beginning ----
    {
        herald::Subscription everything = system.subscribe(std::nullopt, herald::Start::beginning());
        for (std::uint64_t position = 0; position < total_events; position++) {
            std::optional<herald::Event> event = everything.next(PULL_WAIT);
            EXPECT(event && event->position() == position);
            EXPECT(event->kind() == (position == 9    ? HERALD_KIND_INTEGRATION
                                     : position == 10 ? HERALD_KIND_WEBSOCKET
                                                      : HERALD_KIND_DOMAIN));
        }
        EXPECT(!everything.next(QUIET_WAIT));
        herald::Subscription created_only = system.subscribe("task.created", herald::Start::beginning());
        std::vector<std::uint64_t> positions;
        while (std::optional<herald::Event> event = created_only.next(QUIET_WAIT)) {
            positions.push_back(event->position());
        }
        EXPECT((positions == std::vector<std::uint64_t>{0, 3, 6}));
    }

    // ---- webhooks, metrics ----
    herald::Buffer endpoint = system.webhook_create_json(R"({"url":"http://127.0.0.1:9/hook","filter":["billing.#"]})");
    std::string endpoint_json = endpoint.str();
    std::size_t id_at = endpoint_json.find(R"("id":")");
    EXPECT(id_at != std::string::npos);
    std::string webhook_id = endpoint_json.substr(id_at + 6, endpoint_json.find('"', id_at + 6) - (id_at + 6));
    EXPECT(webhook_id.rfind("wh_", 0) == 0);
    EXPECT(contains(system.webhook_list_json().view(), webhook_id));
    system.webhook_delete(webhook_id);
    EXPECT_ERROR(HERALD_NOT_FOUND, system.webhook_delete(webhook_id));

    herald::Buffer metrics = system.metrics_json();
    std::printf("metrics %s\n", metrics.str().c_str());
    EXPECT(contains(metrics.view(), R"("total_events":11)"));
    EXPECT(contains(metrics.view(), R"("total_snapshots":1)"));
    herald::Buffer moved_metrics = std::move(metrics);
    EXPECT(metrics.raw() == nullptr && contains(moved_metrics.view(), "\"event_store\""));

    // ---- move-assigning a callback subscription stops the old one before its callback goes ----
    {
        std::mutex lock;
        std::condition_variable changed;
        int first_calls = 0, second_calls = 0;
        herald::Subscription subscription =
            system.subscribe("task.moved", herald::Start::end(), [&](const herald::Event &) {
                std::lock_guard<std::mutex> guard(lock);
                first_calls++;
            });
        subscription = system.subscribe("task.moved", herald::Start::end(), [&](const herald::Event &) {
            {
                std::lock_guard<std::mutex> guard(lock);
                second_calls++;
            }
            changed.notify_all();
        });
        system.publish(herald::Draft("TaskMoved", "task-8", "{}"));
        std::unique_lock<std::mutex> guard(lock);
        EXPECT(changed.wait_for(guard, CALLBACK_WAIT, [&] { return second_calls == 1; }));
        EXPECT(first_calls == 0);
    }

    // ---- shutdown ----
    EXPECT(system.shutdown(2000ms));
    EXPECT_ERROR(HERALD_SHUTTING_DOWN, system.publish(herald::Draft("TaskLate", "task-1", "{}")));
    EXPECT(count(system.read_all()) == total_events + 1); // and TaskMoved
}

int main() {
    try {
        run();
    } catch (const herald::Error &error) {
        std::fprintf(stderr, "FAILED: unexpected herald::Error %s\n", error.what());
        return 1;
    } catch (const std::exception &error) {
        std::fprintf(stderr, "FAILED: unexpected exception %s\n", error.what());
        return 1;
    }
    std::printf("ok\n");
    return 0;
}
