/*
 * The Google Pub/Sub emulator as a real push client: topics and push subscriptions are made over
 * its REST API, fixtures are published to it, and it pushes them to the worker (wrapped, or
 * unwrapped with metadata headers), retrying what the worker does not acknowledge.
 *
 * The emulator (Debian package google-cloud-cli-pubsub-emulator, Java 17) is started once for
 * this binary on a free loopback port, in a process group of its own, with a private temporary
 * directory, and stopped in the group teardown; it is also killed when this process exits or
 * dies (atexit, fatal signals, and PR_SET_PDEATHSIG in the child), so no Java is left behind.
 * When it is not installed, every test is skipped with a message. PWT_PUBSUB_EMULATOR overrides
 * its path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <libpq-fe.h>

#include "tests/integration/harness.h"
#include "tests/integration/cluster.h"
#include "tests/integration/httpc.h"
#include "tests/integration/proc.h"
#include "tests/integration/util.h"

#define EMULATOR_DEFAULT "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
#define NOT_INSTALLED "Pub/Sub emulator not installed (package google-cloud-cli-pubsub-emulator): skipping"
#define PROJECT "pw-test"
#define EMULATOR_START_TIMEOUT_MS 60000
#define DELIVERY_TIMEOUT_MS 20000

/* ---- small helpers ----------------------------------------------------------------------------- */

static void json_add_str(json_object *o, const char *key, const char *val)
{
    json_object_object_add(o, key, json_object_new_string(val));
}

/* ---- the emulator process ----------------------------------------------------------------------- */

/*
 * Everything this binary makes on disk lives in work_dir (/tmp/pwt-emu-XXXXXX, removed at the end):
 *   emulator/      the emulator's cwd, HOME and java.io.tmpdir      emulator.log   its output
 *   pg/            the private PostgreSQL cluster (scripts/dev-db)  pg.log         dev-db, pg_ctl, migrate output
 */
static char work_dir[64];
static char emulator_dir[128], emulator_log[128];
static pwt_cluster_t cluster; /* the private PostgreSQL cluster, in work_dir/pg */

static const char *emulator_path;
static int emulator_installed;
static pid_t emulator_pid; /* also its process group */
static int emulator_port;
static pwt_worker_t worker; /* the worker of the running test (the harness does not kill it on a signal) */

static void kill_emulator_now(void)
{
    if (emulator_pid > 0)
        kill(-emulator_pid, SIGKILL);
}

/* Interrupted (Ctrl-C, a test driver's timeout) or crashed: leave no Java, no PostgreSQL, no files. */
static void on_fatal_signal(int sig)
{
    kill_emulator_now();
    if (worker.pid > 0)
        kill(worker.pid, SIGKILL);
    pid_t running_cmd = pwt_running_child();
    if (running_cmd > 0) {
        kill(running_cmd, SIGTERM);
        waitpid(running_cmd, NULL, 0);
    }
    pwt_cluster_stop_in_handler(&cluster);
    if (work_dir[0] != '\0') {
        char *const rm[] = {"/bin/rm", "-rf", work_dir, NULL};
        pwt_run_in_handler(rm);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void stop_emulator(void)
{
    pwt_stop_group(emulator_pid, 5000);
    emulator_pid = 0;
}

/* One HTTP request to the emulator's REST API. Returns the status (-1: transport error); *out gets the body. */
static long emu_http(const char *method, const char *path, const char *json, char **out)
{
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", emulator_port, path);
    return pwt_http_request(method, url, json, NULL, 10000L, out);
}

/* Starts the emulator and waits until its REST API answers. 0, or -1 with the reason printed. */
static int start_emulator(void)
{
    if (mkdir(emulator_dir, 0755) != 0) {
        fprintf(stderr, "emulator: mkdir %s: %s\n", emulator_dir, strerror(errno));
        return -1;
    }
    emulator_port = pwt_free_port();
    char port_arg[32], java_opts[700], home[300];
    snprintf(port_arg, sizeof port_arg, "--port=%d", emulator_port);
    snprintf(java_opts, sizeof java_opts, "JAVA_OPTS=-Djava.io.tmpdir=%s -Duser.home=%s", emulator_dir, emulator_dir);
    snprintf(home, sizeof home, "HOME=%s", emulator_dir);

    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* survives the exec: Java dies with this process */
        if (getppid() != parent)
            _exit(1);
        pwt_child_redirect(emulator_log, PWT_SPAWN_TRUNC);
        if (chdir(emulator_dir) != 0)
            _exit(126);
        putenv(java_opts);
        putenv(home);
        execl(emulator_path, emulator_path, "--host=127.0.0.1", port_arg, (char *)NULL);
        dprintf(STDERR_FILENO, "exec %s: %s\n", emulator_path, strerror(errno));
        _exit(127);
    }
    if (pid < 0)
        return -1;
    setpgid(pid, pid); /* also from here, so the group exists before we might signal it */
    emulator_pid = pid;

    long long t0 = pwt_now_ms();
    while (pwt_now_ms() - t0 < EMULATOR_START_TIMEOUT_MS) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            emulator_pid = 0;
            fprintf(stderr, "emulator: exited during start-up\n");
            pwt_print_file_tail("emulator log", emulator_log, 30);
            return -1;
        }
        if (emu_http("GET", "/", NULL, NULL) == 200) {
            printf("# Pub/Sub emulator up on 127.0.0.1:%d after %lld ms\n", emulator_port, pwt_now_ms() - t0);
            return 0;
        }
        pwt_sleep_ms(100);
    }
    fprintf(stderr, "emulator: no answer on port %d after %d ms\n", emulator_port, EMULATOR_START_TIMEOUT_MS);
    pwt_print_file_tail("emulator log", emulator_log, 30);
    stop_emulator();
    return -1;
}

/* ---- topics, subscriptions, publishing ---------------------------------------------------------- */

static void emu_expect(long status, const char *what, const char *answer, const char *file, int line)
{
    if (status != 200) {
        pwt_print_file_tail("emulator log", emulator_log, 20);
        pwt_fail(file, line, "emulator %s answered %ld: %s", what, status, answer ? answer : "");
    }
}

/* Creates topic NAME and push subscription NAME-push to the worker; wrapped or unwrapped (with metadata). */
#define MAKE_PUSH_SUBSCRIPTION(name, w, unwrapped) make_push_subscription((name), (w), (unwrapped), __FILE__, __LINE__)
static void make_push_subscription(const char *name, const pwt_worker_t *w, int unwrapped, const char *file, int line)
{
    char path[256], *answer = NULL;
    snprintf(path, sizeof path, "/v1/projects/" PROJECT "/topics/%s", name);
    long st = emu_http("PUT", path, "{}", &answer);
    emu_expect(st, "create topic", answer, file, line);
    free(answer);

    json_object *sub = json_object_new_object();
    char topic[200], endpoint[128];
    snprintf(topic, sizeof topic, "projects/" PROJECT "/topics/%s", name);
    snprintf(endpoint, sizeof endpoint, "%s/", w->base_url);
    json_add_str(sub, "topic", topic);
    json_object *push = json_object_new_object();
    json_add_str(push, "pushEndpoint", endpoint);
    if (unwrapped) {
        json_object *nw = json_object_new_object();
        json_object_object_add(nw, "writeMetadata", json_object_new_boolean(1));
        json_object_object_add(push, "noWrapper", nw);
    }
    json_object_object_add(sub, "pushConfig", push);
    json_object_object_add(sub, "ackDeadlineSeconds", json_object_new_int(10));
    snprintf(path, sizeof path, "/v1/projects/" PROJECT "/subscriptions/%s-push", name);
    st = emu_http("PUT", path, json_object_to_json_string_ext(sub, JSON_C_TO_STRING_PLAIN), &answer);
    json_object_put(sub);
    emu_expect(st, "create subscription", answer, file, line);
    free(answer);
}

/* Empty tables, a new worker (a failed test's one stopped) and push subscription NAME-push to it. */
#define FRESH_WORKER_AND_SUBSCRIPTION(name, unwrapped) fresh_worker_and_subscription((name), (unwrapped), __FILE__, __LINE__)
static void fresh_worker_and_subscription(const char *name, int unwrapped, const char *file, int line)
{
    pwt_worker_stop(&worker); /* a failed test's worker, if any */
    pwt_truncate_all();
    if (pwt_worker_start(&worker, NULL) != 0)
        fail_msg("worker did not start");
    make_push_subscription(name, &worker, unwrapped, file, line);
}

/* Publishes the fixture to topic NAME (attribute fixture=<rel>); id_out gets the emulator's messageId. */
#define PUBLISH_FIXTURE(topic, rel, id_out) publish_fixture((topic), (rel), (id_out), __FILE__, __LINE__)
static void publish_fixture(const char *topic, const char *rel, char id_out[64], const char *file, int line)
{
    size_t len;
    char *payload = pwt_read_fixture(rel, &len);
    char *data = pwt_base64(payload, len);
    json_object *msg = json_object_new_object();
    json_add_str(msg, "data", data);
    json_object *attrs = json_object_new_object();
    json_add_str(attrs, "fixture", rel);
    json_object_object_add(msg, "attributes", attrs);
    json_object *msgs = json_object_new_array();
    json_object_array_add(msgs, msg);
    json_object *req = json_object_new_object();
    json_object_object_add(req, "messages", msgs);
    char path[256], *answer = NULL;
    snprintf(path, sizeof path, "/v1/projects/" PROJECT "/topics/%s:publish", topic);
    long st = emu_http("POST", path, json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN), &answer);
    json_object_put(req);
    free(data);
    free(payload);
    emu_expect(st, "publish", answer, file, line);

    json_object *root = json_tokener_parse(answer), *ids = NULL;
    if (root == NULL || !json_object_object_get_ex(root, "messageIds", &ids) ||
        json_object_array_length(ids) != 1)
        pwt_fail(file, line, "publish: no messageIds in %s", answer);
    snprintf(id_out, 64, "%s", json_object_get_string(json_object_array_get_idx(ids, 0)));
    json_object_put(root);
    free(answer);
}

/* ---- waiting and checking ----------------------------------------------------------------------- */

/* Polls the test database until sql (a count) reaches want; fails after DELIVERY_TIMEOUT_MS. */
#define WAIT_FOR_COUNT(sql, want) wait_for_count((sql), (want), __FILE__, __LINE__)
static long long wait_for_count(const char *sql, long long want, const char *file, int line)
{
    long long t0 = pwt_now_ms(), got = -1;
    while (pwt_now_ms() - t0 < DELIVERY_TIMEOUT_MS) {
        got = pwt_scalar_int(sql);
        if (got >= want)
            return pwt_now_ms() - t0;
        pwt_sleep_ms(100);
    }
    pwt_print_file_tail("emulator log", emulator_log, 20);
    pwt_fail(file, line, "after %d ms, %s gives %lld, expected %lld", DELIVERY_TIMEOUT_MS, sql, got, want);
    return -1;
}

/* Replaces every "{name}" in tmpl by the value that follows it in the NULL-terminated pairs; malloc'd. */
static char *fill(const char *tmpl, ...)
{
    const char *names[16], *values[16];
    int n = 0;
    va_list ap;
    va_start(ap, tmpl);
    while (n < 16 && (names[n] = va_arg(ap, const char *)) != NULL)
        values[n++] = va_arg(ap, const char *);
    va_end(ap);
    char *out = NULL;
    size_t out_len = 0;
    FILE *f = open_memstream(&out, &out_len);
    for (const char *p = tmpl; *p;) {
        int hit = 0;
        for (int i = 0; i < n && !hit; i++) {
            size_t k = strlen(names[i]);
            if (*p == '{' && strncmp(p + 1, names[i], k) == 0 && p[1 + k] == '}') {
                fputs(values[i], f);
                p += k + 2;
                hit = 1;
            }
        }
        if (!hit)
            fputc(*p++, f);
    }
    fclose(f);
    return out;
}

/* ---- the private PostgreSQL cluster (for the test that stops it) ---------------------------------- */

#define ASSERT_PRIVATE_ROWS(sql, expected) pwt_assert_rows_at(cluster.url, (sql), (expected))

/* ---- cleanup on every exit -------------------------------------------------------------------- */

/* Stops the emulator and the private cluster, and removes work_dir. Safe to call twice. */
static void cleanup(void)
{
    stop_emulator();
    pwt_cluster_stop(&cluster);
    if (work_dir[0] != '\0') {
        pwt_rm_rf(work_dir);
        work_dir[0] = '\0';
    }
}

#define SKIP_WITHOUT_EMULATOR()                                                                                       \
    do {                                                                                                              \
        if (!emulator_installed) {                                                                                    \
            printf("# " NOT_INSTALLED "\n");                                                                          \
            skip();                                                                                                   \
        }                                                                                                             \
        if (emulator_pid <= 0)                                                                                        \
            fail_msg("the Pub/Sub emulator is installed but not running (see the group setup's messages)");         \
    } while (0)

/* Every receipt of a subscription, with its publish time checked against the window it was published in. */
static char *receipts_sql(const char *subscription, long long published_from)
{
    char *sql = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&sql, &len);
    fprintf(f,
            "SELECT subscription, message_id, outcome,"
            "       publish_time BETWEEN to_timestamp(%lld) - interval '5 s' AND now() AS published_during_test"
            " FROM pubsub_receipts WHERE subscription = '%s' ORDER BY length(message_id), message_id",
            published_from, subscription);
    fclose(f);
    return sql;
}

/* ---- tests -------------------------------------------------------------------------------------- */

/*
 * (a) Wrapped pushes from the emulator: one wamid's sent/delivered/read published read first, an
 * inbound text, an AiSensy status and a template update: exact rows, receipts carrying the
 * subscription name and the emulator's messageIds.
 */
static void test_emulator_wrapped_pushes_in_any_order_become_exact_rows_and_receipts(void **state)
{
    (void)state;
    SKIP_WITHOUT_EMULATOR();
    FRESH_WORKER_AND_SUBSCRIPTION("wrapped", 0);

    long long published_from = (long long)time(NULL);
    char read_id[64], sent_id[64], delivered_id[64], text_id[64], aisensy_id[64], template_id[64];
    PUBLISH_FIXTURE("wrapped", "meta/status_read.json", read_id);
    PUBLISH_FIXTURE("wrapped", "meta/status_sent.json", sent_id);
    PUBLISH_FIXTURE("wrapped", "meta/status_delivered.json", delivered_id);
    PUBLISH_FIXTURE("wrapped", "meta/text_with_contact.json", text_id);
    PUBLISH_FIXTURE("wrapped", "aisensy/status_delivered.json", aisensy_id);
    PUBLISH_FIXTURE("wrapped", "meta/template_status_update.json", template_id);
    long long ms = WAIT_FOR_COUNT("SELECT count(*) FROM pubsub_receipts", 6);
    printf("# 6 wrapped pushes delivered by the emulator: all committed %lld ms after the last publish\n", ms);

    char *sql = receipts_sql("projects/" PROJECT "/subscriptions/wrapped-push", published_from);
    char *want = fill("projects/pw-test/subscriptions/wrapped-push|{read}|stored|t\n"
                      "projects/pw-test/subscriptions/wrapped-push|{sent}|stored|t\n"
                      "projects/pw-test/subscriptions/wrapped-push|{delivered}|stored|t\n"
                      "projects/pw-test/subscriptions/wrapped-push|{text}|stored|t\n"
                      "projects/pw-test/subscriptions/wrapped-push|{aisensy}|stored|t\n"
                      "projects/pw-test/subscriptions/wrapped-push|{template}|ignored|t",
                      "read", read_id, "sent", sent_id, "delivered", delivered_id, "text", text_id, "aisensy",
                      aisensy_id, "template", template_id, NULL);
    pwt_assert_rows(sql, want);
    free(sql);
    free(want);

    pwt_assert_rows("SELECT bsp_msg_id, to_phone, whatsapp_status, current_status, last_error, created_at"
                    " FROM message_logs ORDER BY bsp_msg_id COLLATE \"C\"",
                    "wamid.HBgMOTE5ODEyMzQ1Njc4FQIAERgSQUlTRU5TWTAwMDAwMDAwMDAxAA==|+919812345678"
                    "|{\"sent\": \"2024-03-06T02:00:10Z\", \"delivered\": \"2024-03-06T02:00:10Z\"}|delivered|NULL"
                    "|2024-03-06 02:00:10+00\n"
                    "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQTFCMkMzRDRFNUY2QTdCOEM5AA==|+919876543210"
                    "|{\"read\": \"2024-03-05T20:01:00Z\", \"sent\": \"2024-03-05T20:00:00Z\","
                    " \"delivered\": \"2024-03-05T20:00:05Z\"}|read|NULL|2024-03-05 20:00:00+00");

    want = fill("wamid.HBgMOTE5ODEyMzQ1Njc4FQIAERgSQUlTRU5TWTAwMDAwMDAwMDAxAA==|delivered|2024-03-06 02:00:10+00"
                "|919812345678|NULL|NULL|NULL|NULL|NULL|{aisensy}\n"
                "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQTFCMkMzRDRFNUY2QTdCOEM5AA==|delivered|2024-03-05 20:00:05+00"
                "|919876543210|106540352242922|{\"id\": \"6ceb9d929c2a3e5e36d7d6a2b8ab7b2c\", \"origin\": {\"type\": \"marketing\"}}"
                "|{\"type\": \"regular\", \"billable\": true, \"category\": \"marketing\", \"pricing_model\": \"PMP\"}"
                "|NULL|NULL|{delivered}\n"
                "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQTFCMkMzRDRFNUY2QTdCOEM5AA==|read|2024-03-05 20:01:00+00"
                "|919876543210|106540352242922|NULL|NULL|NULL|NULL|{read}\n"
                "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQTFCMkMzRDRFNUY2QTdCOEM5AA==|sent|2024-03-05 20:00:00+00"
                "|919876543210|106540352242922|{\"id\": \"6ceb9d929c2a3e5e36d7d6a2b8ab7b2c\", \"origin\": {\"type\": \"marketing\"},"
                " \"expiration_timestamp\": \"1709755200\"}"
                "|{\"type\": \"regular\", \"billable\": true, \"category\": \"marketing\", \"pricing_model\": \"PMP\"}"
                "|NULL|campaign=spring24|{sent}",
                "aisensy", aisensy_id, "delivered", delivered_id, "read", read_id, "sent", sent_id, NULL);
    pwt_assert_rows("SELECT bsp_msg_id, status, occurred_at, recipient_id, phone_number_id, conversation, pricing,"
                    " errors, biz_opaque_callback_data, pubsub_message_id"
                    " FROM status_events ORDER BY bsp_msg_id COLLATE \"C\", status COLLATE \"C\"",
                    want);
    free(want);

    want = fill("wamid.HBgMOTE5ODEyMzQwMDAxFQIAEhggdGV4dF93aXRoX2NvbnRhY3QAA==|106540352242922|+919812340001|NULL"
                "|Priya Sharma|text|Hi! Is my order #4521 shipped? \xF0\x9F\x99\x8F|NULL|2024-03-06 00:00:00+00"
                "|wamid.HBgMOTE5ODEyMzQwMDAxFQIAEhggdGV4dF93aXRoX2NvbnRhY3QAA==|{text}",
                "text", text_id, NULL);
    pwt_assert_rows("SELECT wa_msg_id, phone_number_id, from_phone, from_user_id, contact_name, msg_type, body,"
                    " context_msg_id, sent_at, payload->>'id', pubsub_message_id FROM inbound_messages",
                    want);
    free(want);
    pwt_assert_rows("SELECT wa_id, profile_name, first_seen_at, last_seen_at FROM contacts ORDER BY wa_id",
                    "919812340001|Priya Sharma|2024-03-06 00:00:00+00|2024-03-06 00:00:00+00\n"
                    "919876543210|Neha Kulkarni|2024-03-05 20:01:00+00|2024-03-05 20:01:00+00");
    pwt_assert_rows("SELECT count(*) FROM dead_letters", "0");
    pwt_worker_stop(&worker);
}

/* (b) An unwrapped push subscription (noWrapper.writeMetadata): the body is the webhook, the receipt comes from the x-goog-pubsub-* headers. */
static void test_emulator_unwrapped_push_gets_its_receipt_from_the_metadata_headers(void **state)
{
    (void)state;
    SKIP_WITHOUT_EMULATOR();
    FRESH_WORKER_AND_SUBSCRIPTION("unwrapped", 1);

    long long published_from = (long long)time(NULL);
    char failed_id[64];
    PUBLISH_FIXTURE("unwrapped", "meta/status_failed.json", failed_id);
    long long ms = WAIT_FOR_COUNT("SELECT count(*) FROM pubsub_receipts", 1);
    printf("# unwrapped push delivered by the emulator: committed %lld ms after the publish\n", ms);

    char *sql = receipts_sql("projects/" PROJECT "/subscriptions/unwrapped-push", published_from);
    char *want = fill("projects/pw-test/subscriptions/unwrapped-push|{id}|stored|t", "id", failed_id, NULL);
    pwt_assert_rows(sql, want);
    free(sql);
    free(want);

    static const char errors[] =
        "[{\"code\": 131049, \"href\": \"https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/\","
        " \"title\": \"This message was not delivered to maintain healthy ecosystem engagement.\","
        " \"message\": \"This message was not delivered to maintain healthy ecosystem engagement.\","
        " \"error_data\": {\"details\": \"In order to maintain a healthy ecosystem engagement, the message failed to be"
        " delivered.\"}}]";
    want = fill("wamid.HBgMOTE5ODc2NTQzMjExFQIAERgSRkFJTEVEMDAwMDAwMDAwMDAxAA==|+919876543211"
                "|{\"failed\": \"2024-03-05T20:05:00Z\"}|failed|{errors}|2024-03-05 20:05:00+00",
                "errors", errors, NULL);
    pwt_assert_rows("SELECT bsp_msg_id, to_phone, whatsapp_status, current_status, last_error, created_at FROM message_logs",
                    want);
    free(want);
    want = fill("wamid.HBgMOTE5ODc2NTQzMjExFQIAERgSRkFJTEVEMDAwMDAwMDAwMDAxAA==|failed|2024-03-05 20:05:00+00"
                "|919876543211|106540352242922|NULL|NULL|{errors}|NULL|{id}",
                "errors", errors, "id", failed_id, NULL);
    pwt_assert_rows("SELECT bsp_msg_id, status, occurred_at, recipient_id, phone_number_id, conversation, pricing,"
                    " errors, biz_opaque_callback_data, pubsub_message_id FROM status_events",
                    want);
    free(want);
    pwt_assert_rows("SELECT count(*) FROM dead_letters", "0");
    pwt_worker_stop(&worker);
}

/*
 * (c) Nack and redelivery: the worker's own PostgreSQL is stopped, a push arrives and is answered
 * 503, the emulator keeps redelivering it, the database comes back, and the push ends in exactly
 * one set of rows and one receipt.
 */
static void test_emulator_redelivers_a_push_nacked_with_503_while_the_database_is_down_into_one_set_of_rows(void **state)
{
    (void)state;
    SKIP_WITHOUT_EMULATOR();
    pwt_worker_stop(&worker); /* a failed test's worker, if any */
    long long t0 = pwt_now_ms();
    if (pwt_cluster_start(&cluster) != 0)
        fail_msg("could not start a private PostgreSQL cluster with scripts/dev-db");
    char dburl[600], log[300];
    snprintf(dburl, sizeof dburl, "DATABASE_URL=%s", cluster.url);
    snprintf(log, sizeof log, "%s/migrate.log", work_dir);
    const char *migrate[] = {getenv("PW_WORKER"), "migrate", NULL};
    const char *menv[] = {dburl, NULL};
    if (pwt_run(migrate, menv, log) != 0) {
        pwt_print_file_tail("migrate log", log, 20);
        fail_msg("`worker migrate` failed on the private cluster");
    }

    const char *wenv[] = {dburl, "WORKER_THREADS=1", NULL};
    if (pwt_worker_start(&worker, wenv) != 0)
        fail_msg("worker did not start against the private cluster");
    MAKE_PUSH_SUBSCRIPTION("nacked", &worker, 0);

    const char *stop[] = {"-D", cluster.data, "-m", "immediate", "-w", "stop", NULL};
    if (pwt_pg_ctl(&cluster, stop) != 0)
        fail_msg("pg_ctl stop failed");

    long long published_from = (long long)time(NULL);
    char id[64];
    PUBLISH_FIXTURE("nacked", "meta/statuses_batch.json", id);

    /* The worker must have refused it (and the emulator retried) before the database returns. */
    long long t_nack = pwt_now_ms();
    int nacks = 0;
    while (pwt_now_ms() - t_nack < DELIVERY_TIMEOUT_MS) {
        char *text = pwt_worker_log(&worker);
        nacks = pwt_count_substr(text, "push not committed, answered 503");
        free(text);
        if (nacks >= 2)
            break;
        pwt_sleep_ms(100);
    }
    if (nacks < 1)
        pwt_fail(__FILE__, __LINE__, "the worker never answered 503 while its database was down");
    printf("# database down: the worker answered 503 %d time(s) in %lld ms\n", nacks, pwt_now_ms() - t_nack);
    char *probe = pwt_rows_at(cluster.url, "SELECT 1");
    free(probe);
    if (probe != NULL)
        fail_msg("the private cluster still answers after pg_ctl stop");

    const char *start[] = {"-D", cluster.data, "-l", cluster.log, "-w", "-t", "30", "start", NULL};
    if (pwt_pg_ctl(&cluster, start) != 0)
        fail_msg("pg_ctl start failed");

    long long t_up = pwt_now_ms();
    char *receipts = NULL;
    while (pwt_now_ms() - t_up < DELIVERY_TIMEOUT_MS) {
        free(receipts);
        receipts = pwt_rows_at(cluster.url, "SELECT count(*) FROM pubsub_receipts");
        if (receipts != NULL && strcmp(receipts, "0") != 0)
            break;
        pwt_sleep_ms(100);
    }
    printf("# database back: the redelivered push was committed after %lld ms\n", pwt_now_ms() - t_up);
    if (receipts == NULL || strcmp(receipts, "0") == 0) {
        free(receipts);
        pwt_print_file_tail("emulator log", emulator_log, 20);
        pwt_fail(__FILE__, __LINE__, "no receipt %d ms after the database came back", DELIVERY_TIMEOUT_MS);
    }
    free(receipts);
    /* Give a late redelivery (one answered 503 just before the restart) the chance to show up twice. */
    pwt_sleep_ms(1500);

    char *sql = receipts_sql("projects/" PROJECT "/subscriptions/nacked-push", published_from);
    char *want = fill("projects/pw-test/subscriptions/nacked-push|{id}|stored|t", "id", id, NULL);
    ASSERT_PRIVATE_ROWS(sql, want);
    free(sql);
    free(want);
    ASSERT_PRIVATE_ROWS("SELECT count(*) FROM pubsub_receipts", "1");
    ASSERT_PRIVATE_ROWS("SELECT bsp_msg_id, to_phone, whatsapp_status, current_status, last_error, created_at"
                        " FROM message_logs ORDER BY bsp_msg_id COLLATE \"C\"",
                        "wamid.HBgMOTE5ODc2NTQzMjE0FQIAERgSQkFUQ0gwMDAwMDAwMDAwMDAxAA==|+919876543214"
                        "|{\"sent\": \"2024-03-05T21:00:00Z\", \"delivered\": \"2024-03-05T21:00:03Z\"}|delivered|NULL"
                        "|2024-03-05 21:00:00+00\n"
                        "wamid.HBgMOTE5ODc2NTQzMjE1FQIAERgSQkFUQ0gwMDAwMDAwMDAwMDAyAA==|+919876543215"
                        "|{\"sent\": \"2024-03-05T21:00:01Z\"}|sent|NULL|2024-03-05 21:00:01+00");
    want = fill("wamid.HBgMOTE5ODc2NTQzMjE0FQIAERgSQkFUQ0gwMDAwMDAwMDAwMDAxAA==|delivered|2024-03-05 21:00:03+00"
                "|919876543214|106540352242922|NULL|NULL|NULL|{id}\n"
                "wamid.HBgMOTE5ODc2NTQzMjE0FQIAERgSQkFUQ0gwMDAwMDAwMDAwMDAxAA==|sent|2024-03-05 21:00:00+00"
                "|919876543214|106540352242922|NULL"
                "|{\"type\": \"regular\", \"billable\": true, \"category\": \"marketing\", \"pricing_model\": \"PMP\"}|NULL|{id}\n"
                "wamid.HBgMOTE5ODc2NTQzMjE1FQIAERgSQkFUQ0gwMDAwMDAwMDAwMDAyAA==|sent|2024-03-05 21:00:01+00"
                "|919876543215|106540352242922|NULL|NULL|NULL|{id}",
                "id", id, NULL);
    ASSERT_PRIVATE_ROWS("SELECT bsp_msg_id, status, occurred_at, recipient_id, phone_number_id, conversation, pricing,"
                        " errors, pubsub_message_id FROM status_events ORDER BY bsp_msg_id COLLATE \"C\", status COLLATE \"C\"",
                        want);
    free(want);
    ASSERT_PRIVATE_ROWS("SELECT count(*) FROM dead_letters", "0");

    pwt_worker_stop(&worker);
    pwt_cluster_stop(&cluster);
    printf("# nack/redelivery test: %lld ms in all\n", pwt_now_ms() - t0);
}

/* ---- group setup -------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    emulator_path = getenv("PWT_PUBSUB_EMULATOR") ? getenv("PWT_PUBSUB_EMULATOR") : EMULATOR_DEFAULT;
    emulator_installed = access(emulator_path, X_OK) == 0;
    if (!emulator_installed) {
        printf("# %s (%s not found)\n", NOT_INSTALLED, emulator_path);
        return 0;
    }

    atexit(cleanup);
    pwt_on_fatal_signals(on_fatal_signal);

    /* 0755: as root, scripts/dev-db runs the cluster as `postgres`, who must reach work_dir/pg. */
    if (pwt_make_work_dir("pwt-emu", work_dir, sizeof work_dir) != 0)
        return -1;
    snprintf(emulator_dir, sizeof emulator_dir, "%s/emulator", work_dir);
    snprintf(emulator_log, sizeof emulator_log, "%s/emulator.log", work_dir);
    char pg_dir[128], pg_cmd_log[128];
    snprintf(pg_dir, sizeof pg_dir, "%s/pg", work_dir);
    snprintf(pg_cmd_log, sizeof pg_cmd_log, "%s/pg.log", work_dir);
    if (pwt_cluster_init(&cluster, pg_dir, pg_cmd_log) != 0)
        return -1;

    if (pwt_suite_start("emulator", NULL, NULL) != 0)
        return -1;
    if (start_emulator() != 0)
        fprintf(stderr, "emulator_test: the Pub/Sub emulator at %s did not start\n", emulator_path);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    cleanup();
    if (emulator_installed)
        pwt_db_drop();
    return 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_emulator_wrapped_pushes_in_any_order_become_exact_rows_and_receipts),
        cmocka_unit_test(test_emulator_unwrapped_push_gets_its_receipt_from_the_metadata_headers),
        cmocka_unit_test(test_emulator_redelivers_a_push_nacked_with_503_while_the_database_is_down_into_one_set_of_rows),
    };
    return cmocka_run_group_tests_name("emulator", tests, group_setup, group_teardown);
}
