/* Unit tests for worker/jwks.c against an in-process HTTP server: first fetch, coalesced refreshes, failures keep keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "worker/jwks.h"
#include "worker/log.h"

#define NOW 1700000000 /* the clock of the fixture tokens (tests/fixtures/jwt/generate) */
#define MIN_REFRESH_MS 1500

/* A one-connection-at-a-time HTTP server answering every request with the current mode. */
static struct {
    int fd;
    int port;
    pthread_t thread;
    atomic_int stop;
    atomic_int requests;
    atomic_int status; /* 200, 500, or 0 for an oversized 200 body */
    char *jwks;
    size_t jwks_len;
} S;

static char *read_fixture(const char *name, size_t *len)
{
    char path[512];
    const char *base = getenv("PW_FIXTURES");
    FILE *f;
    char *buf;
    long n;
    snprintf(path, sizeof(path), "%s/jwt/%s", base != NULL ? base : "tests/fixtures", name);
    f = fopen(path, "rb");
    if (f == NULL) {
        print_error("cannot open fixture %s\n", path);
        fail();
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    while (n > 0 && buf[n - 1] == '\n')
        n--;
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void *server_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&S.stop)) {
        struct pollfd pfd = {.fd = S.fd, .events = POLLIN};
        char req[4096], head[256];
        size_t got = 0;
        int c, status;
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        if ((c = accept(S.fd, NULL, NULL)) < 0)
            continue;
        while (got < sizeof(req) - 1 && memmem(req, got, "\r\n\r\n", 4) == NULL) {
            ssize_t r = read(c, req + got, sizeof(req) - 1 - got);
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        atomic_fetch_add(&S.requests, 1);
        status = atomic_load(&S.status);
        if (status == 200) {
            int n = snprintf(head, sizeof(head),
                             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                             "Cache-Control: public, max-age=3600, must-revalidate\r\nAge: 100\r\nConnection: close\r\n\r\n",
                             S.jwks_len);
            write_all(c, head, (size_t)n);
            write_all(c, S.jwks, S.jwks_len);
        } else if (status == 0) {
            size_t big = 2 * 1024 * 1024;
            char *body = malloc(big);
            memset(body, ' ', big);
            int n = snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            write_all(c, head, (size_t)n);
            write_all(c, body, big);
            free(body);
        } else {
            const char *r = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\nfail";
            write_all(c, r, strlen(r));
        }
        close(c);
    }
    return NULL;
}

static int setup(void **state)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    (void)state;
    S.jwks = read_fixture("jwks.json", &S.jwks_len);
    S.fd = socket(AF_INET, SOCK_STREAM, 0);
    if (S.fd < 0 || bind(S.fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(S.fd, 16) != 0 ||
        getsockname(S.fd, (struct sockaddr *)&a, &alen) != 0)
        return -1;
    S.port = ntohs(a.sin_port);
    atomic_store(&S.status, 200);
    return pthread_create(&S.thread, NULL, server_main, NULL);
}

static int teardown(void **state)
{
    (void)state;
    atomic_store(&S.stop, 1);
    pthread_join(S.thread, NULL);
    close(S.fd);
    free(S.jwks);
    return 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits up to timeout_ms for the fetch counter to reach n. */
static int wait_fetches(uint64_t n, int timeout_ms)
{
    pw_keys_stats_t st;
    for (int t = 0; t < timeout_ms; t += 10) {
        pw_keys_stats(&st);
        if (st.fetches >= n)
            return 1;
        sleep_ms(10);
    }
    return 0;
}

static void verify_fixture_token(const pw_jwks_snapshot_t *snap)
{
    size_t len;
    char *tok = read_fixture("valid.jwt", &len), err[160] = "";
    pw_jwt_policy_t pol = {.audience = "http://localhost:8080/",
                           .email = "push@local.iam.gserviceaccount.com",
                           .skew_s = 60,
                           .now = NOW,
                           .mode = PW_JWT_VERIFY_SIGNATURE};
    int rc = pw_jwt_verify(tok, len, &snap->keys, &pol, NULL, err, sizeof(err));
    if (rc != 0)
        print_error("valid.jwt: %s\n", err);
    assert_int_equal(rc, 0);
    free(tok);
}

static void test_fetch_refresh_failure_stop(void **state)
{
    char url[64], err[160] = "";
    pw_keys_stats_t st;
    pw_jwks_snapshot_t *a, *b;
    (void)state;

    assert_int_equal(pw_keys_start("ftp://example.com/", MIN_REFRESH_MS, 3600, err, sizeof(err)), PW_EINVAL);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/oauth2/v3/certs", S.port);
    double t_start = now_ms();
    assert_int_equal(pw_keys_start(url, MIN_REFRESH_MS, 3600, err, sizeof(err)), 0);
    assert_int_equal(pw_keys_start(url, MIN_REFRESH_MS, 3600, err, sizeof(err)), PW_EINVAL); /* once */

    /* The first fetch happens at once. */
    assert_true(wait_fetches(1, 5000));
    for (int t = 0; t < 500 && !pw_keys_ready(); t += 10)
        sleep_ms(10);
    assert_true(pw_keys_ready());

    /* A storm of refresh requests is one fetch, and not before MIN_REFRESH_MS after the last one
       (which started after t_start; the early check is skipped when the first fetch was slow). */
    pw_jwks_snapshot_t *cur = pw_keys_acquire();
    for (int i = 0; i < 1000; i++)
        pw_keys_request_refresh(cur);
    pw_keys_release(cur);
    if (now_ms() < t_start + MIN_REFRESH_MS - 500) {
        sleep_ms((int)(t_start + MIN_REFRESH_MS - 500 - now_ms()));
        pw_keys_stats(&st);
        assert_int_equal(st.fetches, 1);
    }
    assert_true(wait_fetches(2, 3 * MIN_REFRESH_MS));
    sleep_ms(MIN_REFRESH_MS * 2);
    pw_keys_stats(&st);
    assert_int_equal(st.fetches, 2);
    assert_int_equal(atomic_load(&S.requests), 2);
    assert_int_equal(st.refresh_requests, 1000);

    a = pw_keys_acquire();
    assert_non_null(a);
    assert_int_equal(a->keys.count, 1);
    assert_true(a->fetched_unix > 0);
    verify_fixture_token(a);
    pw_keys_stats(&st);
    assert_int_equal(st.fetches, 2);
    assert_int_equal(st.failures, 0);
    assert_int_equal(st.keys, 1);

    /* A failed refresh keeps the keys; the held snapshot stays valid across swaps. */
    atomic_store(&S.status, 500);
    pw_keys_request_refresh(a);
    assert_true(wait_fetches(3, 3 * MIN_REFRESH_MS));
    /* The fetch is counted when it starts, the failure when it ends: poll, a loaded machine is slow. */
    for (int t = 0; t < 5000 && (pw_keys_stats(&st), st.failures < 1); t += 10)
        sleep_ms(10);
    assert_true(st.failures >= 1);
    assert_true(pw_keys_ready());
    b = pw_keys_acquire();
    assert_non_null(b);
    verify_fixture_token(b);
    pw_keys_release(b);

    /* An oversized body is a failure too. */
    atomic_store(&S.status, 0);
    pw_keys_stats(&st);
    uint64_t f0 = st.failures, n0 = st.fetches;
    assert_true(wait_fetches(n0 + 1, 5000)); /* the backoff retry */
    for (int t = 0; t < 5000 && (pw_keys_stats(&st), st.failures <= f0); t += 10)
        sleep_ms(10);
    assert_true(st.failures > f0);

    /* Back to good: a new snapshot replaces the old one, which the holder still uses. */
    atomic_store(&S.status, 200);
    pw_keys_stats(&st);
    assert_true(wait_fetches(st.fetches + 1, 10000));
    for (int t = 0; t < 1000; t += 10) {
        b = pw_keys_acquire();
        if (b != a)
            break;
        pw_keys_release(b);
        b = NULL;
        sleep_ms(10);
    }
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    verify_fixture_token(a);
    verify_fixture_token(b);
    pw_keys_release(b);

    pw_keys_stop();
    assert_false(pw_keys_ready());
    assert_null(pw_keys_acquire());
    verify_fixture_token(a); /* still ours */
    pw_keys_release(a);
    pw_keys_stop(); /* idempotent */
    pw_keys_release(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fetch_refresh_failure_stop),
    };
    int rc;
    pw_log_set_level(PW_LOG_WARNING);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
