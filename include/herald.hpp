// herald.hpp: a small header-only C++17 layer over Herald's C ABI (herald.h).
//
// - Handles are move-only RAII classes (System, Reader, Subscription, Snapshot, Buffer) that call
//   the matching herald_*_free in their destructor; a moved-from handle is empty and frees nothing.
// - Every failing call throws herald::Error carrying the herald_status and herald_last_error()'s
//   message. Not-errors are not thrown: the end of a reader, a subscription's timeout and a
//   missing snapshot come back as std::nullopt.
// - Views (Event, Buffer::view, Snapshot::state_*) borrow from their handle exactly as in C: an
//   Event from a Reader or a pull Subscription is valid until the next call on that handle.
// - Strings and byte buffers go in as std::string_view (no NUL needed); a view must not be a
//   default-constructed one (its data() is NULL and Herald answers HERALD_NULL_PARAMETER).
// - Callback subscriptions take any callable; an exception it throws is caught before it can
//   unwind into Herald and kept for Subscription::rethrow_if_failed() (the first one).
//
// Link as for herald.h: -lherald (plus -lpthread -ldl -lm with the static library).

#ifndef HERALD_HPP
#define HERALD_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "herald.h"

namespace herald {

// A failed call: its status and Herald's message for it.
class Error : public std::runtime_error {
public:
    Error(herald_status status, const std::string &message)
        : std::runtime_error(std::string(herald_status_name(status)) + ": " + message), status_(status),
          message_(message) {}

    herald_status status() const noexcept { return status_; }
    // Herald's message alone (what() adds the status name in front).
    const std::string &message() const noexcept { return message_; }

private:
    herald_status status_;
    std::string message_;
};

namespace detail {

// Throws the failure of a call that returned `status`; on this thread, right after the call.
inline void check(herald_status status) {
    if (status != HERALD_OK) {
        throw Error(status, herald_last_error());
    }
}

inline std::string_view text(const char *data, std::size_t len) noexcept {
    return len == 0 ? std::string_view() : std::string_view(data, len);
}

inline std::string_view text(const std::uint8_t *data, std::size_t len) noexcept {
    return text(reinterpret_cast<const char *>(data), len);
}

inline const std::uint8_t *bytes(std::string_view view) noexcept {
    return reinterpret_cast<const std::uint8_t *>(view.data());
}

} // namespace detail

// The library version ("0.1.0").
inline std::string_view version() noexcept { return herald_version(); }

// The stable name of a status ("HERALD_OK", …).
inline std::string_view status_name(herald_status status) noexcept { return herald_status_name(status); }

// A UUID (16 bytes in network order).
class Uuid {
public:
    Uuid() noexcept : raw_{} {}
    Uuid(const herald_uuid &raw) noexcept : raw_(raw) {} // NOLINT: implicit on purpose

    const herald_uuid &raw() const noexcept { return raw_; }
    bool is_nil() const noexcept { return *this == Uuid(); }

    // The canonical lowercase form, 8-4-4-4-12.
    std::string to_string() const {
        static const char hex[] = "0123456789abcdef";
        std::string out;
        out.reserve(36);
        for (std::size_t i = 0; i < 16; i++) {
            if (i == 4 || i == 6 || i == 8 || i == 10) {
                out.push_back('-');
            }
            out.push_back(hex[raw_.bytes[i] >> 4]);
            out.push_back(hex[raw_.bytes[i] & 0xf]);
        }
        return out;
    }

    friend bool operator==(const Uuid &a, const Uuid &b) noexcept {
        return std::memcmp(a.raw_.bytes, b.raw_.bytes, sizeof a.raw_.bytes) == 0;
    }
    friend bool operator!=(const Uuid &a, const Uuid &b) noexcept { return !(a == b); }

private:
    herald_uuid raw_;
};

// Where a published event landed (id, position, aggregate_version, already_appended).
using Appended = herald_appended;
// The outcome of a broadcast (persisted, position, delivered).
using BroadcastResult = herald_broadcast_result;

// A stored event, borrowed from the handle that produced it (see the top of this file).
class Event {
public:
    explicit Event(const herald_event &raw) noexcept : raw_(raw) {}

    std::uint32_t kind() const noexcept { return raw_.kind; }
    Uuid id() const noexcept { return raw_.id; }
    std::string_view type() const noexcept { return detail::text(raw_.event_type, raw_.event_type_len); }
    // Empty for kinds without an aggregate.
    std::string_view aggregate_id() const noexcept { return detail::text(raw_.aggregate_id, raw_.aggregate_id_len); }
    std::uint64_t aggregate_version() const noexcept { return raw_.aggregate_version; }
    std::uint64_t position() const noexcept { return raw_.position; }
    std::uint64_t timestamp_ns() const noexcept { return raw_.timestamp_ns; }
    Uuid correlation_id() const noexcept { return raw_.correlation_id; }
    std::optional<Uuid> causation_id() const noexcept {
        return raw_.has_causation_id ? std::optional<Uuid>(raw_.causation_id) : std::nullopt;
    }
    std::string_view metadata_json() const noexcept { return detail::text(raw_.metadata_json, raw_.metadata_json_len); }
    std::string_view data() const noexcept { return detail::text(raw_.data, raw_.data_len); }
    const herald_event &raw() const noexcept { return raw_; }

private:
    herald_event raw_;
};

// A domain event to publish. It views the strings it is given: they must outlive the publish.
struct Draft {
    std::string_view type;
    std::string_view aggregate_id;
    std::string_view data; // one JSON value
    std::optional<std::string_view> metadata_json;
    std::optional<Uuid> id;
    std::optional<Uuid> correlation_id;
    std::optional<Uuid> causation_id;
    std::uint32_t expect = HERALD_EXPECT_ANY;
    std::uint64_t expected_version = 0;

    Draft(std::string_view type_, std::string_view aggregate_id_, std::string_view data_)
        : type(type_), aggregate_id(aggregate_id_), data(data_) {}

    Draft &metadata(std::string_view json) {
        metadata_json = json;
        return *this;
    }
    Draft &with_id(const Uuid &event_id) {
        id = event_id;
        return *this;
    }
    Draft &expect_no_stream() {
        expect = HERALD_EXPECT_NO_STREAM;
        return *this;
    }
    Draft &expect_version(std::uint64_t version) {
        expect = HERALD_EXPECT_EXACT;
        expected_version = version;
        return *this;
    }

    // The C draft, pointing into this Draft and the strings it views.
    herald_draft to_c() const noexcept {
        herald_draft draft{};
        draft.event_type = type.data();
        draft.event_type_len = type.size();
        draft.aggregate_id = aggregate_id.data();
        draft.aggregate_id_len = aggregate_id.size();
        draft.data = detail::bytes(data);
        draft.data_len = data.size();
        draft.metadata_json = metadata_json ? detail::bytes(*metadata_json) : nullptr;
        draft.metadata_json_len = metadata_json ? metadata_json->size() : 0;
        draft.id = id ? &id->raw() : nullptr;
        draft.correlation_id = correlation_id ? &correlation_id->raw() : nullptr;
        draft.causation_id = causation_id ? &causation_id->raw() : nullptr;
        draft.expect = expect;
        draft.expected_version = expected_version;
        return draft;
    }
};

// Where a subscription starts.
struct Start {
    std::uint32_t kind;
    std::uint64_t position;

    static Start beginning() noexcept { return {HERALD_START_BEGINNING, 0}; }
    static Start end() noexcept { return {HERALD_START_END, 0}; }
    static Start at(std::uint64_t position) noexcept { return {HERALD_START_POSITION, position}; }
};

namespace detail {

// The move-only ownership of one C handle, freed by `Free`.
template <typename T, void (*Free)(T *)> class Handle {
public:
    Handle() noexcept = default;
    explicit Handle(T *raw) noexcept : raw_(raw) {}
    Handle(const Handle &) = delete;
    Handle &operator=(const Handle &) = delete;
    Handle(Handle &&other) noexcept : raw_(std::exchange(other.raw_, nullptr)) {}
    Handle &operator=(Handle &&other) noexcept {
        if (this != &other) {
            Free(raw_);
            raw_ = std::exchange(other.raw_, nullptr);
        }
        return *this;
    }
    ~Handle() { Free(raw_); }

    T *get() const noexcept { return raw_; }

private:
    T *raw_ = nullptr;
};

} // namespace detail

// Bytes Herald made (UTF-8 JSON), valid while the Buffer lives.
class Buffer {
public:
    explicit Buffer(herald_buffer *raw) : handle_(raw) {}

    std::string_view view() const {
        const std::uint8_t *data = nullptr;
        std::size_t len = 0;
        detail::check(herald_buffer_data(handle_.get(), &data, &len));
        return detail::text(data, len);
    }
    std::string str() const { return std::string(view()); }
    herald_buffer *raw() const noexcept { return handle_.get(); }

private:
    detail::Handle<herald_buffer, herald_buffer_free> handle_;
};

// An iterator over stored events; range-for yields each Event, valid during its iteration.
class Reader {
public:
    explicit Reader(herald_reader *raw) : handle_(raw) {}

    // The next event, or std::nullopt at the end.
    std::optional<Event> next() {
        herald_event event;
        herald_status status = herald_reader_next(handle_.get(), &event);
        if (status == HERALD_END) {
            return std::nullopt;
        }
        detail::check(status);
        return Event(event);
    }

    struct Sentinel {};

    class Iterator {
    public:
        using iterator_category = std::input_iterator_tag;
        using value_type = Event;
        using difference_type = std::ptrdiff_t;
        using pointer = const Event *;
        using reference = const Event &;

        explicit Iterator(Reader *reader) : reader_(reader) { ++*this; }
        reference operator*() const { return *current_; }
        pointer operator->() const { return &*current_; }
        Iterator &operator++() {
            current_ = reader_->next();
            return *this;
        }
        friend bool operator==(const Iterator &it, Sentinel) noexcept { return !it.current_; }
        friend bool operator!=(const Iterator &it, Sentinel end) noexcept { return !(it == end); }

    private:
        Reader *reader_;
        std::optional<Event> current_;
    };

    // Begins reading (an iteration consumes the reader: it cannot be restarted).
    Iterator begin() { return Iterator(this); }
    Sentinel end() const noexcept { return {}; }

    herald_reader *raw() const noexcept { return handle_.get(); }

private:
    detail::Handle<herald_reader, herald_reader_free> handle_;
};

// A loaded snapshot; its state bytes stay valid while it lives.
class Snapshot {
public:
    explicit Snapshot(herald_snapshot *raw) : handle_(raw), view_{} {
        detail::check(herald_snapshot_get(handle_.get(), &view_));
    }

    std::uint64_t aggregate_version() const noexcept { return view_.aggregate_version; }
    std::uint64_t timestamp_ns() const noexcept { return view_.timestamp_ns; }
    // 16-byte aligned.
    const std::uint8_t *state_data() const noexcept { return view_.state; }
    std::size_t state_size() const noexcept { return view_.state_len; }
    std::string_view state() const noexcept { return detail::text(view_.state, view_.state_len); }
    herald_snapshot *raw() const noexcept { return handle_.get(); }

private:
    detail::Handle<herald_snapshot, herald_snapshot_free> handle_;
    herald_snapshot_view view_;
};

// A pull or callback subscription; the destructor stops it (for a callback subscription it
// waits for a running callback to return).
class Subscription {
public:
    using Callback = std::function<void(const Event &)>;

    Subscription(Subscription &&) noexcept = default;
    // Stops and frees the subscription held so far before its callback state goes away.
    Subscription &operator=(Subscription &&other) noexcept {
        if (this != &other) {
            handle_ = std::move(other.handle_);
            callback_ = std::move(other.callback_);
        }
        return *this;
    }

    // The next event of a pull subscription, or std::nullopt when none came within `timeout`.
    std::optional<Event> next(std::chrono::milliseconds timeout) {
        herald_event event;
        // Clamped to what the C call takes (0 to UINT32_MAX ms).
        const std::chrono::milliseconds::rep count = timeout.count();
        const std::uint32_t timeout_ms =
            count <= 0 ? 0u : count >= static_cast<std::chrono::milliseconds::rep>(UINT32_MAX)
                                  ? UINT32_MAX
                                  : static_cast<std::uint32_t>(count);
        herald_status status = herald_subscription_next(handle_.get(), timeout_ms, &event);
        if (status == HERALD_TIMEOUT) {
            return std::nullopt;
        }
        detail::check(status);
        return Event(event);
    }

    // Whether a callback threw (the exception is kept for rethrow_if_failed).
    bool failed() const {
        if (!callback_) {
            return false;
        }
        std::lock_guard<std::mutex> lock(callback_->lock);
        return callback_->error != nullptr;
    }

    // Rethrows the first exception a callback threw, if any.
    void rethrow_if_failed() const {
        if (!callback_) {
            return;
        }
        std::exception_ptr error;
        {
            std::lock_guard<std::mutex> lock(callback_->lock);
            error = callback_->error;
        }
        if (error) {
            std::rethrow_exception(error);
        }
    }

    herald_subscription *raw() const noexcept { return handle_.get(); }

private:
    friend class System;

    // What Herald's thread calls back into; heap-allocated so moves keep its address.
    struct CallbackState {
        Callback callback;
        mutable std::mutex lock;
        std::exception_ptr error;
    };

    Subscription(herald_subscription *raw, std::unique_ptr<CallbackState> callback)
        : callback_(std::move(callback)), handle_(raw) {}

    // Runs on Herald's thread; nothing may unwind out of it.
    static void trampoline(void *userdata, const herald_event *event) noexcept {
        auto *state = static_cast<CallbackState *>(userdata);
        try {
            state->callback(Event(*event));
        } catch (...) {
            std::lock_guard<std::mutex> lock(state->lock);
            if (!state->error) {
                state->error = std::current_exception();
            }
        }
    }

    // Declared first so it is destroyed last: the handle's free stops the thread that uses it.
    std::unique_ptr<CallbackState> callback_;
    detail::Handle<herald_subscription, herald_subscription_free> handle_;
};

// A running Herald system. May be used from many threads at once; the destructor shuts it down
// (up to 5 s for dispatch to drain) and must not race other calls on it.
class System {
public:
    // Opens a system from a preset (`development`, `production`, `testing`; std::nullopt: the
    // config's `preset`, else development) and an optional TOML config.
    static System open(std::optional<std::string_view> preset = std::string_view("testing"),
                       std::optional<std::string_view> config_toml = std::nullopt) {
        herald_system *raw = nullptr;
        detail::check(herald_system_new(preset ? preset->data() : nullptr, preset ? preset->size() : 0,
                                        config_toml ? config_toml->data() : nullptr,
                                        config_toml ? config_toml->size() : 0, &raw));
        return System(raw);
    }

    Appended publish(const Draft &draft) const {
        herald_draft c_draft = draft.to_c();
        Appended appended{};
        detail::check(herald_publish(handle_.get(), &c_draft, &appended));
        return appended;
    }

    // All or none; results in draft order.
    std::vector<Appended> publish_batch(const std::vector<Draft> &drafts) const {
        std::vector<herald_draft> c_drafts;
        c_drafts.reserve(drafts.size());
        for (const Draft &draft : drafts) {
            c_drafts.push_back(draft.to_c());
        }
        std::vector<Appended> appended(drafts.size());
        detail::check(herald_publish_batch(handle_.get(), c_drafts.data(), c_drafts.size(), appended.data()));
        return appended;
    }

    struct JsonPublished {
        std::size_t count;             // how many events were published
        std::vector<Appended> results; // the first min(count, max_results)
    };

    // Domain events as the spec's JSON (`POST /v1/events`: one event, or {"events": [...]}).
    JsonPublished publish_json(std::string_view json, std::size_t max_results = 1024) const {
        std::vector<Appended> results(max_results);
        std::size_t count = 0;
        detail::check(herald_publish_json(handle_.get(), detail::bytes(json), json.size(), results.data(),
                                          results.size(), &count));
        results.resize(count < max_results ? count : max_results);
        return JsonPublished{count, std::move(results)};
    }

    // An integration event as the spec's JSON (`POST /v1/integration-events`).
    Appended publish_integration_json(std::string_view json) const {
        Appended appended{};
        detail::check(herald_publish_integration_json(handle_.get(), detail::bytes(json), json.size(), &appended));
        return appended;
    }

    // A WebSocket event as the spec's JSON (`POST /v1/broadcast`).
    BroadcastResult broadcast_json(std::string_view json) const {
        BroadcastResult result{};
        detail::check(herald_broadcast_json(handle_.get(), detail::bytes(json), json.size(), &result));
        return result;
    }

    // 0: no such stream.
    std::uint64_t stream_version(std::string_view aggregate_id) const {
        std::uint64_t version = 0;
        detail::check(herald_stream_version(handle_.get(), aggregate_id.data(), aggregate_id.size(), &version));
        return version;
    }

    // Readers; `limit` 0 means no limit.
    Reader read_all(std::uint64_t from_position = 0, std::uint64_t limit = 0) const {
        herald_reader *raw = nullptr;
        detail::check(herald_read_all(handle_.get(), from_position, limit, &raw));
        return Reader(raw);
    }
    Reader read_by_type(std::string_view event_type, std::uint64_t from_position = 0, std::uint64_t limit = 0) const {
        herald_reader *raw = nullptr;
        detail::check(
            herald_read_by_type(handle_.get(), event_type.data(), event_type.size(), from_position, limit, &raw));
        return Reader(raw);
    }
    Reader read_since(std::uint64_t timestamp_ns, std::uint64_t limit = 0) const {
        herald_reader *raw = nullptr;
        detail::check(herald_read_since(handle_.get(), timestamp_ns, limit, &raw));
        return Reader(raw);
    }
    Reader read_stream(std::string_view aggregate_id, std::uint64_t from_version = 1, std::uint64_t limit = 0) const {
        herald_reader *raw = nullptr;
        detail::check(
            herald_read_stream(handle_.get(), aggregate_id.data(), aggregate_id.size(), from_version, limit, &raw));
        return Reader(raw);
    }

    void snapshot_save(std::string_view aggregate_id, std::uint64_t aggregate_version, const void *state,
                       std::size_t state_len) const {
        detail::check(herald_snapshot_save(handle_.get(), aggregate_id.data(), aggregate_id.size(), aggregate_version,
                                           static_cast<const std::uint8_t *>(state), state_len));
    }
    void snapshot_save(std::string_view aggregate_id, std::uint64_t aggregate_version, std::string_view state) const {
        snapshot_save(aggregate_id, aggregate_version, state.data(), state.size());
    }

    // The newest snapshot, or std::nullopt if the aggregate has none.
    std::optional<Snapshot> snapshot_load(std::string_view aggregate_id) const {
        herald_snapshot *raw = nullptr;
        herald_status status = herald_snapshot_load(handle_.get(), aggregate_id.data(), aggregate_id.size(), &raw);
        if (status == HERALD_NOT_FOUND) {
            return std::nullopt;
        }
        detail::check(status);
        return Snapshot(raw);
    }

    // A pull subscription; `pattern` std::nullopt takes every event of every kind.
    Subscription subscribe(std::optional<std::string_view> pattern, Start start) const {
        herald_subscription *raw = nullptr;
        detail::check(herald_subscription_new(handle_.get(), pattern ? pattern->data() : nullptr,
                                              pattern ? pattern->size() : 0, start.kind, start.position, &raw));
        return Subscription(raw, nullptr);
    }

    // A callback subscription: `callback(event)` runs on Herald's thread, in order. Events it
    // publishes are caused by the event it handles.
    Subscription subscribe(std::optional<std::string_view> pattern, Start start, Subscription::Callback callback) const {
        auto state = std::make_unique<Subscription::CallbackState>();
        state->callback = std::move(callback);
        herald_subscription *raw = nullptr;
        detail::check(herald_subscription_callback_new(handle_.get(), pattern ? pattern->data() : nullptr,
                                                       pattern ? pattern->size() : 0, start.kind, start.position,
                                                       &Subscription::trampoline, state.get(), &raw));
        return Subscription(raw, std::move(state));
    }

    // `GET /v1/metrics` as JSON.
    Buffer metrics_json() const {
        herald_buffer *raw = nullptr;
        detail::check(herald_metrics_json(handle_.get(), &raw));
        return Buffer(raw);
    }

    // `POST /v1/webhooks`: `url`, `filter`, optional `description`, `secret`. The endpoint as JSON.
    Buffer webhook_create_json(std::string_view json) const {
        herald_buffer *raw = nullptr;
        detail::check(herald_webhook_create_json(handle_.get(), detail::bytes(json), json.size(), &raw));
        return Buffer(raw);
    }
    Buffer webhook_list_json() const {
        herald_buffer *raw = nullptr;
        detail::check(herald_webhook_list_json(handle_.get(), &raw));
        return Buffer(raw);
    }
    void webhook_delete(std::string_view id) const {
        detail::check(herald_webhook_delete(handle_.get(), id.data(), id.size()));
    }

    // Stops publishes and drains dispatch for up to `timeout`; whether it drained in time.
    bool shutdown(std::chrono::milliseconds timeout) const {
        bool drained = false;
        const std::uint64_t timeout_ms = timeout.count() <= 0 ? 0u : static_cast<std::uint64_t>(timeout.count());
        detail::check(herald_system_shutdown(handle_.get(), timeout_ms, &drained));
        return drained;
    }

    herald_system *raw() const noexcept { return handle_.get(); }

private:
    explicit System(herald_system *raw) : handle_(raw) {}

    detail::Handle<herald_system, herald_system_free> handle_;
};

} // namespace herald

#endif // HERALD_HPP
