/* Authenticates each push by its bearer token, as PUBSUB_AUTH says, with a per-thread cache of verified tokens. */
#ifndef PW_AUTH_H
#define PW_AUTH_H

#include <stddef.h>

#include "proto/pw_str.h"
#include "worker/config.h"

/* Verified tokens remembered per event loop (direct-mapped by hash); a token lives about an hour. */
#define PW_AUTH_CACHE_SLOTS 256

typedef struct pw_auth pw_auth_t;

/* One per event loop (no locking inside). cfg is borrowed for the life of the object. */
pw_auth_t *pw_auth_new(const pw_config_t *cfg);
void pw_auth_free(pw_auth_t *a);

/**
 * Checks the Authorization header value (NULL slice when absent). Returns 0 when the push may be
 * processed, else PW_EUNAUTH (missing or invalid token), PW_EFORBIDDEN (a valid token of another
 * service account) or PW_EUNAVAIL (no signing keys: not loaded yet or expired; or a kid we may not
 * have yet: a refetch is requested and Pub/Sub retries). reason gets a short explanation without token bytes.
 * Verify mode costs no RSA work for a token already verified by this loop, until its exp or until
 * the key set changes (pw_keys_generation): a token whose key left the set is then rejected.
 */
int pw_auth_check(pw_auth_t *a, pw_str_t authorization, char *reason, size_t reasonlen);

/* 1 when pushes can be authenticated now (verify mode: keys loaded; other modes: always). */
int pw_auth_ready(const pw_config_t *cfg);

/* Counters of this loop, for metrics (written by the loop, readable from any thread). */
typedef struct {
    unsigned long long cache_hits, verified, rejected;
} pw_auth_stats_t;
void pw_auth_get_stats(const pw_auth_t *a, pw_auth_stats_t *out);

#endif
