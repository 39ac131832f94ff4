/* OIDC keys for integration tests: scripts/mint-token (keys, tokens) and JWKS servers run as child processes. */
#include "tests/integration/jwks.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/integration/proc.h"
#include "tests/integration/util.h"

#define MAX_SERVERS 16
#define START_ATTEMPTS 3
#define START_TIMEOUT_MS 10000
#define STOP_GRACE_MS 3000

static char mint_path[PATH_MAX];
static char mint_err[PATH_MAX]; /* mint-token's stderr, shown when it fails */
static void *live_servers[MAX_SERVERS]; /* pwt_jwks_server_t *: the running servers (pwt_slots_track) */

/* ---- scripts/mint-token ---------------------------------------------------------------------------- */

int pwt_mint_init(const char *err_path)
{
    snprintf(mint_err, sizeof mint_err, "%s", err_path);
    char *path = pwt_repo_path("scripts/mint-token");
    if (path == NULL || access(path, X_OK) != 0) {
        fprintf(stderr, "test: scripts/mint-token not found (%s)\n", path ? path : "no repository");
        free(path);
        return -1;
    }
    snprintf(mint_path, sizeof mint_path, "%s", path);
    free(path);
    return 0;
}

const char *pwt_mint_path(void)
{
    return mint_path;
}

static void print_mint_err(void)
{
    char *e = pwt_read_text(mint_err);
    fprintf(stderr, "mint-token stderr: %s\n", e != NULL ? e : "(none)");
    free(e);
}

int pwt_mint_keygen(const char *dir, const char *kid)
{
    const char *argv[] = {mint_path, "keygen", dir, "--kid", kid, NULL};
    int rc = pwt_run_capture(argv, mint_err, NULL);
    if (rc != 0) {
        fprintf(stderr, "test: mint-token keygen %s --kid %s exited with %d\n", dir, kid, rc);
        print_mint_err();
    }
    return rc == 0 ? 0 : -1;
}

char *pwt__mint_sign(const char *file, int line, const char *dir, const char *const *args)
{
    const char *argv[64];
    size_t k = 0;
    argv[k++] = mint_path;
    argv[k++] = "sign";
    argv[k++] = dir;
    for (size_t i = 0; args != NULL && args[i] != NULL && k < 63; i++)
        argv[k++] = args[i];
    argv[k] = NULL;
    char *out = NULL;
    int rc = pwt_run_capture(argv, mint_err, &out);
    if (rc != 0 || out == NULL || out[0] == '\0') {
        print_mint_err();
        pwt_fail(file, line, "mint-token sign exited with %d", rc);
    }
    return out;
}

/* ---- JWKS servers ---------------------------------------------------------------------------------- */

static void server_track(pwt_jwks_server_t *s, int on)
{
    pwt_slots_track(live_servers, MAX_SERVERS, s, on);
}

int pwt_jwks_start(pwt_jwks_server_t *s, const char *const *cmd, const char *dir, int port, const char *const *opts,
                   const char *log_prefix)
{
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    for (int attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
        s->port = port > 0 ? port : pwt_free_port();
        snprintf(s->log_path, sizeof s->log_path, "%s-%d.log", log_prefix, s->port);
        snprintf(s->url_env, sizeof s->url_env, "OIDC_JWKS_URL=http://127.0.0.1:%d/oauth2/v3/certs", s->port);
        char portbuf[16];
        snprintf(portbuf, sizeof portbuf, "%d", s->port);
        const char *argv[32];
        size_t k = 0;
        if (cmd == NULL) {
            argv[k++] = mint_path;
            argv[k++] = "serve";
        }
        for (size_t i = 0; cmd != NULL && cmd[i] != NULL && k < 24; i++)
            argv[k++] = cmd[i];
        argv[k++] = dir;
        argv[k++] = portbuf;
        for (size_t i = 0; opts != NULL && opts[i] != NULL && k < 31; i++)
            argv[k++] = opts[i];
        argv[k] = NULL;
        /* The log is appended to (a server restarted on its port keeps counting): only what this one writes says it is up. */
        char *old = pwt_read_text(s->log_path);
        size_t offset = old != NULL ? strlen(old) : 0;
        free(old);
        s->pid = pwt_spawn(argv, NULL, s->log_path, PWT_SPAWN_GROUP);
        if (s->pid < 0) {
            s->pid = 0;
            return -1;
        }
        server_track(s, 1);
        long long deadline = pwt_now_ms() + START_TIMEOUT_MS;
        while (pwt_now_ms() < deadline) {
            int code;
            if (pwt_reap(s->pid, &code)) {
                s->pid = 0;
                server_track(s, 0);
                break;
            }
            char *log = pwt_read_text(s->log_path);
            int up = log != NULL && strlen(log) > offset && strstr(log + offset, "listening") != NULL;
            free(log);
            if (up)
                return 0;
            pwt_sleep_ms(20);
        }
        char *log = pwt_read_text(s->log_path);
        fprintf(stderr, "test: JWKS server on port %d did not start (attempt %d): %s\n", s->port, attempt, log != NULL ? log : "");
        free(log);
        pwt_jwks_stop(s);
        if (port > 0)
            break;
    }
    return -1;
}

void pwt_jwks_stop(pwt_jwks_server_t *s)
{
    if (s->pid <= 0)
        return;
    pwt_stop_group(s->pid, STOP_GRACE_MS);
    s->pid = 0;
    server_track(s, 0);
}

void pwt_jwks_stop_all(void)
{
    for (int i = 0; i < MAX_SERVERS; i++)
        if (live_servers[i] != NULL)
            pwt_jwks_stop(live_servers[i]);
}

void pwt_jwks_kill_all_now(void)
{
    for (int i = 0; i < MAX_SERVERS; i++) {
        const pwt_jwks_server_t *s = live_servers[i];
        if (s != NULL && s->pid > 0)
            kill(-s->pid, SIGKILL);
    }
}

int pwt_jwks_count(const pwt_jwks_server_t *s, const char *what)
{
    char *log = pwt_read_text(s->log_path);
    int n = pwt_count_substr(log, what);
    free(log);
    return n;
}

int pwt_jwks_wait_count(const pwt_jwks_server_t *s, const char *what, int n, long timeout_ms)
{
    long long deadline = pwt_now_ms() + timeout_ms;
    int got;
    while ((got = pwt_jwks_count(s, what)) < n && pwt_now_ms() < deadline)
        pwt_sleep_ms(20);
    return got;
}
