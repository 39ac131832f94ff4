/* The signing-key fetcher: one background thread keeps an immutable, ref-counted JWKS snapshot fresh. */
#ifndef PW_JWKS_H
#define PW_JWKS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/jwt.h"

#define PW_JWKS_FETCH_TIMEOUT_MS 5000   /* whole transfer, DNS and TLS included */
#define PW_JWKS_MAX_BYTES (1024 * 1024) /* a bigger body is a failed fetch */
#define PW_JWKS_DEFAULT_TTL_S 3600      /* without Cache-Control max-age */
/* Keys are fresh for max-age minus Age (the server's word, at most PW_JWKS_MAX_TTL_S); while refreshes
   fail they are kept JWKS_STALE_MAX_SECONDS longer, then dropped: pushes 503 until a fetch succeeds. */
#define PW_JWKS_MIN_TTL_S 60            /* scheduled refreshes never come sooner (but keys about to be
                                           dropped, JWKS_STALE_MAX_SECONDS past max-age, get a last try) */
#define PW_JWKS_MAX_TTL_S 86400         /* nor later */
#define PW_JWKS_MIN_REFRESH_MS 30000    /* at most one on-demand fetch per this (default of JWKS_MIN_REFRESH_MS) */
#define PW_JWKS_BACKOFF_MIN_MS 1000     /* retry after a failed fetch, doubling... */
#define PW_JWKS_BACKOFF_MAX_MS 60000    /* ...up to this */
#define PW_JWKS_FIRST_WAIT_MS 2000      /* serve does not listen before the first fetch has ended, or this long */

/* One fetched key set. Immutable once published; lives until the last reference is released. */
typedef struct {
    pw_jwks_t keys;
    int64_t fetched_unix; /* wall clock of the fetch, seconds */
    double fetched_ms;    /* pw_now_ms() (monotonic) of the fetch: its age against JWKS_MIN_REFRESH_MS */
    uint64_t generation;  /* pw_keys_generation() while this set is the published one */
    atomic_int pw__refs;  /* internal */
} pw_jwks_snapshot_t;

typedef struct {
    uint64_t fetches;          /* attempts, successful or not */
    uint64_t failures;         /* attempts that kept the previous keys */
    uint64_t refresh_requests; /* pw_keys_request_refresh calls (most are coalesced) */
    int64_t last_success_unix; /* 0 before the first success */
    size_t keys;               /* usable keys in the current snapshot */
} pw_keys_stats_t;

/**
 * Starts the fetcher thread for url (http:// or https://; no redirects are followed). The first
 * fetch starts at once, but this does not wait for it: until it succeeds pw_keys_acquire returns
 * NULL. min_refresh_ms: at most one on-demand fetch per this (JWKS_MIN_REFRESH_MS). stale_max_s:
 * how long keys outlive their cache lifetime while every refresh fails (JWKS_STALE_MAX_SECONDS);
 * then one last fetch is tried and, failing, the keys are dropped (pw_keys_ready() 0, an error
 * logged) until a fetch succeeds. Call once from main, after curl_global_init and before the loop
 * threads. Returns 0, or PW_EINVAL with err (bad URL or value, already started).
 */
int pw_keys_start(const char *url, long min_refresh_ms, long stale_max_s, char *err, size_t errlen);

/**
 * Stops and joins the thread (an ongoing fetch is aborted) and drops the published snapshot;
 * snapshots still acquired stay valid until released. Idempotent. Call after the loops stopped.
 */
void pw_keys_stop(void);

/**
 * The current key set with a new reference, or NULL before the first successful fetch. Any thread;
 * never blocks on a fetch (a short mutex hold). Pair with pw_keys_release.
 */
pw_jwks_snapshot_t *pw_keys_acquire(void);

/* Drops a reference from pw_keys_acquire; the last one frees the snapshot. NULL is ignored. */
void pw_keys_release(pw_jwks_snapshot_t *snap);

/**
 * Asks for a fetch because a token named a kid that seen (the caller's still-acquired snapshot,
 * or NULL when there was none) does not have: keys may have rotated. Cheap and callable from any
 * thread any number of times: requests coalesce into at most one fetch per JWKS_MIN_REFRESH_MS,
 * counted from the previous fetch, and a request about a set already replaced is dropped.
 */
void pw_keys_request_refresh(const pw_jwks_snapshot_t *seen);

/*
 * Waits until the first fetch has ended, with keys or without (pw_keys_ready() tells which), or
 * timeout_ms has passed; returns at once when the fetcher was not started. Call from main only.
 */
void pw_keys_wait_first(long timeout_ms);

/* The on-demand refresh interval in effect (JWKS_MIN_REFRESH_MS, as given to pw_keys_start). */
long pw_keys_min_refresh_ms(void);

/* 1 while a key set is published: from the first successful fetch, through failed refreshes, until
   the keys are JWKS_STALE_MAX_SECONDS past their cache lifetime. */
int pw_keys_ready(void);

/**
 * Changes whenever the published key set does (a new set installed, or the keys dropped). A
 * verdict reached with a snapshot holds only while this still equals its generation: a cache of
 * verified tokens compares them so that a token whose key left the set is not accepted again.
 * Any thread; lock-free.
 */
uint64_t pw_keys_generation(void);

/* Counters for /metrics; any thread. */
void pw_keys_stats(pw_keys_stats_t *out);

#endif
