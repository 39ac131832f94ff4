/* Start-up refusals: the real worker binary, run with one bad setting, must exit 2 at once with one clear line on stderr. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/integration/harness.h"
#include "tests/integration/proc.h"
#include "tests/integration/util.h"

#define PASSWORD "s3cr3t-Pa55"  /* must never appear in the worker's output */
#define EXIT_TIMEOUT_MS 10000   /* a refusal is immediate; this only bounds a worker that serves instead */
#define PREFIX "{\"severity\":\"CRITICAL\""

typedef struct {
    int code;     /* exit status; -1 when it was still running after EXIT_TIMEOUT_MS (then killed) */
    char out[8192]; /* stdout and stderr together */
} run_t;

/*
 * Runs `$PW_WORKER cmd` with exactly this environment: PATH, a free-ish PORT, DATABASE_URL of the
 * test database, PUBSUB_AUTH=off, LOG_LEVEL=info, then env (later entries win: the setting under
 * test). Nothing is inherited, so a PUBSUB_* of the caller cannot change the outcome.
 */
static void run_worker(const char *cmd, const char *const *env, long timeout_ms, run_t *r)
{
    const char *bin = getenv("PW_WORKER");
    assert_non_null(bin);
    char db_env[1024], port_env[32], log_path[] = "/tmp/pwt-config-XXXXXX";
    snprintf(db_env, sizeof db_env, "DATABASE_URL=%s", pwt_db_url());
    snprintf(port_env, sizeof port_env, "PORT=%d", pwt_free_port());
    const char *envp[32];
    size_t k = 0;
    envp[k++] = "PATH=/usr/bin:/bin";
    envp[k++] = port_env;
    envp[k++] = db_env;
    envp[k++] = "PUBSUB_AUTH=off";
    envp[k++] = "LOG_LEVEL=info";
    /* Under make test-valgrind PW_WORKER is tests/valgrind-worker, which needs to know the real binary. */
    char real_env[1024];
    if (getenv("PW_REAL_WORKER") != NULL) {
        snprintf(real_env, sizeof real_env, "PW_REAL_WORKER=%s", getenv("PW_REAL_WORKER"));
        envp[k++] = real_env;
    }
    for (size_t i = 0; env != NULL && env[i] != NULL && k < 31; i++) {
        /* Replace an earlier entry of the same name, or append. */
        size_t nlen = strcspn(env[i], "=");
        size_t j;
        for (j = 0; j < k; j++)
            if (strncmp(envp[j], env[i], nlen) == 0 && envp[j][nlen] == '=')
                break;
        envp[j] = env[i];
        if (j == k)
            k++;
    }
    envp[k] = NULL;

    int fd = mkstemp(log_path);
    assert_true(fd >= 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        pwt_child_redirect_fd(fd);
        char *argv[] = {(char *)bin, (char *)cmd, NULL};
        execve(bin, argv, (char *const *)envp);
        _exit(127);
    }
    int wstatus = 0;
    long long deadline = pwt_now_ms() + timeout_ms;
    pid_t got;
    while ((got = waitpid(pid, &wstatus, WNOHANG)) == 0 && pwt_now_ms() < deadline)
        pwt_sleep_ms(20);
    if (got == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &wstatus, 0);
        r->code = -1;
    } else {
        r->code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
    }
    ssize_t n = pread(fd, r->out, sizeof r->out - 1, 0);
    r->out[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(log_path);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

/* Asserts the worker refused: exit 2, and its whole output is one CRITICAL line whose message is
   "configuration: " followed by expected. */
#define expect_refusal(cmd, env, expected) expect_refusal_(__LINE__, (cmd), (env), (expected))
static void expect_refusal_(int line, const char *cmd, const char *const *env, const char *expected)
{
    run_t r;
    run_worker(cmd, env, EXIT_TIMEOUT_MS, &r);
    char want[1200];
    snprintf(want, sizeof want, "\"message\":\"configuration: %s\"}\n", expected);
    if (r.code != 2 || count_lines(r.out) != 1 || strncmp(r.out, PREFIX, strlen(PREFIX)) != 0 || strstr(r.out, want) == NULL) {
        fprintf(stderr,
                "config_test.c:%d: expected exit 2 and one line ending in\n  %s"
                "got exit %d (-1: still serving after %d ms, killed) and:\n%s\n",
                line, want, r.code, EXIT_TIMEOUT_MS, r.out);
        fail();
    }
    assert_null(strstr(r.out, PASSWORD));
}

#define NEED_SA                                                                                                                    \
    "PUBSUB_SERVICE_ACCOUNT is required with PUBSUB_AUTH=verify: set it to the push subscription's service account email (or to "  \
    "any to accept every account, for local use only)"
#define BAD_DB_URL                                                                                                                 \
    "DATABASE_URL is not valid: expected a libpq connection string, key=value pairs (host=... dbname=...) or a URI "              \
    "(postgresql://user:password@host:5432/db); the value is not shown: it may hold a password"

#define BAD_DB_PORT                                                                                                                \
    "DATABASE_URL is not valid: port must be a number from 1 to 65535 (or one per host, comma-separated); the value is not "      \
    "shown: it may hold a password"

static void verify_mode_without_service_account_refuses_to_start(void **state)
{
    (void)state;
    expect_refusal("serve", PWT_LIST("PUBSUB_AUTH=verify", "PUBSUB_AUDIENCE=https://x.example/push"), NEED_SA);
    /* verify is the default mode */
    expect_refusal("serve", PWT_LIST("PUBSUB_AUTH=", "PUBSUB_AUDIENCE=https://x.example/push"), NEED_SA);
}

static void service_account_that_is_not_an_email_refuses_to_start(void **state)
{
    (void)state;
    expect_refusal("serve",
                   PWT_LIST("PUBSUB_AUTH=verify", "PUBSUB_AUDIENCE=https://x.example/push", "PUBSUB_SERVICE_ACCOUNT=push account"),
                   "PUBSUB_SERVICE_ACCOUNT=push account is not valid: expected the push subscription's service account email, "
                   "or any (local use only)");
}

static void malformed_database_url_refuses_to_start_without_printing_it(void **state)
{
    (void)state;
    /* key=value with a word missing its '=': libpq's own message would quote the password */
    expect_refusal("serve", PWT_LIST("DATABASE_URL=host=127.0.0.1 dbname=app password " PASSWORD), BAD_DB_URL);
    /* a URI with a port that is not a number (libpq itself would notice only when connecting) */
    expect_refusal("serve", PWT_LIST("DATABASE_URL=postgresql://app:" PASSWORD "@127.0.0.1:54x2/app"), BAD_DB_PORT);
    expect_refusal("serve", PWT_LIST("DATABASE_URL=host=a,b port=5432,70000 password=" PASSWORD), BAD_DB_PORT);
    expect_refusal("serve", PWT_LIST("DATABASE_URL=postgresql://app:" PASSWORD "@db.example/app?sslmode=requir"),
                   "DATABASE_URL is not valid: sslmode must be disable, allow, prefer, require, verify-ca or verify-full; the value "
                   "is not shown: it may hold a password");
    /* an unknown option */
    expect_refusal("serve", PWT_LIST("DATABASE_URL=host=127.0.0.1 passwd=" PASSWORD), BAD_DB_URL);
    /* migrate checks it the same way */
    expect_refusal("migrate", PWT_LIST("DATABASE_URL=postgresql://app:" PASSWORD "@127.0.0.1/app?sslmod=require"), BAD_DB_URL);
}

static void bad_jwks_settings_refuse_to_start_even_when_unused(void **state)
{
    (void)state;
    /* PUBSUB_AUTH=off (run_worker's default): the key fetcher never starts, the values are still wrong. */
    expect_refusal("serve", PWT_LIST("OIDC_JWKS_URL=ftp://keys.example/certs"),
                   "OIDC_JWKS_URL=ftp://keys.example/certs is not valid: expected an http:// or https:// URL with a host");
    expect_refusal("serve", PWT_LIST("OIDC_JWKS_URL=https://"),
                   "OIDC_JWKS_URL=https:// is not valid: expected an http:// or https:// URL with a host");
    expect_refusal("serve", PWT_LIST("JWKS_MIN_REFRESH_MS=30s"),
                   "JWKS_MIN_REFRESH_MS=30s is not valid: expected an integer from 0 to 86400000");
    expect_refusal("serve", PWT_LIST("JWKS_STALE_MAX_SECONDS=-1"),
                   "JWKS_STALE_MAX_SECONDS=-1 is not valid: expected an integer from 0 to 604800");
    /* and in claims mode, where they are unused too */
    expect_refusal("serve", PWT_LIST("PUBSUB_AUTH=claims", "PUBSUB_AUDIENCE=https://x.example/push", "JWKS_STALE_MAX_SECONDS=1h"),
                   "JWKS_STALE_MAX_SECONDS=1h is not valid: expected an integer from 0 to 604800");
    expect_refusal("serve", PWT_LIST("OIDC_ISSUERS= , "),
                   "OIDC_ISSUERS= ,  is not valid: expected comma-separated issuers (e.g. https://accounts.google.com)");
}

static void claims_mode_without_service_account_still_starts(void **state)
{
    (void)state;
    /* The account is required in verify mode only (claims: Cloud Run IAM decides who may invoke). The
       worker serves, so it is still running when the wait ends. */
    run_t r;
    run_worker("serve", PWT_LIST("PUBSUB_AUTH=claims", "PUBSUB_AUDIENCE=https://x.example/push"),
               getenv("PW_REAL_WORKER") != NULL ? 10000 : 3000, &r); /* valgrind starts slowly */
    if (r.code != -1 || strstr(r.out, "listening on") == NULL) {
        fprintf(stderr, "expected a serving worker, got exit %d:\n%s\n", r.code, r.out);
        fail();
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(verify_mode_without_service_account_refuses_to_start),
        cmocka_unit_test(service_account_that_is_not_an_email_refuses_to_start),
        cmocka_unit_test(malformed_database_url_refuses_to_start_without_printing_it),
        cmocka_unit_test(bad_jwks_settings_refuse_to_start_even_when_unused),
        cmocka_unit_test(claims_mode_without_service_account_still_starts),
    };
    return pwt_db_suite_run("config", tests);
}
