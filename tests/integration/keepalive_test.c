/*
 * Keep-alive connections across pushes (worker/http.c, "Parking a connection"): a connection whose
 * push is with the database stays registered with epoll, so a stream of pushes on one connection
 * costs no epoll_ctl per push (counted with strace attached to the worker), and whatever a client
 * does meanwhile (pipelines the next request, half-closes, goes away) gets what h2o gave it before:
 * its answers, in order, and every push committed. Raw sockets, so the bytes on the wire are ours.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "tests/integration/harness.h"

extern char **environ;

#define SUB "projects/acme-prod/subscriptions/whatsapp-events-push"
#define PUBLISH_TIME "2024-03-06T10:00:00.250Z"
#define STREAM 50 /* pushes sent one after the other on one connection while strace counts */

static pwt_worker_t worker;

/* A connection to the worker and what has been read from it but not yet taken as an answer. */
typedef struct {
    int fd;
    char buf[8192];
    size_t len;
} conn_t;

static void conn_open(conn_t *c)
{
    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)worker.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof a), 0);
}

static void conn_close(conn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        assert_true(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

/* Sends the push of fixture meta/status_read.json under message_id, as Pub/Sub does (HTTP/1.1, keep-alive). */
static void send_push(conn_t *c, const char *message_id)
{
    char *body = pwt_wrap_fixture("meta/status_read.json", message_id, SUB, PUBLISH_TIME);
    size_t len = strlen(body);
    char head[256];
    int n = snprintf(head, sizeof head,
                     "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n", len);
    write_all(c->fd, head, (size_t)n);
    write_all(c->fd, body, len);
    free(body);
}

/* Reads more into c->buf within timeout_ms: the bytes read, 0 at end-of-file, -1 on timeout. */
static ssize_t read_some(conn_t *c, int timeout_ms)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int r = poll(&p, 1, timeout_ms);
    if (r <= 0)
        return -1;
    assert_true(c->len < sizeof c->buf);
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n > 0)
        c->len += (size_t)n;
    return n < 0 ? -1 : n;
}

/* The status of the next whole answer on c (its body read past), within 20 s; -1 when none came. */
static long read_answer(conn_t *c)
{
    for (;;) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (end != NULL) {
            size_t head_len = (size_t)(end - c->buf) + 4;
            size_t body_len = 0;
            char *cl = memmem(c->buf, head_len, "\r\ncontent-length: ", 18);
            if (cl != NULL)
                body_len = strtoul(cl + 18, NULL, 10);
            if (c->len >= head_len + body_len) {
                long status = strncmp(c->buf, "HTTP/1.1 ", 9) == 0 ? strtol(c->buf + 9, NULL, 10) : -1;
                memmove(c->buf, c->buf + head_len + body_len, c->len - head_len - body_len);
                c->len -= head_len + body_len;
                return status;
            }
        }
        if (read_some(c, 20000) <= 0)
            return -1;
    }
}

/* Nothing has come on c for ms milliseconds (and it is still open). */
static void assert_quiet(conn_t *c, int ms)
{
    size_t before = c->len;
    assert_int_equal(read_some(c, ms), -1);
    assert_int_equal(c->len, before);
}

static int fresh(void **state)
{
    (void)state;
    pwt_truncate_all();
    return pwt_worker_alive(&worker) ? 0 : -1;
}

/* ---- strace ------------------------------------------------------------------------------------ */

/* 1 when every thread of pid is traced. */
static int all_threads_traced(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return 0;
    int all = 1, seen = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char status[320];
        snprintf(status, sizeof status, "/proc/%d/task/%s/status", (int)pid, e->d_name);
        FILE *f = fopen(status, "r");
        if (f == NULL)
            continue;
        char line[256];
        while (fgets(line, sizeof line, f) != NULL)
            if (strncmp(line, "TracerPid:", 10) == 0) {
                seen++;
                if (strtol(line + 10, NULL, 10) == 0)
                    all = 0;
            }
        fclose(f);
    }
    closedir(d);
    return seen > 0 && all;
}

/* Starts strace on every thread of the worker, writing its epoll_ctl calls to out; waits until it is attached. */
static pid_t strace_start(const char *out)
{
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)worker.pid);
    char *const argv[] = {"strace", "-f", "-qq", "-e", "trace=epoll_ctl", "-o", (char *)out, "-p", pid, NULL};
    pid_t st;
    int rc = posix_spawnp(&st, "strace", NULL, NULL, argv, environ);
    if (rc != 0)
        pwt_fail(__FILE__, __LINE__, "strace could not be started (%s): install Debian's strace (scripts/setup does)",
                 strerror(rc));
    for (int i = 0; i < 200 && !all_threads_traced(worker.pid); i++)
        usleep(50 * 1000);
    if (!all_threads_traced(worker.pid)) {
        kill(st, SIGKILL);
        waitpid(st, NULL, 0);
        pwt_fail(__FILE__, __LINE__, "strace did not attach to every thread of the worker within 10 s");
    }
    return st;
}

/* Detaches strace (SIGINT) and returns how many epoll_ctl calls it saw. */
static int strace_stop(pid_t st, const char *out)
{
    kill(st, SIGINT);
    int status;
    assert_int_equal(waitpid(st, &status, 0), st);
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    int calls = 0;
    char line[512];
    while (fgets(line, sizeof line, f) != NULL)
        if (strstr(line, "epoll_ctl(") != NULL)
            calls++;
    fclose(f);
    return calls;
}

/* ---- tests ------------------------------------------------------------------------------------- */

/*
 * STREAM pushes, each sent once the one before is answered, on one connection: the worker's
 * epoll registrations do not change per push. Before the connection was parked, h2o took it off
 * epoll when each request was whole and put it back after the answer: two epoll_ctl per push
 * (100 here).
 */
static void a_stream_of_pushes_on_one_connection_costs_no_epoll_ctl_per_push(void **state)
{
    (void)state;
    conn_t c;
    conn_open(&c);
    send_push(&c, "5000"); /* the connection is accepted and registered before strace looks */
    pwt_assert_status(read_answer(&c), 204);

    char out[] = "/tmp/pwt-keepalive-strace.XXXXXX";
    int tmp = mkstemp(out);
    assert_true(tmp >= 0);
    close(tmp);
    pid_t st = strace_start(out);
    for (int i = 1; i <= STREAM; i++) {
        char id[16];
        snprintf(id, sizeof id, "%d", 5000 + i);
        send_push(&c, id);
        pwt_assert_status(read_answer(&c), 204);
    }
    int calls = strace_stop(st, out);
    unlink(out);
    conn_close(&c);
    print_message("epoll_ctl calls during %d pushes on one connection: %d\n", STREAM, calls);
    if (calls >= STREAM / 5)
        pwt_fail(__FILE__, __LINE__, "%d epoll_ctl calls for %d pushes on one kept-alive connection (expected a few at most)",
                 calls, STREAM);
    char expected[16];
    snprintf(expected, sizeof expected, "%d", STREAM + 1);
    pwt_assert_rows("SELECT count(*) FROM pubsub_receipts WHERE outcome = 'stored'", expected);
    pwt_assert_rows("SELECT count(*) FROM status_events", "1");
}

/*
 * A request pipelined behind a push whose transaction waits (on a lock): both are answered 204 in
 * order once the lock goes, both committed, and the connection takes another push after them.
 */
static void a_request_pipelined_behind_a_waiting_push_is_answered_after_it(void **state)
{
    (void)state;
    conn_t c;
    conn_open(&c);
    pwt_exec("BEGIN");
    pwt_exec("LOCK TABLE pubsub_receipts IN ACCESS EXCLUSIVE MODE");
    send_push(&c, "6001");
    pwt_wait_metric(&worker, "pushworker_in_flight_pushes", 1);
    send_push(&c, "6002"); /* arrives while the first waits: the parked connection wakes */
    assert_quiet(&c, 300);
    pwt_exec("COMMIT");
    pwt_assert_status(read_answer(&c), 204);
    pwt_assert_status(read_answer(&c), 204);
    send_push(&c, "6003");
    pwt_assert_status(read_answer(&c), 204);
    conn_close(&c);
    pwt_assert_rows("SELECT message_id, outcome FROM pubsub_receipts ORDER BY message_id",
                    "6001|stored\n6002|stored\n6003|stored");
    pwt_assert_rows("SELECT current_status FROM message_logs", "read");
}

/*
 * A client that half-closes (shuts down its sending side) behind a waiting push still gets the
 * whole answer, then end-of-file: h2o closes the connection when it reads again.
 */
static void a_client_that_half_closes_behind_a_waiting_push_gets_its_answer(void **state)
{
    (void)state;
    conn_t c;
    conn_open(&c);
    pwt_exec("BEGIN");
    pwt_exec("LOCK TABLE pubsub_receipts IN ACCESS EXCLUSIVE MODE");
    send_push(&c, "6101");
    pwt_wait_metric(&worker, "pushworker_in_flight_pushes", 1);
    assert_int_equal(shutdown(c.fd, SHUT_WR), 0);
    assert_quiet(&c, 300);
    pwt_exec("COMMIT");
    pwt_assert_status(read_answer(&c), 204);
    assert_int_equal(read_some(&c, 20000), 0); /* end-of-file, and nothing after the answer */
    assert_int_equal(c.len, 0);
    conn_close(&c);
    pwt_assert_rows("SELECT message_id, outcome FROM pubsub_receipts", "6101|stored");
}

/*
 * A client that goes away behind a waiting push: the push is committed all the same, nothing is
 * left in flight, and the next connection is served.
 */
static void a_client_gone_behind_a_waiting_push_loses_nothing(void **state)
{
    (void)state;
    conn_t c;
    conn_open(&c);
    pwt_exec("BEGIN");
    pwt_exec("LOCK TABLE pubsub_receipts IN ACCESS EXCLUSIVE MODE");
    send_push(&c, "6201");
    pwt_wait_metric(&worker, "pushworker_in_flight_pushes", 1);
    conn_close(&c);
    usleep(300 * 1000);
    pwt_exec("COMMIT");
    pwt_wait_metric(&worker, "pushworker_in_flight_pushes", 0);
    pwt_assert_rows("SELECT message_id, outcome FROM pubsub_receipts", "6201|stored");
    conn_open(&c);
    send_push(&c, "6202");
    pwt_assert_status(read_answer(&c), 204);
    conn_close(&c);
    pwt_assert_rows("SELECT message_id, outcome FROM pubsub_receipts ORDER BY message_id", "6201|stored\n6202|stored");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_stream_of_pushes_on_one_connection_costs_no_epoll_ctl_per_push, fresh, pwt_suite_alive),
        cmocka_unit_test_setup_teardown(a_request_pipelined_behind_a_waiting_push_is_answered_after_it, fresh, pwt_suite_alive),
        cmocka_unit_test_setup_teardown(a_client_that_half_closes_behind_a_waiting_push_gets_its_answer, fresh, pwt_suite_alive),
        cmocka_unit_test_setup_teardown(a_client_gone_behind_a_waiting_push_loses_nothing, fresh, pwt_suite_alive),
    };
    return pwt_suite_run("keepalive", &worker, PWT_LIST("WORKER_THREADS=1"), tests);
}
