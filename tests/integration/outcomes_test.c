/* What /metrics and the log say about pushes: one outcome per push, events counted once from what committed, valid JSON log lines, /livez, /metrics while stopping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <libpq-fe.h>

#include "tests/integration/harness.h"
#include "tests/integration/httpc.h"

#define SUB "projects/acme-prod/subscriptions/whatsapp-events-push"
#define PUBLISH_TIME "2024-03-06T10:00:00.250Z"
#define READ_SAMPLE "pushworker_statuses_total{status=\"read\"}"
#define SENT_SAMPLE "pushworker_statuses_total{status=\"sent\"}"
#define DELIVERED_SAMPLE "pushworker_statuses_total{status=\"delivered\"}"
#define OUTCOME(o) "pushworker_pushes_total{outcome=\"" o "\"}"

static pwt_worker_t worker;

static long long metric(const char *sample)
{
    return pwt_metric(&worker, sample);
}

static char *wrap_fixture(const char *rel, const char *message_id)
{
    return pwt_wrap_fixture(rel, message_id, SUB, PUBLISH_TIME);
}

static long push_fixture(const char *rel, const char *message_id)
{
    return pwt_push_fixture(&worker, rel, message_id, SUB, PUBLISH_TIME);
}

/* Waits up to 20 s for sample to equal value. */
#define wait_metric(sample, value) pwt_wait_metric(&worker, (sample), (value))

#define WORKER_ENV PWT_LIST("WORKER_THREADS=2", "PUSH_DEADLINE_MS=3000")

/* After each test: the test database takes connections again (a test that stopped them may have failed half-way). */
static int connections_allowed(void **state)
{
    (void)state;
    char *dbname = pwt_rows("SELECT current_database()");
    char sql[512];
    snprintf(sql, sizeof sql, "ALTER DATABASE \"%s\" WITH ALLOW_CONNECTIONS true", dbname);
    free(dbname);
    pwt_admin_exec(sql);
    return 0;
}

static int fresh_tables(void **state)
{
    (void)state;
    if (pwt_worker_ensure(&worker, WORKER_ENV) != 0)
        return -1;
    for (int i = 0; i < 300 && pwt_get(&worker, "/readyz", NULL) != 200; i++) /* back from a test that took its database away */
        usleep(100 * 1000);
    pwt_truncate_all();
    return 0;
}

/*
 * A push answered 503 (its database gone) moves no event counter; sent again once the database is
 * back it is counted once; a further redelivery is a duplicate and counts nothing.
 */
static void a_503_push_and_a_duplicate_move_no_event_counter(void **state)
{
    (void)state;
    long long read0 = metric(READ_SAMPLE), dup0 = metric(OUTCOME("duplicate")), stored0 = metric(OUTCOME("stored"));
    long long unavailable0 = metric(OUTCOME("unavailable"));
    assert_true(read0 >= 0);

    char *dbname = pwt_rows("SELECT current_database()");
    char sql[512];
    snprintf(sql, sizeof sql, "ALTER DATABASE \"%s\" WITH ALLOW_CONNECTIONS false", dbname);
    pwt_admin_exec(sql);
    pwt_exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()");
    pwt_assert_status(push_fixture("meta/status_read.json", "3101"), 503);
    assert_int_equal(metric(OUTCOME("unavailable")), unavailable0 + 1);
    assert_int_equal(metric(READ_SAMPLE), read0);
    assert_int_equal(metric(OUTCOME("stored")), stored0);

    free(dbname);
    connections_allowed(NULL);
    /* Redelivered until taken, as Pub/Sub does (through a pooler the way back takes a while):
       stored once. Had an attempt been sent before the database went, its commit would be the
       one counted, and the last attempt a duplicate: either way the events count once. */
    long status = 0;
    for (int i = 0; i < 60 && status != 204; i++) {
        status = push_fixture("meta/status_read.json", "3101");
        if (status != 204)
            usleep(500 * 1000);
    }
    pwt_assert_status(status, 204);
    pwt_assert_rows("SELECT message_id, outcome FROM pubsub_receipts", "3101|stored");
    assert_int_equal(metric(READ_SAMPLE), read0 + 1);
    assert_int_equal(metric(OUTCOME("stored")) + metric(OUTCOME("duplicate")), stored0 + dup0 + 1);

    long long dup1 = metric(OUTCOME("duplicate"));
    pwt_assert_status(push_fixture("meta/status_read.json", "3101"), 204);
    assert_int_equal(metric(OUTCOME("duplicate")), dup1 + 1);
    assert_int_equal(metric(READ_SAMPLE), read0 + 1);
    pwt_assert_rows("SELECT count(*) FROM status_events", "1");
}

/* Two copies of one message in one group (the database busy while both arrive): one push stored, one duplicate, its events once. */
static void two_copies_in_one_group_count_once(void **state)
{
    (void)state;
    long long read0 = metric(READ_SAMPLE), stored0 = metric(OUTCOME("stored")), dup0 = metric(OUTCOME("duplicate"));
    long long ignored0 = metric(OUTCOME("ignored"));

    pwt_exec("BEGIN");
    pwt_exec("LOCK TABLE pubsub_receipts IN ACCESS EXCLUSIVE MODE");
    pwt_bg_post_t first, copy1, copy2;
    pwt_bg_post_start(&first, &worker, wrap_fixture("meta/template_status_update.json", "3200")); /* holds the connection */
    wait_metric("pushworker_in_flight_pushes", 1);
    pwt_bg_post_start(&copy1, &worker, wrap_fixture("meta/status_read.json", "3201"));
    pwt_bg_post_start(&copy2, &worker, wrap_fixture("meta/status_read.json", "3201"));
    wait_metric("pushworker_in_flight_pushes", 3);
    pwt_exec("COMMIT");
    pwt_assert_status(pwt_bg_post_join(&first), 204);
    pwt_assert_status(pwt_bg_post_join(&copy1), 204);
    pwt_assert_status(pwt_bg_post_join(&copy2), 204);

    pwt_assert_rows("SELECT message_id, outcome FROM pubsub_receipts ORDER BY 1", "3200|ignored\n3201|stored");
    assert_int_equal(metric(OUTCOME("ignored")), ignored0 + 1);
    assert_int_equal(metric(OUTCOME("stored")), stored0 + 1);
    assert_int_equal(metric(OUTCOME("duplicate")), dup0 + 1);
    assert_int_equal(metric(READ_SAMPLE), read0 + 1);
}

/*
 * A push with one rejected item: its good items are stored and the whole push kept in
 * dead_letters. One outcome, "stored", in the metrics, the log line and the receipt; the dead
 * letter is counted by pushworker_dead_letters_total.
 */
static void a_push_with_a_rejected_item_has_one_outcome_everywhere(void **state)
{
    (void)state;
    long long stored0 = metric(OUTCOME("stored")), dl0 = metric(OUTCOME("dead_letter"));
    long long kept0 = metric("pushworker_dead_letters_total"), sent0 = metric(SENT_SAMPLE), delivered0 = metric(DELIVERED_SAMPLE);
    pwt_assert_status(push_fixture("meta/statuses_one_bad_timestamp.json", "3301"), 204);
    pwt_assert_rows("SELECT message_id, outcome FROM pubsub_receipts", "3301|stored");
    pwt_assert_rows("SELECT message_id, split_part(reason, ': ', 1) FROM dead_letters", "3301|rejected 1 item(s)");
    assert_int_equal(metric(OUTCOME("stored")), stored0 + 1);
    assert_int_equal(metric(OUTCOME("dead_letter")), dl0);
    assert_int_equal(metric("pushworker_dead_letters_total"), kept0 + 1);
    assert_int_equal(metric(SENT_SAMPLE), sent0 + 1);
    assert_int_equal(metric(DELIVERED_SAMPLE), delivered0 + 1);
    char *log = pwt_worker_log(&worker);
    const char *line = strstr(log, "\"messageId\":\"3301\"");
    assert_non_null(line);
    while (line > log && line[-1] != '\n')
        line--;
    const char *end = strchr(line, '\n');
    char *copy = strndup(line, end != NULL ? (size_t)(end - line) : strlen(line));
    if (strstr(copy, "\"outcome\":\"stored\"") == NULL)
        pwt_fail(__FILE__, __LINE__, "the log line says another outcome: %s", copy);
    free(copy);
    free(log);

    /* Sent again: a duplicate; no second dead letter counted. */
    pwt_assert_status(push_fixture("meta/statuses_one_bad_timestamp.json", "3301"), 204);
    assert_int_equal(metric("pushworker_dead_letters_total"), kept0 + 1);
    assert_int_equal(metric(SENT_SAMPLE), sent0 + 1);
}

/* Runs python3's strict JSON parser over every line of the worker's log from byte offset on; fails naming the first bad line. */
static void assert_log_is_json_lines(const pwt_worker_t *w, long offset)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import json, sys\n"
             "f = open(sys.argv[1], \"rb\"); f.seek(int(sys.argv[2]))\n"
             "for n, line in enumerate(f, 1):\n"
             "    try:\n"
             "        assert isinstance(json.loads(line), dict)\n"
             "    except Exception as e:\n"
             "        print(\"line %%d: %%r: %%s\" %% (n, line[:400], e)); sys.exit(1)' '%s' %ld",
             w->log_path, offset);
    FILE *p = popen(cmd, "r");
    char out[2048] = "";
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    if (rc != 0)
        pwt_fail(__FILE__, __LINE__, "a log line is not JSON: %s", out);
}

/* A long user agent and path of multi-byte characters, quotes and control bytes: every log line stays valid JSON (and UTF-8). */
static void log_lines_with_long_user_agent_and_path_are_json(void **state)
{
    (void)state;
    char ua[600] = "User-Agent: ";
    while (strlen(ua) < sizeof ua - 8)
        strcat(ua, "\xc3\xa9\"\\\t\xe2\x82\xac");
    char path[700] = "/?q=";
    while (strlen(path) < sizeof path - 8)
        strcat(path, "\xc3\xa9%22\xe2\x82\xac");
    char *before = pwt_worker_log(&worker); /* (earlier tests' lines include libpq's own, which are not ours) */
    long offset = (long)strlen(before);
    free(before);
    char *body = wrap_fixture("meta/status_read.json", "3401");
    for (int shift = 0; shift < 3; shift++) { /* each byte of a character at the cut */
        char ua_shifted[620], path_shifted[720];
        snprintf(ua_shifted, sizeof ua_shifted, "User-Agent: %.*s%s", shift, "aaa", ua + strlen("User-Agent: "));
        snprintf(path_shifted, sizeof path_shifted, "/?%.*s%s", shift, "aaa", path + 2);
        pwt_assert_status(pwt_post(&worker, path_shifted, body, strlen(body), PWT_LIST(ua_shifted), NULL), 204);
    }
    free(body);
    char *after = pwt_worker_log(&worker);
    assert_true(strstr(after + offset, "\"messageId\":\"3401\"") != NULL); /* the lines were written */
    free(after);
    assert_log_is_json_lines(&worker, offset);
}

static void livez_answers_200_and_healthz_still_does(void **state)
{
    (void)state;
    pwt_response_t r;
    pwt_assert_status(pwt_get(&worker, "/livez", &r), 200);
    assert_string_equal(r.body, "ok\n");
    pwt_response_free(&r);
    pwt_assert_status(pwt_get(&worker, "/healthz", NULL), 200);
    pwt_assert_status(pwt_post(&worker, "/livez", "x", 1, NULL, NULL), 405);
}

/* GET /metrics asked again and again while the worker stops: it answers or refuses, and the process exits cleanly. */
typedef struct {
    const pwt_worker_t *w;
    volatile int stop;
    long answered;
} scraper_t;

/* Asks /metrics again and again on one keep-alive connection (the listener closes first when the worker stops; open connections are still served while it drains). */
static void *scrape(void *arg)
{
    scraper_t *s = arg;
    char url[128];
    snprintf(url, sizeof url, "%s/metrics", s->w->base_url);
    CURL *c = pwt_http_easy(url, 2000L, NULL);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, pwt_http_discard);
    while (!s->stop) {
        long status = 0;
        if (curl_easy_perform(c) == CURLE_OK && curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status == 200)
            s->answered++;
    }
    curl_easy_cleanup(c);
    return NULL;
}

static void metrics_scraped_while_stopping_exits_cleanly(void **state)
{
    (void)state;
    for (int round = 0; round < 5; round++) {
        pwt_worker_t w;
        if (pwt_worker_start(&w, PWT_LIST("WORKER_THREADS=4", "LOG_LEVEL=info")) != 0)
            fail_msg("worker did not start");
        scraper_t s[4];
        pthread_t tid[4];
        for (int i = 0; i < 4; i++) {
            s[i] = (scraper_t){&w, 0, 0};
            pthread_create(&tid[i], NULL, scrape, &s[i]);
        }
        usleep(300 * 1000);
        int rc = pwt_worker_stop(&w);
        for (int i = 0; i < 4; i++) {
            s[i].stop = 1;
            pthread_join(tid[i], NULL);
        }
        char *log = pwt_worker_log(&w);
        int sanitizer = strstr(log, "AddressSanitizer") != NULL || strstr(log, "runtime error") != NULL;
        if (rc != 0 || sanitizer)
            pwt_fail(__FILE__, __LINE__, "round %d: exit %d%s; log:\n%s", round, rc, sanitizer ? " with a sanitizer report" : "", log);
        free(log);
        assert_true(s[0].answered + s[1].answered + s[2].answered > 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_503_push_and_a_duplicate_move_no_event_counter, fresh_tables, connections_allowed),
        cmocka_unit_test_setup(two_copies_in_one_group_count_once, fresh_tables),
        cmocka_unit_test_setup(a_push_with_a_rejected_item_has_one_outcome_everywhere, fresh_tables),
        cmocka_unit_test_setup(log_lines_with_long_user_agent_and_path_are_json, fresh_tables),
        cmocka_unit_test_setup(livez_answers_200_and_healthz_still_does, fresh_tables),
        cmocka_unit_test_setup(metrics_scraped_while_stopping_exits_cleanly, fresh_tables),
    };
    pwt_suite_init("outcomes", &worker, WORKER_ENV);
    return cmocka_run_group_tests(tests, pwt_suite_setup, pwt_suite_teardown_any_exit);
}
