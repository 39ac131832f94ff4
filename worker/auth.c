/* Bearer-token authentication for pushes: PUBSUB_AUTH verify (signature + claims), claims (Cloud Run IAM), off. */
#include "worker/auth.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "proto/jwt.h"
#include "worker/jwks.h"
#include "worker/metrics.h"
#include "worker/util.h"

typedef struct {
    unsigned char hash[SHA256_DIGEST_LENGTH];
    int64_t exp;              /* 0: empty slot */
    uint64_t keys_generation; /* verify mode: pw_keys_generation() of the key set that verified it */
} cache_slot_t;

struct pw_auth {
    const pw_config_t *cfg;
    cache_slot_t cache[PW_AUTH_CACHE_SLOTS];
    struct {
        _Atomic uint64_t cache_hits, verified, rejected; /* single writer: this loop */
    } stats;
};

pw_auth_t *pw_auth_new(const pw_config_t *cfg)
{
    pw_auth_t *a = pw_xcalloc(1, sizeof *a);
    a->cfg = cfg;
    return a;
}

void pw_auth_free(pw_auth_t *a)
{
    free(a);
}

int pw_auth_ready(const pw_config_t *cfg)
{
    return cfg->auth_mode != PW_AUTH_VERIFY || pw_keys_ready();
}

void pw_auth_get_stats(const pw_auth_t *a, pw_auth_stats_t *out)
{
    out->cache_hits = atomic_load_explicit(&a->stats.cache_hits, memory_order_relaxed);
    out->verified = atomic_load_explicit(&a->stats.verified, memory_order_relaxed);
    out->rejected = atomic_load_explicit(&a->stats.rejected, memory_order_relaxed);
}

/* The token after "Bearer " (the scheme is case-insensitive, RFC 7235), or a NULL slice. */
static pw_str_t bearer_token(pw_str_t h)
{
    static const char scheme[] = "Bearer ";
    size_t n = sizeof scheme - 1;
    if (h.base == NULL || h.len <= n || strncasecmp(h.base, scheme, n) != 0)
        return PW_STR_NULL;
    size_t i = n;
    while (i < h.len && h.base[i] == ' ')
        i++;
    return i < h.len ? pw_str(h.base + i, h.len - i) : PW_STR_NULL;
}

static cache_slot_t *cache_slot(pw_auth_t *a, const unsigned char *hash)
{
    size_t k;
    memcpy(&k, hash, sizeof k);
    return &a->cache[k % PW_AUTH_CACHE_SLOTS];
}

static int fail(pw_auth_t *a, int code, char *reason, size_t reasonlen, const char *why)
{
    pw_metrics_inc(&a->stats.rejected, 1);
    snprintf(reason, reasonlen, "%s", why);
    return code;
}

int pw_auth_check(pw_auth_t *a, pw_str_t authorization, char *reason, size_t reasonlen)
{
    const pw_config_t *cfg = a->cfg;
    if (cfg->auth_mode == PW_AUTH_OFF)
        return 0;
    pw_str_t token = bearer_token(authorization);
    if (token.base == NULL)
        return fail(a, PW_EUNAUTH, reason, reasonlen,
                    authorization.base == NULL ? "missing Authorization header" : "Authorization is not a Bearer token");
    if (token.len > PW_JWT_MAX_LEN)
        return fail(a, PW_EUNAUTH, reason, reasonlen, "token too large");

    int64_t now = (int64_t)time(NULL);
    unsigned char hash[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)token.base, token.len, hash);
    cache_slot_t *slot = cache_slot(a, hash);
    /*
     * A cached token passed every check; since then its lifetime may have run out, or (verify mode)
     * the key set changed: its key may have been revoked, or every key dropped. Either way the
     * verdict is forgotten and the token verified afresh (once per key set: about every 6 hours).
     */
    if (slot->exp != 0 && memcmp(slot->hash, hash, sizeof hash) == 0) {
        if (!pw_jwt_expired(slot->exp, now, PW_JWT_DEFAULT_SKEW_S) &&
            (cfg->auth_mode != PW_AUTH_VERIFY || slot->keys_generation == pw_keys_generation())) {
            pw_metrics_inc(&a->stats.cache_hits, 1);
            return 0;
        }
        slot->exp = 0;
    }

    pw_jwt_policy_t pol = {
        .audience = cfg->audience,
        .issuers = cfg->issuers,
        .email = cfg->service_account,
        .skew_s = PW_JWT_DEFAULT_SKEW_S,
        .now = now,
        .mode = cfg->auth_mode == PW_AUTH_CLAIMS ? PW_JWT_SIGNATURE_STRIPPED : PW_JWT_VERIFY_SIGNATURE,
    };
    pw_jwks_snapshot_t *snap = NULL;
    if (pol.mode == PW_JWT_VERIFY_SIGNATURE && (snap = pw_keys_acquire()) == NULL)
        return fail(a, PW_EUNAVAIL, reason, reasonlen, "no signing keys: not fetched yet, or expired while refreshes failed");
    pw_jwt_result_t res;
    char err[160] = "";
    int rc = pw_jwt_verify(token.base, token.len, snap != NULL ? &snap->keys : NULL, &pol, &res, err, sizeof err);
    if (rc == 0) {
        pw_metrics_inc(&a->stats.verified, 1);
        memcpy(slot->hash, hash, sizeof hash);
        slot->exp = res.exp;
        slot->keys_generation = snap != NULL ? snap->generation : 0;
        pw_keys_release(snap);
        return 0;
    }
    if (pw_jwt_is_unknown_kid(rc)) {
        /*
         * Keys rotate: a kid missing from an older key set may be new, so ask for a refetch (rate
         * limited) and let Pub/Sub retry. Missing from a set fetched within the refetch interval
         * (measured in milliseconds: in whole seconds a set fetched at x.98 s looked a second old
         * at x+1.01), it is not Google's.
         */
        int recent = snap != NULL && pw_now_ms() - snap->fetched_ms < (double)pw_keys_min_refresh_ms();
        if (!recent)
            pw_keys_request_refresh(snap);
        pw_keys_release(snap);
        if (recent)
            return fail(a, PW_EUNAUTH, reason, reasonlen, "token signed by an unknown key");
        return fail(a, PW_EUNAVAIL, reason, reasonlen, "token signed by a key not loaded yet; refetching keys");
    }
    pw_keys_release(snap);
    snprintf(reason, reasonlen, "%s: %s", pw_jwt_reason(rc), err);
    pw_metrics_inc(&a->stats.rejected, 1);
    return pw_jwt_error_class(rc);
}
