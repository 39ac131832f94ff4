/* Http's handlers and its stop: each path answers only itself as sent; /metrics sums every loop's slot and the executor's; an idle worker stops at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/integration/harness.h"

#define SUB "projects/acme-prod/subscriptions/whatsapp-events-push"
#define PUBLISH_TIME "2024-03-06T10:00:00.250Z"
#define STORED "pushworker_pushes_total{outcome=\"stored\"}"
#define BATCHES "pushworker_db_batch_pushes_count"

static pwt_worker_t worker;

static char *status_push(const char *message_id)
{
    return pwt_wrap_fixture("meta/status_sent.json", message_id, SUB, PUBLISH_TIME);
}

/*
 * h2o picks a handler by prefix of the normalized path; the handlers answer only their exact
 * path as sent (up to '?'). Nothing is written for a push sent to a path that is not "/" or "/push".
 */
static void each_path_answers_only_itself(void **state)
{
    (void)state;
    char *body = status_push("5101");
    size_t len = strlen(body);
    pwt_assert_status(pwt_post(&worker, "/push/", body, len, NULL, NULL), 404);
    pwt_assert_status(pwt_post(&worker, "/push/x", body, len, NULL, NULL), 404);
    pwt_assert_status(pwt_post(&worker, "/pushx", body, len, NULL, NULL), 404);
    pwt_assert_status(pwt_post(&worker, "/%70ush", body, len, NULL, NULL), 404);
    pwt_assert_status(pwt_post(&worker, "//", body, len, NULL, NULL), 404);
    pwt_assert_status(pwt_get(&worker, "/metrics/", NULL), 404);
    pwt_assert_status(pwt_get(&worker, "/readyz/x", NULL), 404);
    pwt_assert_status(pwt_get(&worker, "/livezz", NULL), 404);
    pwt_assert_status(pwt_get(&worker, "/healthz/", NULL), 404);
    pwt_assert_rows("SELECT count(*) FROM pubsub_receipts", "0");

    pwt_response_t r;
    pwt_assert_status(pwt_get(&worker, "/livez?probe=1", &r), 200);
    assert_string_equal(r.body, "ok\n");
    pwt_response_free(&r);
    pwt_assert_status(pwt_get(&worker, "/readyz?x", NULL), 200);
    pwt_assert_status(pwt_request(&worker, "DELETE", "/readyz", NULL, 0, NULL, &r), 405);
    char *allow = pwt_response_header(&r, "Allow");
    assert_non_null(allow);
    assert_string_equal(allow, "GET, HEAD");
    free(allow);
    pwt_response_free(&r);
    pwt_assert_status(pwt_get(&worker, "/push", &r), 405);
    allow = pwt_response_header(&r, "Allow");
    assert_non_null(allow);
    assert_string_equal(allow, "POST");
    free(allow);
    pwt_response_free(&r);

    pwt_assert_status(pwt_post(&worker, "/push?via=test", body, len, NULL, NULL), 204);
    free(body);
    body = status_push("5102");
    pwt_assert_status(pwt_post(&worker, "/", body, strlen(body), NULL, NULL), 204);
    free(body);
    pwt_assert_rows("SELECT message_id FROM pubsub_receipts ORDER BY message_id", "5101\n5102");
}

/* Pushes answered by every loop, and the executor's groups, are in one /metrics (the registry's slots). */
static void metrics_sum_every_loop_and_the_executor(void **state)
{
    (void)state;
    long long stored0 = pwt_metric(&worker, STORED), batches0 = pwt_metric(&worker, BATCHES);
    assert_true(stored0 >= 0 && batches0 >= 0);
    /* A connection per push (curl's default here): the kernel spreads them over the loops. */
    for (int i = 0; i < 16; i++) {
        char id[16];
        snprintf(id, sizeof id, "52%02d", i);
        char *body = status_push(id);
        pwt_assert_status(pwt_post(&worker, "/", body, strlen(body), PWT_LIST("Connection: close"), NULL), 204);
        free(body);
    }
    assert_int_equal(pwt_metric(&worker, STORED), stored0 + 16);
    long long batches = pwt_metric(&worker, BATCHES);
    assert_true(batches > batches0 && batches <= batches0 + 16);
    assert_int_equal(pwt_metric(&worker, "pushworker_in_flight_pushes"), 0);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* An open keep-alive connection to w, after one answered request on it (-1 on failure). */
static int idle_connection(const pwt_worker_t *w)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)w->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        return -1;
    static const char req[] = "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n";
    if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1))
        return -1;
    char buf[512];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    return strncmp(buf, "HTTP/1.1 200", 12) == 0 ? fd : -1;
}

/*
 * The stop waits on events, not on ticks: an idle worker with idle keep-alive connections on
 * several loops exits 0 well within the drain (PW_HTTP_DRAIN_MS) and close (PW_HTTP_CLOSE_MS)
 * times, and says so; the connections are closed by the worker.
 */
static void an_idle_worker_stops_at_once(void **state)
{
    (void)state;
    for (int round = 0; round < 3; round++) {
        pwt_worker_t w;
        if (pwt_worker_start(&w, PWT_LIST("WORKER_THREADS=4", "LOG_LEVEL=info")) != 0)
            fail_msg("worker did not start");
        int fds[8];
        for (int i = 0; i < 8; i++) {
            fds[i] = idle_connection(&w);
            assert_true(fds[i] >= 0);
        }
        double t0 = now_ms();
        int rc = pwt_worker_stop(&w);
        double ms = now_ms() - t0;
        char *log = pwt_worker_log(&w);
        if (rc != 0 || ms > 400 || strstr(log, "\"stopped\"") == NULL)
            pwt_fail(__FILE__, __LINE__, "round %d: exit %d after %.0f ms; log:\n%s", round, rc, ms, log);
        free(log);
        for (int i = 0; i < 8; i++) {
            char c;
            assert_int_equal(read(fds[i], &c, 1), 0); /* closed by the worker */
            close(fds[i]);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(each_path_answers_only_itself, pwt_suite_fresh, pwt_suite_alive),
        cmocka_unit_test_setup_teardown(metrics_sum_every_loop_and_the_executor, pwt_suite_fresh, pwt_suite_alive),
        cmocka_unit_test(an_idle_worker_stops_at_once),
    };
    return pwt_suite_run("routes", &worker, PWT_LIST("WORKER_THREADS=4"), tests);
}
