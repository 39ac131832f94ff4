/* Reads and validates the environment into pw_config_t. */
#include "worker/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <libpq-fe.h>

#include "worker/jwks.h"
#include "worker/log.h"

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : dflt;
}

/* Reads an integer in [lo, hi]; returns 0 or -1 with err filled. */
static int env_long(const char *name, long dflt, long lo, long hi, long *out, char *err, size_t errlen)
{
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0') {
        *out = dflt;
        return 0;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno != 0 || *end != '\0' || n < lo || n > hi) {
        snprintf(err, errlen, "%s=%s is not valid: expected an integer from %ld to %ld", name, v, lo, hi);
        return -1;
    }
    *out = n;
    return 0;
}

/*
 * DATABASE_URL must parse as libpq will read it (key=value pairs or a postgresql:// URI): a bad one
 * would otherwise leave the worker answering 503 forever. Neither the value nor libpq's message is
 * repeated: both can quote the password.
 */
static int check_database_url(const char *url, char *err, size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    if (opts == NULL) {
        snprintf(err, errlen,
                 "DATABASE_URL is not valid: expected a libpq connection string, key=value pairs "
                 "(host=... dbname=...) or a URI (postgresql://user:password@host:5432/db); "
                 "the value is not shown: it may hold a password");
        PQfreemem(perr);
        return -1;
    }
    /* libpq checks these values only when it connects, which would again mean 503 forever. */
    const char *bad = NULL;
    for (PQconninfoOption *o = opts; o->keyword != NULL && bad == NULL; o++) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        if (strcmp(o->keyword, "port") == 0) {
            /* one port, or one per host: "5432" or "5432,5433" (an empty item means the default) */
            for (const char *p = o->val; bad == NULL; p++) {
                char *end;
                errno = 0;
                long n = *p == ',' || *p == '\0' ? 5432 : strtol(p, &end, 10);
                if (*p != ',' && *p != '\0')
                    p = end;
                if (errno != 0 || n < 1 || n > 65535 || (*p != ',' && *p != '\0'))
                    bad = "port must be a number from 1 to 65535 (or one per host, comma-separated)";
                if (*p == '\0')
                    break;
            }
        } else if (strcmp(o->keyword, "sslmode") == 0) {
            static const char *const modes[] = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"};
            int known = 0;
            for (size_t i = 0; i < sizeof modes / sizeof *modes; i++)
                known |= strcmp(o->val, modes[i]) == 0;
            if (!known)
                bad = "sslmode must be disable, allow, prefer, require, verify-ca or verify-full";
        }
    }
    PQconninfoFree(opts);
    if (bad != NULL) {
        snprintf(err, errlen, "DATABASE_URL is not valid: %s; the value is not shown: it may hold a password", bad);
        return -1;
    }
    return 0;
}

/* An http:// or https:// URL with a host, as libcurl parses it (the fetcher uses no other scheme). */
static int check_jwks_url(const char *url, char *err, size_t errlen)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    int ok = u != NULL && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
             (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0) &&
             curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host[0] != '\0';
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    if (!ok)
        snprintf(err, errlen, "OIDC_JWKS_URL=%s is not valid: expected an http:// or https:// URL with a host", url);
    return ok ? 0 : -1;
}

/* An email address as Google prints a service account's: one '@' with text on both sides, no spaces. */
static int looks_like_email(const char *s)
{
    const char *at = strchr(s, '@');
    if (at == NULL || at == s || at[1] == '\0' || strchr(at + 1, '@') != NULL)
        return 0;
    for (const char *p = s; *p != '\0'; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return 0;
    return 1;
}

const char *pw_auth_mode_name(pw_auth_mode_t mode)
{
    switch (mode) {
    case PW_AUTH_VERIFY:
        return "verify";
    case PW_AUTH_CLAIMS:
        return "claims";
    default:
        return "off";
    }
}

int pw_config_load(pw_config_t *cfg, char *err, size_t errlen)
{
    long v;
    memset(cfg, 0, sizeof *cfg);

    if (env_long("PORT", 8080, 1, 65535, &v, err, errlen) != 0)
        return -1;
    cfg->port = (int)v;
    cfg->database_url = env_or("DATABASE_URL", "");
    if (check_database_url(cfg->database_url, err, errlen) != 0)
        return -1;

    const char *auth = env_or("PUBSUB_AUTH", "verify");
    if (strcmp(auth, "verify") == 0) {
        cfg->auth_mode = PW_AUTH_VERIFY;
    } else if (strcmp(auth, "claims") == 0) {
        cfg->auth_mode = PW_AUTH_CLAIMS;
    } else if (strcmp(auth, "off") == 0) {
        cfg->auth_mode = PW_AUTH_OFF;
    } else {
        snprintf(err, errlen, "PUBSUB_AUTH=%s is not valid: expected verify, claims or off", auth);
        return -1;
    }
    cfg->audience = env_or("PUBSUB_AUDIENCE", NULL);
    if (cfg->audience == NULL && cfg->auth_mode != PW_AUTH_OFF) {
        snprintf(err, errlen, "PUBSUB_AUDIENCE is required with PUBSUB_AUTH=%s: set it to the push subscription's audience",
                 auth);
        return -1;
    }
    /*
     * Without an account, verify mode would accept a token minted by any Google service account for
     * this audience, and the audience is the service's public URL: that is nobody checked. So verify
     * mode needs the account, or an explicit "any" for local use (logged loudly by main).
     */
    cfg->service_account = env_or("PUBSUB_SERVICE_ACCOUNT", NULL);
    if (cfg->service_account != NULL && strcmp(cfg->service_account, PW_SERVICE_ACCOUNT_ANY) == 0) {
        cfg->service_account = NULL;
        cfg->any_account = 1;
    } else if (cfg->service_account != NULL && !looks_like_email(cfg->service_account)) {
        snprintf(err, errlen,
                 "PUBSUB_SERVICE_ACCOUNT=%s is not valid: expected the push subscription's service account email, "
                 "or " PW_SERVICE_ACCOUNT_ANY " (local use only)",
                 cfg->service_account);
        return -1;
    } else if (cfg->service_account == NULL && cfg->auth_mode == PW_AUTH_VERIFY) {
        snprintf(err, errlen,
                 "PUBSUB_SERVICE_ACCOUNT is required with PUBSUB_AUTH=verify: set it to the push subscription's service "
                 "account email (or to " PW_SERVICE_ACCOUNT_ANY " to accept every account, for local use only)");
        return -1;
    }
    cfg->jwks_url = env_or("OIDC_JWKS_URL", "https://www.googleapis.com/oauth2/v3/certs");
    if (check_jwks_url(cfg->jwks_url, err, errlen) != 0)
        return -1;
    if (env_long("JWKS_MIN_REFRESH_MS", PW_JWKS_MIN_REFRESH_MS, 0, 86400000L, &v, err, errlen) != 0)
        return -1;
    cfg->jwks_min_refresh_ms = v;
    if (env_long("JWKS_STALE_MAX_SECONDS", PW_JWKS_STALE_MAX_DEFAULT_S, 0, 7L * 86400, &v, err, errlen) != 0)
        return -1;
    cfg->jwks_stale_max_s = v;
    cfg->issuers = env_or("OIDC_ISSUERS", "accounts.google.com,https://accounts.google.com");
    if (strspn(cfg->issuers, ", \t") == strlen(cfg->issuers)) {
        snprintf(err, errlen, "OIDC_ISSUERS=%s is not valid: expected comma-separated issuers (e.g. https://accounts.google.com)",
                 cfg->issuers);
        return -1;
    }

    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1)
        cpus = 1;
    if (env_long("WORKER_THREADS", cpus, 1, 256, &v, err, errlen) != 0)
        return -1;
    cfg->threads = (int)v;
    if (env_long("MAX_BODY_BYTES", 16L << 20, 1024, 1L << 30, &v, err, errlen) != 0)
        return -1;
    cfg->max_body_bytes = (size_t)v;
    if (env_long("INFLIGHT_BYTES_MAX", 64L << 20, 1024, 1L << 40, &v, err, errlen) != 0)
        return -1;
    cfg->inflight_bytes_max = (size_t)v;
    if (env_long("PUSH_DEADLINE_MS", 8000, 100, 600000, &v, err, errlen) != 0)
        return -1;
    cfg->deadline_ms = (int)v;
    if (env_long("DB_BATCH_MAX", 256, 1, 10000, &v, err, errlen) != 0)
        return -1;
    cfg->batch_max = (int)v;
    if (env_long("DB_BATCH_MAX_BYTES", 8L << 20, 1024, 1L << 30, &v, err, errlen) != 0)
        return -1;
    cfg->batch_max_bytes = (size_t)v;
    if (env_long("DB_QUEUE_MAX", 4096, 1, 1000000, &v, err, errlen) != 0)
        return -1;
    cfg->queue_max = (int)v;
    if (env_long("DB_CONNECTIONS", 1, 1, 64, &v, err, errlen) != 0)
        return -1;
    cfg->db_connections = (int)v;

    const char *pooler = env_or("DB_POOLER", "none");
    if (strcmp(pooler, "transaction") == 0) {
        cfg->pooler_transaction = 1;
    } else if (strcmp(pooler, "none") != 0 && strcmp(pooler, "session") != 0) {
        snprintf(err, errlen, "DB_POOLER=%s is not valid: expected none, session or transaction", pooler);
        return -1;
    }

    /* Set per transaction (worker/db.c), so they hold behind any pooler. A statement must end
       before the push's deadline, or the push is answered 503 while its group still runs. */
    /* Default: 5000, or less with a short deadline (1 s under it, 100 at least). */
    long stmt_dflt = cfg->deadline_ms - 1000 < 5000 ? cfg->deadline_ms - 1000 : 5000;
    if (env_long("DB_STATEMENT_TIMEOUT_MS", stmt_dflt < 100 ? 100 : stmt_dflt, 100, 600000, &v, err, errlen) != 0)
        return -1;
    cfg->statement_timeout_ms = (int)v;
    if (cfg->statement_timeout_ms >= cfg->deadline_ms) {
        snprintf(err, errlen, "DB_STATEMENT_TIMEOUT_MS=%d is not valid: it must be below PUSH_DEADLINE_MS (%d)",
                 cfg->statement_timeout_ms, cfg->deadline_ms);
        return -1;
    }
    if (env_long("DB_LOCK_TIMEOUT_MS", cfg->statement_timeout_ms < 1000 ? cfg->statement_timeout_ms : 1000, 1, 600000, &v,
                 err, errlen) != 0)
        return -1;
    cfg->lock_timeout_ms = (int)v;
    if (cfg->lock_timeout_ms > cfg->statement_timeout_ms) {
        snprintf(err, errlen, "DB_LOCK_TIMEOUT_MS=%d is not valid: it must not exceed DB_STATEMENT_TIMEOUT_MS (%d)",
                 cfg->lock_timeout_ms, cfg->statement_timeout_ms);
        return -1;
    }

    if (env_long("ROLLUP_FOLD_MS", 1000, 0, 3600000, &v, err, errlen) != 0)
        return -1;
    cfg->rollup_fold_ms = (int)v;

    const char *level = env_or("LOG_LEVEL", "info");
    cfg->log_level = pw_log_parse_level(level);
    if (cfg->log_level < 0) {
        snprintf(err, errlen, "LOG_LEVEL=%s is not valid: expected debug, info, warning or error", level);
        return -1;
    }
    return 0;
}
