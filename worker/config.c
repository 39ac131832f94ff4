/* Reads and validates the environment into pw_config_t. */
#include "worker/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    cfg->service_account = env_or("PUBSUB_SERVICE_ACCOUNT", NULL);
    cfg->jwks_url = env_or("OIDC_JWKS_URL", "https://www.googleapis.com/oauth2/v3/certs");
    cfg->issuers = env_or("OIDC_ISSUERS", "accounts.google.com,https://accounts.google.com");

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

    const char *level = env_or("LOG_LEVEL", "info");
    cfg->log_level = pw_log_parse_level(level);
    if (cfg->log_level < 0) {
        snprintf(err, errlen, "LOG_LEVEL=%s is not valid: expected debug, info, warning or error", level);
        return -1;
    }
    return 0;
}
