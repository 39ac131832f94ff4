/*
 * NOTIFY tests: each new inbound message is announced once, just after its push's commit, on
 * channel pushworker_inbound with the JSON payload {"wa_msg_id", "phone_number_id", "msg_type",
 * "sent_at"} (README.md); a redelivery, a status or anything else is not announced. A message
 * whose announcement NOTIFY would refuse is stored all the same, and only it goes unannounced.
 *
 * A separate libpq connection LISTENs. After each push (answered 204, so committed), the checker
 * waits until the worker has no announcement pending (/metrics: the worker counts a push's
 * announcements as pending before it answers the push, and as sent once their own transaction
 * has committed), then sends a sentinel NOTIFY on the same channel; PostgreSQL delivers
 * notifications of different transactions in commit order, so everything the worker announced
 * for that push has arrived when the sentinel does: the counts below are exact, with no sleeping
 * and guessing.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <json-c/json.h>
#include <libpq-fe.h>

#include "tests/integration/harness.h"
#include "tests/integration/util.h"

/* clang-format off */

#define CHANNEL "pushworker_inbound"
#define SUB "projects/acme-prod/subscriptions/whatsapp-events-push"
#define PNID "106540352242922"
#define WAIT_MS 5000 /* for the sentinel: it comes within milliseconds unless something is broken */
#define MAX_NOTES 16

/* Inbound wamids of tests/fixtures/meta (see pipeline_test.c) and aisensy. */
#define WI_TEXT "wamid.HBgMOTE5ODEyMzQwMDAxFQIAEhggdGV4dF93aXRoX2NvbnRhY3QAA=="
#define WI_SAME1 "wamid.HBgMOTE5ODEyMzQwMDAxFQIAEhggc2FtZV9jb250YWN0XzEAA=="
#define WI_SAME2 "wamid.HBgMOTE5ODEyMzQwMDAxFQIAEhggc2FtZV9jb250YWN0XzIAA=="
#define WA_AIS_IN1 "wamid.HBgMOTE5ODc2NTAwMDAxFQIAEhgUM0E5QjRDMkQ1RTZGN0EwQjFDMkQA"

#define PARAMS PWT_LIST
#define PENDING "pushworker_inbound_announcements_pending"
#define FAILED "pushworker_inbound_announcements_total{result=\"failed\"}"

static pwt_worker_t worker;
static PGconn *listener;
static int sentinel_seq;

/* What arrived for one push: the payloads, in arrival order (malloc'd). */
typedef struct {
    int n;
    char *payload[MAX_NOTES];
} notes_t;

static void notes_free(notes_t *ns)
{
    for (int i = 0; i < ns->n; i++)
        free(ns->payload[i]);
    ns->n = 0;
}

/* ---- listening --------------------------------------------------------------------------------- */

static int listen_start(void)
{
    listener = PQconnectdb(pwt_db_url());
    if (PQstatus(listener) != CONNECTION_OK) {
        fprintf(stderr, "notify_test: listener cannot connect: %s", PQerrorMessage(listener));
        return -1;
    }
    PGresult *r = PQexec(listener, "LISTEN " CHANNEL);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "notify_test: LISTEN failed: %s", PQerrorMessage(listener));
    PQclear(r);
    return ok ? 0 : -1;
}

/*
 * Waits until w has announced everything it committed, sends a sentinel NOTIFY from the checker
 * connection, then collects every notification on CHANNEL that arrives before it (the sentinel
 * itself is not kept). Fails the test when the sentinel does not come within WAIT_MS, when a
 * notification comes from the checker's own backend, or on another channel.
 */
static void collect_until_sentinel(const pwt_worker_t *w, notes_t *out, const char *file, int line)
{
    pwt__wait_metric(file, line, w, PENDING, 0, 0);
    char sentinel[64];
    snprintf(sentinel, sizeof sentinel, "pwt-sentinel-%d", ++sentinel_seq);
    char *checker_pid = pwt_rows("SELECT pg_backend_pid()");
    free(pwt_rows_p("SELECT pg_notify('" CHANNEL "', $1)", PARAMS(sentinel)));

    out->n = 0;
    long long deadline = pwt_now_ms() + WAIT_MS;
    for (;;) {
        if (PQconsumeInput(listener) != 1)
            pwt_fail(file, line, "listener connection failed: %s", PQerrorMessage(listener));
        PGnotify *note;
        int done = 0;
        while ((note = PQnotifies(listener)) != NULL) {
            if (strcmp(note->relname, CHANNEL) != 0)
                pwt_fail(file, line, "notification on channel %s", note->relname);
            if (strcmp(note->extra, sentinel) == 0) {
                done = 1;
            } else if (strncmp(note->extra, "pwt-sentinel-", 13) == 0) {
                /* the sentinel of an earlier, failed check: skip it */
            } else if (done) {
                pwt_fail(file, line, "notification after the sentinel: %s", note->extra);
            } else {
                if (note->be_pid == atoi(checker_pid))
                    pwt_fail(file, line, "unexpected notification from the checker: %s", note->extra);
                if (out->n == MAX_NOTES)
                    pwt_fail(file, line, "more than %d notifications", MAX_NOTES);
                out->payload[out->n++] = strdup(note->extra);
            }
            PQfreemem(note);
        }
        if (done)
            break;
        long long left = deadline - pwt_now_ms();
        if (left <= 0)
            pwt_fail(file, line, "the sentinel NOTIFY did not arrive within %d ms", WAIT_MS);
        struct pollfd p = {.fd = PQsocket(listener), .events = POLLIN};
        if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
            pwt_fail(file, line, "poll: %s", strerror(errno));
    }
    free(checker_pid);
}

/* ---- payload checks ---------------------------------------------------------------------------- */

/* 1 when json member key of o is the string want (or JSON null when want is NULL). */
static int member_is(json_object *o, const char *key, const char *want)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v))
        return 0;
    if (want == NULL)
        return v == NULL; /* json-c represents null as NULL */
    return json_object_is_type(v, json_type_string) && strcmp(json_object_get_string(v), want) == 0;
}

/* 1 when payload is exactly {"wa_msg_id", "phone_number_id", "msg_type", "sent_at"} with these values. */
static int payload_is(const char *payload, const char *wa_msg_id, const char *pnid, const char *type,
                      const char *sent_at)
{
    json_object *o = json_tokener_parse(payload);
    int ok = o != NULL && json_object_is_type(o, json_type_object) && json_object_object_length(o) == 4 &&
             member_is(o, "wa_msg_id", wa_msg_id) && member_is(o, "phone_number_id", pnid) &&
             member_is(o, "msg_type", type) && member_is(o, "sent_at", sent_at);
    json_object_put(o);
    return ok;
}

typedef struct {
    const char *wa_msg_id, *pnid, *type, *sent_at;
} expected_note_t;

#define assert_notes(ns, ...) \
    assert_notes_at(__FILE__, __LINE__, (ns), (const expected_note_t[]){__VA_ARGS__}, \
                    (int)(sizeof((const expected_note_t[]){__VA_ARGS__}) / sizeof(expected_note_t)))
#define assert_no_notes(ns) assert_notes_at(__FILE__, __LINE__, (ns), NULL, 0)

/* The notifications are exactly the expected ones, each once, in any order. */
static void assert_notes_at(const char *file, int line, const notes_t *ns, const expected_note_t *exp, int n_exp)
{
    char got[4096] = "";
    for (int i = 0; i < ns->n; i++) {
        strncat(got, "\n  ", sizeof got - strlen(got) - 1);
        strncat(got, ns->payload[i], sizeof got - strlen(got) - 1);
    }
    if (ns->n != n_exp)
        pwt_fail(file, line, "expected %d notification(s), got %d:%s", n_exp, ns->n, got);
    int used[MAX_NOTES] = {0};
    for (int e = 0; e < n_exp; e++) {
        int found = -1;
        for (int i = 0; i < ns->n && found < 0; i++)
            if (!used[i] && payload_is(ns->payload[i], exp[e].wa_msg_id, exp[e].pnid, exp[e].type, exp[e].sent_at))
                found = i;
        if (found < 0)
            pwt_fail(file, line, "no notification {\"wa_msg_id\": \"%s\", \"phone_number_id\": %s, \"msg_type\": \"%s\", "
                     "\"sent_at\": \"%s\"} among:%s", exp[e].wa_msg_id, exp[e].pnid ? exp[e].pnid : "null",
                     exp[e].type, exp[e].sent_at, got);
        used[found] = 1;
    }
}

/* ---- pushes ------------------------------------------------------------------------------------ */

/* Posts payload to w wrapped as a push with message_id (NULL: an unwrapped push without metadata), expecting 204. */
static void post_to(const pwt_worker_t *w, const char *payload, const char *message_id)
{
    char *body = message_id ? pwt_wrap(payload, strlen(payload), message_id, SUB, "2024-03-06T10:00:00Z")
                            : strdup(payload);
    pwt_assert_status(pwt_post(w, "/", body, strlen(body), NULL, NULL), 204);
    free(body);
}

/* Pushes a fixture and collects what it announced. */
static void push_fixture(const char *rel, const char *message_id, notes_t *ns)
{
    char *payload = pwt_read_fixture(rel, NULL);
    post_to(&worker, payload, message_id);
    free(payload);
    collect_until_sentinel(&worker, ns, __FILE__, __LINE__);
}

/* meta/text_with_contact.json pushed under message_id must be announced once (WI_TEXT) when `announced`, else not at all. */
static void push_text_with_contact(const char *message_id, int announced)
{
    notes_t ns = {0};
    push_fixture("meta/text_with_contact.json", message_id, &ns);
    if (announced)
        assert_notes(&ns, {WI_TEXT, PNID, "text", "2024-03-06T00:00:00Z"});
    else
        assert_no_notes(&ns);
    notes_free(&ns);
}

/* A Meta webhook carrying text messages ids[0..n) from one sender, timestamps 1709690000 + i. */
static char *texts_webhook(const char *const *ids, int n)
{
    char msgs[4096] = "";
    for (int i = 0; i < n; i++) {
        char one[512];
        snprintf(one, sizeof one,
                 "%s{\"from\":\"919812340099\",\"id\":\"%s\",\"timestamp\":\"%d\",\"type\":\"text\",\"text\":{\"body\":\"m%d\"}}",
                 i ? "," : "", ids[i], 1709690000 + i, i);
        strncat(msgs, one, sizeof msgs - strlen(msgs) - 1);
    }
    char *members = pwt_xasprintf("\"messages\":[%s]", msgs);
    char *s = pwt_meta_webhook(members);
    free(members);
    return s;
}

/* ---- fixtures (cmocka) ------------------------------------------------------------------------- */

static int start_everything(void **state)
{
    (void)state;
    if (pwt_suite_start("notify", NULL, NULL) != 0 || listen_start() != 0)
        return -1;
    return pwt_worker_start(&worker, PARAMS("WORKER_THREADS=2"));
}

static int stop_everything(void **state)
{
    (void)state;
    int code = pwt_worker_stop(&worker);
    if (listener != NULL)
        PQfinish(listener);
    listener = NULL;
    pwt_suite_stop(NULL);
    return code == 0 ? 0 : -1;
}

/* Before each test: empty tables, and nothing left over on the listener. */
static int fresh(void **state)
{
    (void)state;
    pwt_truncate_all();
    notes_t ns = {0};
    collect_until_sentinel(&worker, &ns, __FILE__, __LINE__);
    notes_free(&ns);
    return 0;
}

/* ---- tests ------------------------------------------------------------------------------------- */

static void new_inbound_text_is_announced_once_with_its_payload(void **state)
{
    (void)state;
    notes_t ns = {0};
    push_fixture("meta/text_with_contact.json", "n101", &ns);
    assert_notes(&ns, {WI_TEXT, PNID, "text", "2024-03-06T00:00:00Z"});
    /* The payload is the small documented object, nothing more (no body: it may be large or private). */
    assert_true(strlen(ns.payload[0]) < 256);
    notes_free(&ns);
}

static void redelivered_push_is_not_announced_again(void **state)
{
    (void)state;
    push_text_with_contact("n201", 1);
    push_text_with_contact("n201", 0);
    push_text_with_contact("n201", 0);
    pwt_assert_rows("SELECT count(*) FROM inbound_messages", "1");
}

static void same_message_in_a_new_push_is_not_announced_again(void **state)
{
    (void)state;
    push_text_with_contact("n301", 1);
    push_text_with_contact("n302", 0);
    pwt_assert_rows("SELECT message_id FROM pubsub_receipts ORDER BY 1", "n301\nn302");
}

static void push_with_two_inbound_messages_is_announced_twice(void **state)
{
    (void)state;
    notes_t ns = {0};
    push_fixture("meta/messages_same_contact.json", "n401", &ns);
    assert_notes(&ns, {WI_SAME1, PNID, "text", "2024-03-06T00:20:00Z"}, {WI_SAME2, PNID, "text", "2024-03-06T00:20:45Z"});
    notes_free(&ns);
    push_fixture("meta/messages_same_contact.json", "n402", &ns);
    assert_no_notes(&ns);
}

static void push_with_a_known_and_a_new_message_announces_only_the_new_one(void **state)
{
    (void)state;
    notes_t ns = {0};
    char *first = texts_webhook(PWT_LIST("wamid.notify.k1"), 1);
    post_to(&worker, first, "n501");
    collect_until_sentinel(&worker, &ns, __FILE__, __LINE__);
    assert_notes(&ns, {"wamid.notify.k1", PNID, "text", "2024-03-06T01:53:20Z"});
    notes_free(&ns);

    char *both = texts_webhook(PWT_LIST("wamid.notify.k1", "wamid.notify.k2"), 2);
    post_to(&worker, both, "n502");
    collect_until_sentinel(&worker, &ns, __FILE__, __LINE__);
    assert_notes(&ns, {"wamid.notify.k2", PNID, "text", "2024-03-06T01:53:21Z"});
    notes_free(&ns);
    free(first);
    free(both);
}

static void statuses_and_other_pushes_are_not_announced(void **state)
{
    (void)state;
    notes_t ns = {0};
    push_fixture("meta/status_read.json", "n601", &ns); /* a status that also carries a contact */
    assert_no_notes(&ns);
    push_fixture("meta/statuses_batch.json", "n602", &ns);
    assert_no_notes(&ns);
    push_fixture("aisensy/status_delivered.json", "n603", &ns);
    assert_no_notes(&ns);
    push_fixture("meta/template_status_update.json", "n604", &ns); /* ignored */
    assert_no_notes(&ns);
    pwt_assert_status(pwt_post(&worker, "/", "not json", 8, NULL, NULL), 204); /* dead letter */
    collect_until_sentinel(&worker, &ns, __FILE__, __LINE__);
    assert_no_notes(&ns);
    pwt_assert_rows("SELECT count(*) FROM inbound_messages", "0");
    pwt_assert_rows("SELECT count(*) > 0 FROM status_events", "t");
}

static void aisensy_inbound_is_announced_with_null_phone_number_id(void **state)
{
    (void)state;
    notes_t ns = {0};
    push_fixture("aisensy/sender_user_text.json", "n701", &ns);
    assert_notes(&ns, {WA_AIS_IN1, NULL, "text", "2024-03-06T00:59:55Z"});
    notes_free(&ns);
    push_fixture("aisensy/message_created.json", "n702", &ns); /* repeats it under another topic: ignored */
    assert_no_notes(&ns);
}

/* A push without a message id has no receipt and is always applied: the row is what stops a second announcement. */
static void unwrapped_push_without_message_id_is_announced_once(void **state)
{
    (void)state;
    notes_t ns = {0};
    char *payload = pwt_read_fixture("meta/text_with_contact.json", NULL);
    post_to(&worker, payload, NULL);
    collect_until_sentinel(&worker, &ns, __FILE__, __LINE__);
    assert_notes(&ns, {WI_TEXT, PNID, "text", "2024-03-06T00:00:00Z"});
    notes_free(&ns);
    post_to(&worker, payload, NULL);
    collect_until_sentinel(&worker, &ns, __FILE__, __LINE__);
    assert_no_notes(&ns);
    pwt_assert_rows("SELECT count(*) FROM pubsub_receipts", "0");
    free(payload);
}

/*
 * PostgreSQL refuses a NOTIFY payload of 8000 bytes or more (the first message here has an
 * 8,199-byte id). Both messages of the push are stored and the push acknowledged as any other;
 * the long one is not announced, and the other is (a refused payload would have failed the
 * announcements of its whole batch). Nothing counts as failed. (When the announcement was part of
 * the push's transaction, the long message was refused with it and kept as a dead letter.)
 */
static void a_payload_notify_would_refuse_is_stored_and_not_announced(void **state)
{
    (void)state;
    char id[8200];
    memcpy(id, "wamid.", 6);
    memset(id + 6, 'L', sizeof id - 7);
    id[sizeof id - 1] = '\0';
    char *members = pwt_xasprintf("\"messages\":["
                                  "{\"from\":\"919812340099\",\"id\":\"%s\",\"timestamp\":\"1709690000\",\"type\":\"text\",\"text\":{\"body\":\"long id\"}},"
                                  "{\"from\":\"919812340099\",\"id\":\"wamid.notify.short\",\"timestamp\":\"1709690001\",\"type\":\"text\",\"text\":{\"body\":\"short id\"}}]",
                                  id);
    char *hook = pwt_meta_webhook(members);
    long long failed = pwt_metric(&worker, FAILED);
    assert_true(failed >= 0);

    notes_t ns = {0};
    post_to(&worker, hook, "n801");
    collect_until_sentinel(&worker, &ns, __FILE__, __LINE__);
    assert_notes(&ns, {"wamid.notify.short", PNID, "text", "2024-03-06T01:53:21Z"});
    notes_free(&ns);
    pwt_assert_rows("SELECT length(wa_msg_id), body FROM inbound_messages ORDER BY 1", "18|short id\n8199|long id");
    pwt_assert_rows("SELECT message_id, outcome FROM pubsub_receipts", "n801|stored");
    pwt_assert_rows("SELECT count(*) FROM dead_letters", "0");
    assert_int_equal(pwt_metric(&worker, FAILED), failed);
    free(members);
    free(hook);
}

/*
 * The last push in hand has its announcement sent before its answer: a Cloud Run instance with no
 * request in flight gets (nearly) no CPU, which SIGSTOP stands for here, right after the 204. The
 * notification still comes while the worker is stopped. (Announcements wait up to 5 ms for more
 * to join them while other pushes are in hand, and a stopped worker would send nothing.)
 */
static void the_last_push_is_announced_before_its_answer(void **state)
{
    (void)state;
    char *payload = pwt_read_fixture("meta/text_with_contact.json", NULL);
    post_to(&worker, payload, "n1001");
    assert_int_equal(kill(worker.pid, SIGSTOP), 0);
    notes_t ns = {0};
    long long deadline = pwt_now_ms() + WAIT_MS;
    while (ns.n == 0 && pwt_now_ms() < deadline) {
        if (PQconsumeInput(listener) != 1)
            break;
        PGnotify *note;
        while ((note = PQnotifies(listener)) != NULL) {
            if (ns.n < MAX_NOTES)
                ns.payload[ns.n++] = strdup(note->extra);
            PQfreemem(note);
        }
        struct pollfd p = {.fd = PQsocket(listener), .events = POLLIN};
        if (ns.n == 0)
            (void)poll(&p, 1, 50);
    }
    assert_int_equal(kill(worker.pid, SIGCONT), 0);
    assert_notes(&ns, {WI_TEXT, PNID, "text", "2024-03-06T00:00:00Z"});
    notes_free(&ns);
    collect_until_sentinel(&worker, &ns, __FILE__, __LINE__);
    assert_no_notes(&ns);
    free(payload);
}

/* sent_at is UTC whatever the worker's and its database session's time zone. */
static void sent_at_is_utc_whatever_the_worker_time_zone(void **state)
{
    (void)state;
    static pwt_worker_t far; /* static: the harness tracks it while it runs */
    assert_int_equal(pwt_worker_start(&far, PARAMS("WORKER_THREADS=1", "TZ=Pacific/Kiritimati",
                                                   "PGTZ=Pacific/Kiritimati")), 0);
    notes_t ns = {0};
    char *payload = pwt_read_fixture("meta/text_with_contact.json", NULL);
    post_to(&far, payload, "n901");
    collect_until_sentinel(&far, &ns, __FILE__, __LINE__);
    assert_notes(&ns, {WI_TEXT, PNID, "text", "2024-03-06T00:00:00Z"});
    notes_free(&ns);
    free(payload);
    assert_int_equal(pwt_worker_stop(&far), 0);
}

#define T(fn) cmocka_unit_test_setup(fn, fresh)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(new_inbound_text_is_announced_once_with_its_payload),
        T(redelivered_push_is_not_announced_again),
        T(same_message_in_a_new_push_is_not_announced_again),
        T(push_with_two_inbound_messages_is_announced_twice),
        T(push_with_a_known_and_a_new_message_announces_only_the_new_one),
        T(statuses_and_other_pushes_are_not_announced),
        T(aisensy_inbound_is_announced_with_null_phone_number_id),
        T(unwrapped_push_without_message_id_is_announced_once),
        T(a_payload_notify_would_refuse_is_stored_and_not_announced),
        T(the_last_push_is_announced_before_its_answer),
        T(sent_at_is_utc_whatever_the_worker_time_zone),
    };
    return cmocka_run_group_tests_name("notify", tests, start_everything, stop_everything);
}
/* clang-format on */
