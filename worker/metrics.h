/*
 * Prometheus metrics: counters and histograms in a registry of slots, one per writing thread (each
 * event loop, the database executor, the roll-up folder), each slot written by its thread only and
 * read by whichever thread renders GET /metrics. The Face creates the registry and hands out the
 * slots.
 */
#ifndef PW_METRICS_H
#define PW_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "worker/util.h"

/* What happened to a push, as the pushworker_pushes_total{outcome} label says: one per push. */
typedef enum {
    PW_M_STORED = 0,  /* its rows written (a part rejected is kept in dead_letters too: see dead_letters) */
    PW_M_DUPLICATE,   /* its (subscription, message id) was already recorded: nothing written */
    PW_M_DEAD_LETTER, /* not understood at all: kept in dead_letters */
    PW_M_IGNORED,     /* a webhook with nothing to store */
    PW_M_UNAUTHORIZED,
    PW_M_FORBIDDEN,
    PW_M_UNAVAILABLE, /* 503: database down, queue full, deadline passed, keys not loaded */
    PW_M_TOO_LARGE,   /* 413: a body over MAX_BODY_BYTES (by its Content-Length, or by h2o once a chunked one grows past it) */
    PW_M_OVER_BUDGET, /* 503: its body would have taken the bodies in flight over INFLIGHT_BYTES_MAX */
    PW_M_OUTCOMES
} pw_metric_outcome_t;

/* Status values and inbound types counted by name; anything else is "other" (bounded labels). */
#define PW_M_STATUSES 6  /* sent delivered read failed played other */
#define PW_M_TYPES 16

#define PW_M_BUCKETS 16

typedef struct {
    _Atomic uint64_t buckets[PW_M_BUCKETS]; /* non-cumulative counts per bucket (+Inf last) */
    _Atomic uint64_t count;
    _Atomic double sum;
} pw_histogram_t;

/*
 * A slot: written only by its thread (relaxed atomics: no lock prefix on the hot path), read by
 * whichever thread renders /metrics.
 */
typedef struct {
    _Atomic uint64_t pushes[PW_M_OUTCOMES];
    _Atomic uint64_t statuses[PW_M_STATUSES];
    _Atomic uint64_t inbound[PW_M_TYPES];
    _Atomic uint64_t dead_letters; /* pushes kept in dead_letters, whole or in part (new ones only) */
    _Atomic uint64_t auth_cache_hits, auth_verified, auth_rejected; /* copied from the loop's pw_auth_t after each check */
    _Atomic int64_t in_flight;
    _Atomic uint64_t db_errors;
    _Atomic uint64_t db_reconnects;
    /* Values for the statement's after statement (worker/db.h): the new inbound messages' announcements. */
    _Atomic int64_t after_pending;             /* from groups' results (dropped if the group does not commit), not yet run */
    _Atomic uint64_t after_done, after_failed; /* run and committed; failed or lost with their connection */
    pw_histogram_t request_seconds; /* push received -> answered */
    pw_histogram_t db_queue_seconds; /* submitted to the executor -> its first group sent */
    pw_histogram_t db_tx_seconds;   /* group sent -> committed */
    pw_histogram_t batch_pushes;    /* pushes per transaction */
    _Atomic uint64_t rollup_folded_rows; /* pending roll-up rows folded (worker/fold.h) */
    _Atomic uint64_t rollup_fold_errors; /* folds that failed (the rows stay pending for the next) */
    pw_histogram_t rollup_fold_seconds;  /* one fold: its statement sent -> committed */
} pw_metrics_t;

void pw_metrics_inc(_Atomic uint64_t *c, uint64_t n);
void pw_metrics_add_gauge(_Atomic int64_t *g, int64_t n);
void pw_metrics_observe_seconds(pw_histogram_t *h, double seconds);
void pw_metrics_observe_count(pw_histogram_t *h, double n);

/* The label index of a status value / inbound message type. */
int pw_metrics_status_index(const char *s, size_t len);
int pw_metrics_type_index(const char *s, size_t len);

/* Process-wide values rendered alongside (gathered by the caller). */
typedef struct {
    uint64_t jwks_fetches, jwks_failures, jwks_keys;
    uint64_t inflight_bytes, inflight_bytes_max;
    int auth_mode_off;
} pw_metrics_extra_t;

/* The slots: n zeroed pw_metrics_t, each on cache lines of its own. */
typedef struct pw_metrics_registry pw_metrics_registry_t;

pw_metrics_registry_t *pw_metrics_registry_new(size_t n);
void pw_metrics_registry_free(pw_metrics_registry_t *r);
size_t pw_metrics_registry_size(const pw_metrics_registry_t *r);
/* Slot i (< size), for the one thread that writes it. */
pw_metrics_t *pw_metrics_slot(pw_metrics_registry_t *r, size_t i);

/* Appends the Prometheus text exposition of the sum over every slot to out. Any thread. */
void pw_metrics_render(pw_buf_t *out, const pw_metrics_registry_t *r, const pw_metrics_extra_t *extra);

#endif
