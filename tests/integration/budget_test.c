/* The in-flight byte budget (INFLIGHT_BYTES_MAX): pushes that would take it over are answered 503 before their body is kept; nothing of them is written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/integration/harness.h"

#define SUB "projects/acme-prod/subscriptions/whatsapp-events-push"
#define PUBLISH_TIME "2024-03-06T10:00:00.250Z"
#define BUDGET 1048576L  /* INFLIGHT_BYTES_MAX of this binary's worker */
#define LARGE 700000     /* a body size: one fits the budget, two do not */

static pwt_worker_t worker;

/* A Pub/Sub push of a webhook with nothing to store, padded to about size bytes ({"x":[{},{},...]}). */
static char *padded_push(size_t size, const char *message_id)
{
    size_t payload_len = size * 3 / 4;
    char *payload = malloc(payload_len + 128);
    size_t n = (size_t)sprintf(payload, "{\"object\":\"whatsapp_business_account\",\"entry\":[],\"x\":[{}");
    while (n + 8 < payload_len)
        n += (size_t)sprintf(payload + n, ",{}");
    n += (size_t)sprintf(payload + n, "]}");
    char *body = pwt_wrap(payload, n, message_id, SUB, PUBLISH_TIME);
    free(payload);
    return body;
}

static long long metric(const char *sample)
{
    return pwt_metric(&worker, sample);
}

/* Waits up to 20 s for pushworker_inflight_bytes to reach at least bytes. */
#define wait_inflight_at_least(bytes) pwt_wait_metric_at_least(&worker, "pushworker_inflight_bytes", (bytes))

/* Waits up to 20 s for every byte of the budget to be given back (a push gives its bytes once freed, just after its answer). */
#define wait_inflight_zero() pwt_wait_metric(&worker, "pushworker_inflight_bytes", 0)

static int fresh_tables(void **state)
{
    (void)state;
    pwt_truncate_all();
    return pwt_worker_alive(&worker) ? 0 : -1;
}

/*
 * While one large push holds most of the budget (its transaction waits on a lock), two more large
 * ones are answered 503 with Retry-After, and a normal push is still taken and answered 204.
 * The refused ones leave no row, the counter says so, and the budget is all given back.
 */
static void large_pushes_over_the_budget_get_503_and_a_normal_push_204(void **state)
{
    (void)state;
    long long refused_before = metric("pushworker_pushes_total{outcome=\"over_budget\"}");
    assert_int_equal(refused_before, 0);
    assert_int_equal(metric("pushworker_inflight_bytes_max"), BUDGET);

    pwt_exec("BEGIN");
    pwt_exec("LOCK TABLE pubsub_receipts IN ACCESS EXCLUSIVE MODE");
    pwt_bg_post_t held, normal;
    char *held_body = padded_push(LARGE, "9001");
    size_t held_len = strlen(held_body);
    pwt_bg_post_start(&held, &worker, held_body);
    wait_inflight_at_least((long long)held_len);

    for (int i = 0; i < 2; i++) {
        char id[8];
        snprintf(id, sizeof id, "900%d", 2 + i);
        char *body = padded_push(LARGE, id);
        pwt_response_t r;
        long status = pwt_post(&worker, "/", body, strlen(body), NULL, &r);
        pwt_assert_status(status, 503);
        char *retry = pwt_response_header(&r, "Retry-After");
        assert_non_null(retry);
        assert_string_equal(retry, "1");
        free(retry);
        pwt_response_free(&r);
        free(body);
    }
    /* The same over chunked transfer: no length up front, so it is refused once read, in the handler. */
    char *chunked = padded_push(LARGE, "9004");
    pwt_assert_status(pwt_post(&worker, "/", chunked, strlen(chunked), PWT_LIST("Transfer-Encoding: chunked"), NULL), 503);
    free(chunked);
    assert_int_equal(metric("pushworker_pushes_total{outcome=\"over_budget\"}"), 3);

    pwt_bg_post_start(&normal, &worker, pwt_wrap_fixture("meta/status_read.json", "9005", SUB, PUBLISH_TIME));
    wait_inflight_at_least((long long)held_len + 1000);
    pwt_exec("COMMIT");

    pwt_assert_status(pwt_bg_post_join(&held), 204);
    pwt_assert_status(pwt_bg_post_join(&normal), 204);
    pwt_assert_rows("SELECT message_id, outcome FROM pubsub_receipts ORDER BY message_id", "9001|ignored\n9005|stored");
    pwt_assert_rows("SELECT count(*) FROM dead_letters", "0");
    pwt_assert_rows("SELECT current_status FROM message_logs", "read");
    assert_int_equal(metric("pushworker_pushes_total{outcome=\"over_budget\"}"), 3);
    wait_inflight_zero();

    /* Refused, not lost: sent again once the budget is free, they are taken (one at a time: each alone in flight). */
    for (int i = 2; i <= 4; i++) {
        char id[8];
        snprintf(id, sizeof id, "900%d", i);
        char *body = padded_push(LARGE, id);
        pwt_assert_status(pwt_post(&worker, "/", body, strlen(body), NULL, NULL), 204);
        free(body);
        wait_inflight_zero();
    }
    pwt_assert_rows("SELECT count(*) FROM pubsub_receipts", "5");
    wait_inflight_zero();

    char *log = pwt_worker_log(&worker);
    assert_non_null(strstr(log, "\"outcome\":\"over_budget\""));
    free(log);
}

/* A push larger than the whole budget (but under MAX_BODY_BYTES) is taken when nothing else is in flight. */
static void a_push_larger_than_the_budget_alone_is_taken(void **state)
{
    (void)state;
    long long refused_before = metric("pushworker_pushes_total{outcome=\"over_budget\"}");
    char *body = padded_push(3 * BUDGET / 2, "9101");
    assert_true(strlen(body) > (size_t)BUDGET);
    pwt_assert_status(pwt_post(&worker, "/", body, strlen(body), NULL, NULL), 204);
    free(body);
    pwt_assert_rows("SELECT message_id, outcome FROM pubsub_receipts", "9101|ignored");
    assert_int_equal(metric("pushworker_pushes_total{outcome=\"over_budget\"}"), refused_before);
    wait_inflight_zero();
}

/* Requests that are no push (a body on another path) give their bytes back too. */
static void bodies_on_other_paths_give_the_budget_back(void **state)
{
    (void)state;
    wait_inflight_zero();
    char *body = padded_push(LARGE, "9201");
    pwt_assert_status(pwt_post(&worker, "/metrics", body, strlen(body), NULL, NULL), 405);
    wait_inflight_zero();
    pwt_assert_status(pwt_post(&worker, "/nowhere", body, strlen(body), NULL, NULL), 404);
    wait_inflight_zero();
    pwt_assert_status(pwt_post(&worker, "/", body, strlen(body), PWT_LIST("Connection: keep-alive"), NULL), 204);
    free(body);
    wait_inflight_zero();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(large_pushes_over_the_budget_get_503_and_a_normal_push_204, fresh_tables),
        cmocka_unit_test_setup(a_push_larger_than_the_budget_alone_is_taken, fresh_tables),
        cmocka_unit_test_setup(bodies_on_other_paths_give_the_budget_back, fresh_tables),
    };
    pwt_suite_init("budget", &worker, PWT_LIST("WORKER_THREADS=2", "INFLIGHT_BYTES_MAX=1048576", "PUSH_DEADLINE_MS=60000"));
    return cmocka_run_group_tests(tests, pwt_suite_setup, pwt_suite_teardown_any_exit);
}
