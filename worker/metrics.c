/* The registry of per-thread metric slots, and the Prometheus text format of their sums. */
#include "worker/metrics.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef PW_VERSION
#define PW_VERSION "unknown"
#endif

/* Upper bounds: seconds for latencies, pushes for batch sizes (the last bucket is +Inf). */
static const double SECONDS_BOUNDS[PW_M_BUCKETS - 1] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
                                                         0.2,    0.5,   1,     2,     5,    8,    10};
static const double COUNT_BOUNDS[PW_M_BUCKETS - 1] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384};

static const char *const OUTCOME_NAMES[PW_M_OUTCOMES] = {"stored",    "duplicate",   "dead_letter", "ignored",    "unauthorized",
                                                         "forbidden", "unavailable", "too_large",   "over_budget"};
static const char *const STATUS_NAMES[PW_M_STATUSES] = {"sent", "delivered", "read", "failed", "played", "other"};
static const char *const TYPE_NAMES[PW_M_TYPES] = {"text",     "image",    "video",       "audio",           "document", "sticker",
                                                   "location", "contacts", "interactive", "button",          "reaction", "order",
                                                   "system",   "unsupported", "request_welcome", "other"};

void pw_metrics_inc(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

void pw_metrics_add_gauge(_Atomic int64_t *g, int64_t n)
{
    atomic_store_explicit(g, atomic_load_explicit(g, memory_order_relaxed) + n, memory_order_relaxed);
}

static void observe(pw_histogram_t *h, const double *bounds, double v)
{
    int b = 0;
    while (b < PW_M_BUCKETS - 1 && v > bounds[b])
        b++;
    pw_metrics_inc(&h->buckets[b], 1);
    pw_metrics_inc(&h->count, 1);
    atomic_store_explicit(&h->sum, atomic_load_explicit(&h->sum, memory_order_relaxed) + v, memory_order_relaxed);
}

void pw_metrics_observe_seconds(pw_histogram_t *h, double seconds)
{
    observe(h, SECONDS_BOUNDS, seconds);
}

void pw_metrics_observe_count(pw_histogram_t *h, double n)
{
    observe(h, COUNT_BOUNDS, n);
}

static int index_of(const char *const *names, int n, const char *s, size_t len)
{
    for (int i = 0; i < n - 1; i++)
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
            return i;
    return n - 1; /* "other" */
}

int pw_metrics_status_index(const char *s, size_t len)
{
    return index_of(STATUS_NAMES, PW_M_STATUSES, s, len);
}

int pw_metrics_type_index(const char *s, size_t len)
{
    return index_of(TYPE_NAMES, PW_M_TYPES, s, len);
}

/* A slot padded to whole cache lines, so that two threads' counters never share one. */
#define PW_METRICS_LINE 64
typedef struct {
    _Alignas(PW_METRICS_LINE) pw_metrics_t m;
} slot_t;

struct pw_metrics_registry {
    size_t n;
    slot_t *slots; /* in block, on a cache line boundary */
    void *block;
};

pw_metrics_registry_t *pw_metrics_registry_new(size_t n)
{
    pw_metrics_registry_t *r = pw_xcalloc(1, sizeof *r);
    r->n = n;
    r->block = pw_xcalloc(n + 1, sizeof *r->slots); /* zero is every counter's start */
    r->slots = (slot_t *)(((uintptr_t)r->block + PW_METRICS_LINE - 1) & ~(uintptr_t)(PW_METRICS_LINE - 1));
    return r;
}

void pw_metrics_registry_free(pw_metrics_registry_t *r)
{
    if (r == NULL)
        return;
    free(r->block);
    free(r);
}

size_t pw_metrics_registry_size(const pw_metrics_registry_t *r)
{
    return r->n;
}

pw_metrics_t *pw_metrics_slot(pw_metrics_registry_t *r, size_t i)
{
    return i < r->n ? &r->slots[i].m : NULL;
}

static uint64_t sum_counter(const pw_metrics_registry_t *r, size_t offset)
{
    uint64_t total = 0;
    for (size_t i = 0; i < r->n; i++)
        total += atomic_load_explicit((_Atomic uint64_t *)((char *)&r->slots[i].m + offset), memory_order_relaxed);
    return total;
}

#define SUM(field) sum_counter(r, offsetof(pw_metrics_t, field))

/* A gauge over every slot (each slot's share may be negative). */
static int64_t sum_gauge(const pw_metrics_registry_t *r, size_t offset)
{
    int64_t total = 0;
    for (size_t i = 0; i < r->n; i++)
        total += atomic_load_explicit((_Atomic int64_t *)((char *)&r->slots[i].m + offset), memory_order_relaxed);
    return total;
}

#define SUM_GAUGE(field) sum_gauge(r, offsetof(pw_metrics_t, field))

static void header(pw_buf_t *out, const char *name, const char *type, const char *help)
{
    pw_buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_histogram(pw_buf_t *out, const pw_metrics_registry_t *r, size_t offset, const double *bounds, const char *name,
                             const char *help)
{
    header(out, name, "histogram", help);
    uint64_t cumulative = 0;
    double sum = 0;
    for (int b = 0; b < PW_M_BUCKETS; b++) {
        cumulative += sum_counter(r, offset + offsetof(pw_histogram_t, buckets) + (size_t)b * sizeof(_Atomic uint64_t));
        if (b < PW_M_BUCKETS - 1)
            pw_buf_appendf(out, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[b], (unsigned long long)cumulative);
        else
            pw_buf_appendf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cumulative);
    }
    for (size_t i = 0; i < r->n; i++) {
        const pw_histogram_t *h = (const pw_histogram_t *)((const char *)&r->slots[i].m + offset);
        sum += atomic_load_explicit(&h->sum, memory_order_relaxed);
    }
    pw_buf_appendf(out, "%s_sum %.6f\n%s_count %llu\n", name, sum, name,
                   (unsigned long long)sum_counter(r, offset + offsetof(pw_histogram_t, count)));
}

void pw_metrics_render(pw_buf_t *out, const pw_metrics_registry_t *r, const pw_metrics_extra_t *extra)
{
    header(out, "pushworker_pushes_total", "counter", "Pushes answered, by outcome (one per push).");
    for (int o = 0; o < PW_M_OUTCOMES; o++)
        pw_buf_appendf(out, "pushworker_pushes_total{outcome=\"%s\"} %llu\n", OUTCOME_NAMES[o],
                       (unsigned long long)SUM(pushes[o]));
    header(out, "pushworker_statuses_total", "counter",
           "Outbound message status events committed, by status (new pushes only: a redelivery counts nothing).");
    for (int s = 0; s < PW_M_STATUSES; s++)
        pw_buf_appendf(out, "pushworker_statuses_total{status=\"%s\"} %llu\n", STATUS_NAMES[s],
                       (unsigned long long)SUM(statuses[s]));
    header(out, "pushworker_inbound_messages_total", "counter",
           "Inbound messages committed, by type (new pushes only: a redelivery counts nothing).");
    for (int t = 0; t < PW_M_TYPES; t++)
        pw_buf_appendf(out, "pushworker_inbound_messages_total{type=\"%s\"} %llu\n", TYPE_NAMES[t],
                       (unsigned long long)SUM(inbound[t]));
    header(out, "pushworker_dead_letters_total", "counter",
           "Pushes kept in dead_letters: not understood (outcome dead_letter) or with items rejected (outcome stored).");
    pw_buf_appendf(out, "pushworker_dead_letters_total %llu\n", (unsigned long long)SUM(dead_letters));
    header(out, "pushworker_in_flight_pushes", "gauge", "Pushes received and not yet answered.");
    pw_buf_appendf(out, "pushworker_in_flight_pushes %lld\n", (long long)SUM_GAUGE(in_flight));
    header(out, "pushworker_inflight_bytes", "gauge", "Bytes of request bodies held by requests and pushes in flight (all loops).");
    pw_buf_appendf(out, "pushworker_inflight_bytes %llu\n", (unsigned long long)extra->inflight_bytes);
    header(out, "pushworker_inflight_bytes_max", "gauge", "INFLIGHT_BYTES_MAX: beyond it pushes are answered 503 (outcome over_budget).");
    pw_buf_appendf(out, "pushworker_inflight_bytes_max %llu\n", (unsigned long long)extra->inflight_bytes_max);
    header(out, "pushworker_db_errors_total", "counter",
           "Transactions that failed: a group's (each push is then retried alone or answered 503), a new connection's warm-up,"
           " or an announcement of new inbound messages.");
    pw_buf_appendf(out, "pushworker_db_errors_total %llu\n", (unsigned long long)SUM(db_errors));
    header(out, "pushworker_inbound_announcements_total", "counter",
           "New inbound messages announced with NOTIFY pushworker_inbound just after their group committed (sent), or whose"
           " announcement failed or was lost with its database connection (failed).");
    pw_buf_appendf(out, "pushworker_inbound_announcements_total{result=\"sent\"} %llu\n", (unsigned long long)SUM(after_done));
    pw_buf_appendf(out, "pushworker_inbound_announcements_total{result=\"failed\"} %llu\n", (unsigned long long)SUM(after_failed));
    header(out, "pushworker_inbound_announcements_pending", "gauge",
           "New inbound messages committed and not yet announced (within about 5 ms, in a transaction of their own).");
    pw_buf_appendf(out, "pushworker_inbound_announcements_pending %lld\n", (long long)SUM_GAUGE(after_pending));
    header(out, "pushworker_db_reconnects_total", "counter", "Database connections lost and reopened.");
    pw_buf_appendf(out, "pushworker_db_reconnects_total %llu\n", (unsigned long long)SUM(db_reconnects));
    render_histogram(out, r, offsetof(pw_metrics_t, request_seconds), SECONDS_BOUNDS, "pushworker_request_duration_seconds",
                     "Time from receiving a push to answering it.");
    render_histogram(out, r, offsetof(pw_metrics_t, db_queue_seconds), SECONDS_BOUNDS, "pushworker_db_queue_seconds",
                     "Time from a push reaching the database queue to the sending of its first transaction (waiting for the group in flight).");
    render_histogram(out, r, offsetof(pw_metrics_t, db_tx_seconds), SECONDS_BOUNDS, "pushworker_db_transaction_seconds",
                     "Time from sending a group of pushes to its commit.");
    render_histogram(out, r, offsetof(pw_metrics_t, batch_pushes), COUNT_BOUNDS, "pushworker_db_batch_pushes",
                     "Pushes written per transaction (group commit).");
    header(out, "pushworker_rollup_folded_rows_total", "counter",
           "Pending roll-up rows (message_rollup_pending) folded into the roll-ups by this process.");
    pw_buf_appendf(out, "pushworker_rollup_folded_rows_total %llu\n", (unsigned long long)SUM(rollup_folded_rows));
    header(out, "pushworker_rollup_fold_errors_total", "counter", "Roll-up folds that failed (their rows stay pending for the next).");
    pw_buf_appendf(out, "pushworker_rollup_fold_errors_total %llu\n", (unsigned long long)SUM(rollup_fold_errors));
    render_histogram(out, r, offsetof(pw_metrics_t, rollup_fold_seconds), SECONDS_BOUNDS, "pushworker_rollup_fold_seconds",
                     "Time one roll-up fold took (ROLLUP_FOLD_MS apart).");
    header(out, "pushworker_jwks_fetches_total", "counter", "Signing key set fetches attempted.");
    pw_buf_appendf(out, "pushworker_jwks_fetches_total %llu\n", (unsigned long long)extra->jwks_fetches);
    header(out, "pushworker_jwks_fetch_failures_total", "counter", "Signing key set fetches that failed (previous keys kept).");
    pw_buf_appendf(out, "pushworker_jwks_fetch_failures_total %llu\n", (unsigned long long)extra->jwks_failures);
    header(out, "pushworker_jwks_keys", "gauge", "Signing keys currently loaded.");
    pw_buf_appendf(out, "pushworker_jwks_keys %llu\n", (unsigned long long)extra->jwks_keys);
    header(out, "pushworker_auth_tokens_total", "counter", "Bearer tokens checked, by result.");
    pw_buf_appendf(out, "pushworker_auth_tokens_total{result=\"cache_hit\"} %llu\n", (unsigned long long)SUM(auth_cache_hits));
    pw_buf_appendf(out, "pushworker_auth_tokens_total{result=\"verified\"} %llu\n", (unsigned long long)SUM(auth_verified));
    pw_buf_appendf(out, "pushworker_auth_tokens_total{result=\"rejected\"} %llu\n", (unsigned long long)SUM(auth_rejected));
    header(out, "pushworker_auth_disabled", "gauge", "1 when PUBSUB_AUTH=off (pushes are not authenticated).");
    pw_buf_appendf(out, "pushworker_auth_disabled %d\n", extra->auth_mode_off);
    header(out, "pushworker_build_info", "gauge", "The running build.");
    pw_buf_appendf(out, "pushworker_build_info{version=\"%s\"} 1\n", PW_VERSION);
}
