/*
 * Hostile-input tests: malformed, oversized, mistyped and odd HTTP traffic through the real worker
 * into a real PostgreSQL. The promise checked by every test: a clear answer (exact HTTP status),
 * nothing lost (stored rows or a dead letter holding the raw body, exactly), no crash, no hang;
 * and after each test the worker is alive and still stores a normal push (per-test teardown).
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "tests/integration/harness.h"
#include "tests/integration/util.h"

/* clang-format off: expected rows are laid out by hand. */

#define SUB "projects/acme-prod/subscriptions/hostile-push"
#define PUBLISH_TIME "2024-03-06T10:00:00.250Z"
#define PNID "106540352242922"
#define PARAMS PWT_LIST
#define FFFD "\xEF\xBF\xBD" /* U+FFFD in UTF-8; end the literal after it ("\xBD" "b") */

#define ASSERT_EMPTY(table) pwt_assert_rows("SELECT t::text FROM " table " t", "")
/* No dead letter (printing their reasons, not their bodies, when there are some). */
#define ASSERT_NO_DEAD_LETTERS() pwt_assert_rows("SELECT coalesce(message_id, 'NULL'), reason FROM dead_letters ORDER BY id", "")
#define Q_RECEIPTS "SELECT subscription, message_id, outcome FROM pubsub_receipts ORDER BY subscription COLLATE \"C\", message_id COLLATE \"C\""
#define Q_EVENTS "SELECT bsp_msg_id, status, occurred_at, recipient_id FROM status_events ORDER BY bsp_msg_id COLLATE \"C\", status COLLATE \"C\""
#define Q_LOGS "SELECT bsp_msg_id, to_phone, whatsapp_status, current_status FROM message_logs ORDER BY bsp_msg_id COLLATE \"C\""
#define Q_INBOUND "SELECT wa_msg_id, msg_type, body FROM inbound_messages ORDER BY wa_msg_id COLLATE \"C\""

#define W_GOOD "wamid.HBgMOTE5ODc2NTQzMjk5FQIAERgSSE9TVElMRTAwMDAwMDAwMDAxAA=="
#define W_IN "wamid.HBgMOTE5ODEyMzQwMDk5FQIAEhggSE9TVElMRUlOQk9VTkQwMDAwMDAxAA=="
#define W_CANARY "wamid.HBgMOTE5ODc2NTQzMjk5FQIAERgSQ0FOQVJZMDAwMDAwMDAwMDAxAA=="

/* One good status, and what it becomes. */
#define GOOD_STATUS "{\"id\":\"" W_GOOD "\",\"status\":\"sent\",\"timestamp\":\"1709679600\",\"recipient_id\":\"919876543299\"}"
#define GOOD_EVENT W_GOOD "|sent|2024-03-05 23:00:00+00|919876543299"
#define GOOD_LOG W_GOOD "|+919876543299|{\"sent\": \"2024-03-05T23:00:00Z\"}|sent"

static pwt_worker_t worker; /* the worker most tests talk to */
static int canary_seq;

/* ---- helpers --------------------------------------------------------------------------------- */

/* A Meta webhook whose one "messages" change holds `statuses` (JSON text of the array, as is). */
static char *statuses_webhook(const char *statuses)
{
    char *members = pwt_xasprintf("\"statuses\":%s", statuses);
    char *wh = pwt_meta_webhook(members);
    free(members);
    return wh;
}

/* A Meta webhook with one inbound message (JSON text of the message object, as is) from 919812340099. */
static char *message_webhook(const char *message)
{
    char *members = pwt_xasprintf("\"contacts\":[{\"profile\":{\"name\":\"Asha\"},\"wa_id\":\"919812340099\"}],"
                                  "\"messages\":[%s]",
                                  message);
    char *wh = pwt_meta_webhook(members);
    free(members);
    return wh;
}

/* An inbound text message whose text.body is `json_text` (already JSON-escaped, without quotes). */
static char *text_message_webhook(const char *json_text)
{
    char *msg = pwt_xasprintf("{\"from\":\"919812340099\",\"id\":\"" W_IN "\",\"timestamp\":\"1709679600\",\"type\":\"text\","
                          "\"text\":{\"body\":\"%s\"}}",
                          json_text);
    char *wh = message_webhook(msg);
    free(msg);
    return wh;
}

static char *wrap(const void *payload, size_t len, const char *message_id)
{
    return pwt_wrap(payload, len, message_id, SUB, PUBLISH_TIME);
}

static long post_to(const pwt_worker_t *w, const void *body, size_t len)
{
    return pwt_post(w, "/", body, len, NULL, NULL);
}

static long post(const void *body, size_t len)
{
    return post_to(&worker, body, len);
}

/* The push of one good status (GOOD_STATUS) under message_id, wrapped: malloc'd. */
static char *good_push_body(const char *message_id)
{
    char *payload = statuses_webhook("[" GOOD_STATUS "]");
    char *body = wrap(payload, strlen(payload), message_id);
    free(payload);
    return body;
}

/* Wraps payload (len bytes) under message_id and posts it to the main worker. */
static long push(const void *payload, size_t len, const char *message_id)
{
    return pwt_push(&worker, payload, len, message_id, SUB, PUBLISH_TIME);
}

/* The envelope of `wrap` with `member` (e.g. ",\"note\":1") inserted before its final '}'. */
static char *wrap_with_member(const char *payload, const char *message_id, const void *member, size_t member_len,
                              size_t *out_len)
{
    char *w = wrap(payload, strlen(payload), message_id);
    size_t n = strlen(w);
    char *out = pwt_xmalloc(n + member_len + 1);
    memcpy(out, w, n - 1);
    memcpy(out + n - 1, member, member_len);
    out[n - 1 + member_len] = '}';
    out[n + member_len] = '\0';
    *out_len = n + member_len;
    free(w);
    return out;
}

/*
 * Asserts that dead_letters holds exactly one row: (subscription, message_id) as given ("NULL" for
 * SQL NULL), a reason that starts with reason_prefix and contains `contains` ("" for anything),
 * and the raw request body byte for byte.
 */
#define assert_one_dead_letter(body, len, sub, mid, prefix, contains) \
    assert_dead_letter_at(__FILE__, __LINE__, (body), (len), (sub), (mid), (prefix), (contains))
static void assert_dead_letter_at(const char *file, int line, const void *body, size_t len, const char *sub,
                                  const char *mid, const char *prefix, const char *contains)
{
    char *h = pwt_hex(body, len);
    char *expected = pwt_xasprintf("%s|%s|ok|t", sub, mid);
    pwt__assert_rows(file, line,
                     "SELECT coalesce(subscription, 'NULL'), coalesce(message_id, 'NULL'),"
                     " CASE WHEN starts_with(reason, $1) AND position($2 in reason) > 0 THEN 'ok' ELSE reason END,"
                     " body = decode($3, 'hex') FROM dead_letters ORDER BY id",
                     PARAMS(prefix, contains, h), expected);
    free(expected);
    free(h);
}

#define assert_receipt(mid, outcome) pwt_assert_rows(Q_RECEIPTS, SUB "|" mid "|" outcome)

static void assert_no_data_rows(void)
{
    ASSERT_EMPTY("message_logs");
    ASSERT_EMPTY("status_events");
    ASSERT_EMPTY("inbound_messages");
    ASSERT_EMPTY("contacts");
}

static void assert_nothing_written(void)
{
    assert_no_data_rows();
    ASSERT_EMPTY("pubsub_receipts");
    ASSERT_NO_DEAD_LETTERS();
}

/* The one good status of GOOD_STATUS, stored under message id mid, and nothing else but `dead` dead letters. */
static void assert_good_status_stored(const char *mid, long long dead)
{
    pwt_assert_rows(Q_EVENTS, GOOD_EVENT);
    pwt_assert_rows(Q_LOGS, GOOD_LOG);
    char *receipt = pwt_xasprintf(SUB "|%s|stored", mid);
    pwt_assert_rows(Q_RECEIPTS, receipt);
    free(receipt);
    ASSERT_EMPTY("inbound_messages");
    assert_int_equal(pwt_scalar_int("SELECT count(*) FROM dead_letters"), dead);
}

/* A wrapped push whose payload is `payload`, dead-lettered as a whole under message id mid. */
static void check_payload_dead_lettered(const char *payload, size_t len, const char *mid, const char *prefix,
                                        const char *contains)
{
    char *body = wrap(payload, len, mid);
    pwt_assert_status(post(body, strlen(body)), 204);
    assert_one_dead_letter(body, strlen(body), SUB, mid, prefix, contains);
    char *receipt = pwt_xasprintf(SUB "|%s|dead_letter", mid);
    pwt_assert_rows(Q_RECEIPTS, receipt);
    free(receipt);
    assert_no_data_rows();
    free(body);
}

/* A push of the statuses array `statuses` (JSON text) under mid, holding GOOD_STATUS and items that must be rejected: 204,
 * one dead letter (reason prefix), the good status stored. */
static void check_good_status_kept_beside_rejected(const char *statuses, const char *mid, const char *prefix)
{
    char *payload = statuses_webhook(statuses);
    char *body = wrap(payload, strlen(payload), mid);
    pwt_assert_status(post(body, strlen(body)), 204);
    assert_one_dead_letter(body, strlen(body), SUB, mid, prefix, "");
    assert_good_status_stored(mid, 1);
    free(body);
    free(payload);
}

/* A body (len bytes) posted to "/" that must be answered 204 and kept as one dead letter without ids (reason: prefix, then
 * contains), with no receipt and no data rows. */
static void check_body_dead_lettered_without_ids(const void *body, size_t len, const char *prefix, const char *contains)
{
    pwt_assert_status(post(body, len), 204);
    assert_one_dead_letter(body, len, "NULL", "NULL", prefix, contains);
    ASSERT_EMPTY("pubsub_receipts");
    assert_no_data_rows();
}

/* A webhook whose statuses are `statuses` (text that is no JSON), pushed under mid: dead-lettered as "payload: invalid JSON". */
static void check_statuses_invalid_json(const char *statuses, const char *mid)
{
    char *payload = statuses_webhook(statuses);
    check_payload_dead_lettered(payload, strlen(payload), mid, "payload: invalid JSON at offset ", "");
    free(payload);
}

/* One status item (JSON object text) that must be rejected: kept as a dead letter, nothing stored. */
static void check_status_item_rejected(const char *item, const char *mid, const char *why)
{
    char *arr = pwt_xasprintf("[%s]", item);
    char *payload = statuses_webhook(arr);
    char *body = wrap(payload, strlen(payload), mid);
    pwt_assert_status(post(body, strlen(body)), 204);
    char *prefix = pwt_xasprintf("rejected 1 item(s): entry[0].changes[0].value.statuses[0].%s", why);
    assert_one_dead_letter(body, strlen(body), SUB, mid, prefix, "");
    /* Behaviour chosen by observation: a webhook whose every item was rejected has receipt "ignored". */
    char *receipt = pwt_xasprintf(SUB "|%s|ignored", mid);
    pwt_assert_rows(Q_RECEIPTS, receipt);
    assert_no_data_rows();
    free(receipt);
    free(prefix);
    free(body);
    free(payload);
    free(arr);
}

/* A status item of W_GOOD, "sent", whose "timestamp" member is each case's JSON text (as is), must be rejected for the
 * case's reason (after "statuses[0]."); the tables are emptied between cases. */
typedef struct {
    const char *timestamp;
    const char *why;
} timestamp_case_t;

#define check_timestamps_rejected(mid, ...)                                                                                        \
    check_timestamp_cases_rejected((mid), (const timestamp_case_t[]){__VA_ARGS__},                                                 \
                                   sizeof((const timestamp_case_t[]){__VA_ARGS__}) / sizeof(timestamp_case_t))
static void check_timestamp_cases_rejected(const char *mid, const timestamp_case_t *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            pwt_truncate_all();
        fprintf(stderr, "  case: timestamp %s\n", cases[i].timestamp);
        char *item = pwt_xasprintf("{\"id\":\"" W_GOOD "\",\"status\":\"sent\",\"timestamp\":%s}", cases[i].timestamp);
        check_status_item_rejected(item, mid, cases[i].why);
        free(item);
    }
}

/* ---- raw HTTP/1.x over a socket (what libcurl will not send) ------------------------------------ */

typedef struct {
    int fd;
    char *buf; /* received, not yet consumed */
    size_t len, cap;
    int eof; /* the peer closed (FIN or RST) */
} raw_conn_t;

typedef struct {
    int status;     /* from the status line; -1 when no whole response came */
    char *head;     /* status line and headers, NUL-terminated */
    char *body;     /* NUL-terminated */
    size_t body_len;
} raw_resp_t;

static void raw_connect(raw_conn_t *c, int port)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c->fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        pwt_fail(__FILE__, __LINE__, "connect to port %d: %s", port, strerror(errno));
}

static void raw_close(raw_conn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}

/* Reads what is there (waiting up to timeout_ms for something). 1 read, 0 EOF/reset, -1 timeout. */
static int raw_fill(raw_conn_t *c, int timeout_ms)
{
    if (c->eof)
        return 0;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int r = poll(&p, 1, timeout_ms);
    if (r == 0)
        return -1;
    if (c->cap - c->len < 65536) {
        c->cap = c->cap ? c->cap * 2 : 131072;
        c->buf = realloc(c->buf, c->cap + 1);
        assert_non_null(c->buf);
    }
    ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (n <= 0) {
        c->eof = 1;
        return 0;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    return 1;
}

/* Sends everything, reading whatever comes back meanwhile (so neither side can block the other).
   Returns 0, or -1 when the peer closed or reset before taking it all (a normal way to refuse). */
static int raw_send(raw_conn_t *c, const void *data, size_t n)
{
    const char *p = data;
    long long deadline = pwt_now_ms() + 20000;
    while (n > 0) {
        if (c->eof || pwt_now_ms() > deadline)
            return -1;
        struct pollfd pf = {.fd = c->fd, .events = POLLOUT | POLLIN};
        if (poll(&pf, 1, 1000) <= 0)
            continue;
        if (pf.revents & POLLIN)
            raw_fill(c, 0);
        if (pf.revents & (POLLERR | POLLHUP)) {
            raw_fill(c, 0);
            return -1;
        }
        if (pf.revents & POLLOUT) {
            ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (k < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    continue;
                return -1;
            }
            p += k;
            n -= (size_t)k;
        }
    }
    return 0;
}

static int raw_send_str(raw_conn_t *c, const char *s)
{
    return raw_send(c, s, strlen(s));
}

/* Reads one whole response (is_head: the answer to HEAD has no body). 0, or -1 when none came in time. */
static int raw_read_response(raw_conn_t *c, int is_head, int timeout_ms, raw_resp_t *r)
{
    memset(r, 0, sizeof *r);
    r->status = -1;
    long long deadline = pwt_now_ms() + timeout_ms;
    for (;;) {
        char *end = c->len > 0 ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (end != NULL) {
            size_t head_len = (size_t)(end - c->buf) + 4;
            int status = 0;
            if (sscanf(c->buf, "HTTP/1.%*d %d", &status) != 1)
                return -1;
            size_t body_len = 0;
            if (!is_head && status != 204 && status != 304 && status / 100 != 1) {
                pwt_response_t tmp = {.headers = c->buf};
                char save = c->buf[head_len];
                c->buf[head_len] = '\0';
                char *cl = pwt_response_header(&tmp, "Content-Length");
                c->buf[head_len] = save;
                body_len = cl != NULL ? strtoul(cl, NULL, 10) : 0;
                free(cl);
            }
            if (c->len >= head_len + body_len) {
                r->status = status;
                r->head = pwt_xmalloc(head_len + 1);
                memcpy(r->head, c->buf, head_len);
                r->head[head_len] = '\0';
                r->body = pwt_xmalloc(body_len + 1);
                memcpy(r->body, c->buf + head_len, body_len);
                r->body[body_len] = '\0';
                r->body_len = body_len;
                memmove(c->buf, c->buf + head_len + body_len, c->len - head_len - body_len);
                c->len -= head_len + body_len;
                return 0;
            }
        }
        if (c->eof)
            return -1; /* closed before a whole response */
        long long left = deadline - pwt_now_ms();
        if (left <= 0 || raw_fill(c, (int)left) < 0)
            return -1;
    }
}

static void raw_resp_free(raw_resp_t *r)
{
    free(r->head);
    free(r->body);
    r->head = r->body = NULL;
}

static char *raw_header(const raw_resp_t *r, const char *name)
{
    pwt_response_t tmp = {.headers = r->head};
    return pwt_response_header(&tmp, name);
}

/* 1 when the server closes the connection within timeout_ms (after any pending data), else 0. */
static int raw_closed_within(raw_conn_t *c, int timeout_ms)
{
    long long deadline = pwt_now_ms() + timeout_ms;
    while (!c->eof) {
        long long left = deadline - pwt_now_ms();
        if (left <= 0 || raw_fill(c, (int)left) < 0)
            return 0;
    }
    return 1;
}

/* One request on a new connection; the one response it gets (status -1 when none). */
static void raw_exchange(int port, const void *req, size_t len, int is_head, raw_resp_t *r, int *closed)
{
    raw_conn_t c;
    raw_connect(&c, port);
    raw_send(&c, req, len);
    raw_read_response(&c, is_head, 10000, r);
    if (closed != NULL)
        *closed = raw_closed_within(&c, 2000);
    raw_close(&c);
}

/* req (NUL-terminated) on a new connection must be answered 204 and store the good status pushed under mid. */
static void check_raw_push_stored(const char *req, const char *mid)
{
    raw_resp_t r;
    raw_exchange(worker.port, req, strlen(req), 0, &r, NULL);
    pwt_assert_status(r.status, 204);
    assert_good_status_stored(mid, 0);
    raw_resp_free(&r);
}

/* req (NUL-terminated) on a new connection must be answered 400 and the connection closed, nothing written. */
static void check_raw_request_refused(const char *req)
{
    raw_resp_t r;
    int closed = 0;
    raw_exchange(worker.port, req, strlen(req), 0, &r, &closed);
    pwt_assert_status(r.status, 400);
    assert_true(closed);
    assert_nothing_written();
    raw_resp_free(&r);
}

/* ---- fixtures (cmocka) ------------------------------------------------------------------------ */

/* After each test: the worker is alive and still answers a normal push with 204 and stores it. */
static int alive_and_still_serving(void **state)
{
    (void)state;
    if (pwt_worker_check_alive(&worker) != 0)
        return -1;
    char mid[32];
    snprintf(mid, sizeof mid, "canary-%d", ++canary_seq);
    char *payload = statuses_webhook("[{\"id\":\"" W_CANARY "\",\"status\":\"read\",\"timestamp\":\"1709679600\"}]");
    char *body = wrap(payload, strlen(payload), mid);
    long status = post(body, strlen(body));
    free(body);
    free(payload);
    if (status != 204) {
        fprintf(stderr, "after this test a normal push was answered %ld, not 204\n", status);
        pwt_worker_print_log(&worker, 60);
        return -1;
    }
    char *outcome = pwt_rows_p("SELECT outcome FROM pubsub_receipts WHERE message_id = $1", PARAMS(mid));
    char *current = pwt_rows("SELECT current_status FROM message_logs WHERE bsp_msg_id = '" W_CANARY "'");
    int ok = strcmp(outcome, "stored") == 0 && strcmp(current, "read") == 0;
    if (!ok)
        fprintf(stderr, "after this test a normal push was not stored (receipt '%s', status '%s')\n", outcome, current);
    free(outcome);
    free(current);
    return ok ? 0 : -1;
}

/* ---- truncated and invalid JSON ------------------------------------------------------------- */

static void truncated_envelope_is_dead_lettered_without_ids(void **state)
{
    (void)state;
    char *body = good_push_body("1001");
    size_t len = strlen(body) - 10; /* cut inside the final members: still starts {"message":{ */
    check_body_dead_lettered_without_ids(body, len, "envelope: invalid JSON at offset ", "unexpected end of data");
    free(body);
}

static void truncated_payload_is_dead_lettered_under_its_message_id(void **state)
{
    (void)state;
    char *payload = statuses_webhook("[" GOOD_STATUS "]");
    check_payload_dead_lettered(payload, strlen(payload) - 5, "1002", "payload: invalid JSON at offset ",
                                "unexpected end of data");
    free(payload);
}

static void payload_with_single_quotes_is_invalid_json(void **state)
{
    (void)state;
    check_statuses_invalid_json("[{'id':'" W_GOOD "','status':'sent','timestamp':'1709679600'}]", "1011");
}

static void payload_with_trailing_comma_is_invalid_json(void **state)
{
    (void)state;
    check_statuses_invalid_json("[" GOOD_STATUS ",]", "1012");
}

/* NaN is no JSON (RFC 8259): the push must be a "payload: invalid JSON" dead letter, not stored as valid. */
static void payload_with_nan_is_invalid_json(void **state)
{
    (void)state;
    check_statuses_invalid_json("[{\"id\":\"" W_GOOD "\",\"status\":\"sent\",\"timestamp\":\"1709679600\","
                                     "\"recipient_id\":\"919876543299\",\"score\":NaN}]", "1013");
}

static void payload_with_infinity_is_invalid_json(void **state)
{
    (void)state;
    check_statuses_invalid_json("[{\"id\":\"" W_GOOD "\",\"status\":\"sent\",\"timestamp\":Infinity}]", "1014");
}

static void payload_with_comments_is_invalid_json(void **state)
{
    (void)state;
    char *good = statuses_webhook("[" GOOD_STATUS "]");
    char *block = pwt_xasprintf("/* hi */%s", good);
    char *inner = statuses_webhook("[/* hi */" GOOD_STATUS "]");
    char *line = pwt_xasprintf("%s // bye", good);
    const char *const payloads[] = {block, inner, line};
    for (int i = 0; i < 3; i++) {
        pwt_truncate_all();
        check_payload_dead_lettered(payloads[i], strlen(payloads[i]), "1015", "payload: invalid JSON at offset ", "");
    }
    free(good);
    free(block);
    free(inner);
    free(line);
}

/* An envelope (starting {"message":{) with a syntax error after the message: dead letter, ids salvaged. */
static void check_bad_envelope_member(const char *member, const char *mid)
{
    char *payload = statuses_webhook("[" GOOD_STATUS "]");
    size_t len;
    char *body = wrap_with_member(payload, mid, member, strlen(member), &len);
    pwt_assert_status(post(body, len), 204);
    assert_one_dead_letter(body, len, SUB, mid, "envelope: invalid JSON at offset ", "");
    char *receipt = pwt_xasprintf(SUB "|%s|dead_letter", mid);
    pwt_assert_rows(Q_RECEIPTS, receipt);
    assert_no_data_rows();
    free(receipt);
    free(body);
    free(payload);
}

static void envelope_with_single_quotes_is_dead_lettered(void **state)
{
    (void)state;
    check_bad_envelope_member(",'note':'x'", "1021");
}

static void envelope_with_trailing_comma_is_dead_lettered(void **state)
{
    (void)state;
    check_bad_envelope_member(",", "1022");
}

static void envelope_with_nan_is_dead_lettered(void **state)
{
    (void)state;
    check_bad_envelope_member(",\"deliveryAttempt\":NaN", "1023");
}

static void envelope_with_comment_is_dead_lettered(void **state)
{
    (void)state;
    check_bad_envelope_member(",/* note */\"x\":1", "1024");
}

/* ---- nesting ----------------------------------------------------------------------------------- */

static char *nested_arrays(size_t depth)
{
    char *s = pwt_xmalloc(2 * depth + 1);
    memset(s, '[', depth);
    memset(s + depth, ']', depth);
    s[2 * depth] = '\0';
    return s;
}

static void envelope_nested_10000_deep_is_dead_lettered_as_too_deep(void **state)
{
    (void)state;
    char *deep = nested_arrays(10000);
    char *member = pwt_xasprintf(",\"attributes_extra\":%s", deep);
    char *payload = statuses_webhook("[" GOOD_STATUS "]");
    size_t len;
    char *body = wrap_with_member(payload, "1101", member, strlen(member), &len);
    /* The salvage parser refuses the depth too: no ids, no receipt. */
    check_body_dead_lettered_without_ids(body, len, "envelope: nesting too deep", "");
    free(body);
    free(payload);
    free(member);
    free(deep);
}

static void payload_nested_10000_deep_is_dead_lettered_as_too_deep(void **state)
{
    (void)state;
    char *deep = nested_arrays(10000);
    char *payload = pwt_xasprintf("{\"object\":\"whatsapp_business_account\",\"entry\":%s}", deep);
    check_payload_dead_lettered(payload, strlen(payload), "1102", "payload: nesting too deep", "");
    free(payload);
    free(deep);
}

/* ---- size limits ------------------------------------------------------------------------------- */

/* A valid push of GOOD_STATUS padded with JSON whitespace to exactly len bytes. */
static char *good_push_of_size(size_t len, const char *mid)
{
    return pwt_pad_json(good_push_body(mid), len);
}

static void body_over_max_body_bytes_is_413_and_writes_nothing(void **state)
{
    (void)state;
    static pwt_worker_t small; /* static: the harness tracks it while it runs */
    assert_int_equal(pwt_worker_start(&small, PARAMS("MAX_BODY_BYTES=65536", "WORKER_THREADS=1")), 0);

    char *over = good_push_of_size(65537, "1201");
    pwt_assert_status(post_to(&small, over, 65537), 413);
    assert_nothing_written();

    /* The same over-limit body, chunked (no Content-Length to refuse up front). */
    raw_conn_t c;
    raw_resp_t r;
    raw_connect(&c, small.port);
    raw_send_str(&c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
    char chunk_head[32];
    for (size_t off = 0; off < 65537; off += 16384) {
        size_t n = 65537 - off < 16384 ? 65537 - off : 16384;
        snprintf(chunk_head, sizeof chunk_head, "%zx\r\n", n);
        if (raw_send_str(&c, chunk_head) != 0 || raw_send(&c, over + off, n) != 0 || raw_send_str(&c, "\r\n") != 0)
            break;
    }
    raw_send_str(&c, "0\r\n\r\n");
    assert_int_equal(raw_read_response(&c, 0, 10000, &r), 0);
    pwt_assert_status(r.status, 413);
    raw_resp_free(&r);
    raw_close(&c);
    assert_nothing_written();

    /*
     * A client that goes on sending the over-limit body (Pub/Sub sends the whole body before it
     * reads) still gets the 413: the worker reads and drops the rest rather than closing with it
     * unread, which makes the kernel reset the connection under the client's feet (curl exit 55,
     * no status, in a CI run under valgrind). The pause lets the answer come first.
     */
    const size_t whole = 4u << 20;
    char *x = pwt_xmalloc(whole);
    memset(x, 'x', whole);
    raw_connect(&c, small.port);
    char *head = pwt_xasprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n", whole);
    assert_int_equal(send(c.fd, head, strlen(head), MSG_NOSIGNAL), (ssize_t)strlen(head));
    size_t sent = 0;
    int send_errno = 0;
    for (int part = 0; part < 2 && send_errno == 0; part++) {
        size_t upto = part == 0 ? 16384 : whole;
        while (sent < upto) {
            ssize_t k = send(c.fd, x + sent, upto - sent, MSG_NOSIGNAL);
            if (k < 0) {
                send_errno = errno;
                break;
            }
            sent += (size_t)k;
        }
        usleep(300 * 1000);
    }
    if (send_errno != 0)
        pwt_fail(__FILE__, __LINE__, "the worker cut the body off after %zu of %zu bytes (%s) instead of reading the rest", sent,
                 whole, strerror(send_errno));
    assert_int_equal(raw_read_response(&c, 0, 10000, &r), 0);
    pwt_assert_status(r.status, 413);
    raw_resp_free(&r);
    raw_close(&c);
    free(head);
    free(x);
    assert_nothing_written();

    char *at_limit = good_push_of_size(65536, "1202");
    pwt_assert_status(post_to(&small, at_limit, 65536), 204);
    assert_good_status_stored("1202", 0);
    assert_true(pwt_worker_alive(&small));
    assert_int_equal(pwt_worker_stop(&small), 0);
    free(over);
    free(at_limit);
}

/* ---- base64 ------------------------------------------------------------------------------------ */

static void check_bad_data(const char *data, const char *mid, const char *prefix)
{
    char *body = pwt_xasprintf("{\"message\":{\"data\":\"%s\",\"messageId\":\"%s\",\"message_id\":\"%s\","
                           "\"publishTime\":\"" PUBLISH_TIME "\"},\"subscription\":\"" SUB "\"}",
                           data, mid, mid);
    pwt_assert_status(post(body, strlen(body)), 204);
    assert_one_dead_letter(body, strlen(body), SUB, mid, prefix, "");
    char *receipt = pwt_xasprintf(SUB "|%s|dead_letter", mid);
    pwt_assert_rows(Q_RECEIPTS, receipt);
    assert_no_data_rows();
    free(receipt);
    free(body);
}

static void base64_with_bad_character_is_dead_lettered(void **state)
{
    (void)state;
    char *payload = statuses_webhook("[" GOOD_STATUS "]");
    char *b64 = pwt_base64(payload, strlen(payload));
    b64[8] = '!';
    check_bad_data(b64, "1301", "envelope: message.data: invalid base64 character '!' at 8");
    pwt_truncate_all();
    b64[8] = '-'; /* base64url's 62 is not standard base64 */
    check_bad_data(b64, "1301", "envelope: message.data: invalid base64 character '-' at 8");
    free(b64);
    free(payload);
}

static void base64_with_bad_length_is_dead_lettered(void **state)
{
    (void)state;
    char *payload = statuses_webhook("[" GOOD_STATUS "]");
    char *b64 = pwt_base64(payload, strlen(payload));
    size_t n = strlen(b64);
    while (n > 0 && b64[n - 1] == '=')
        n--;
    if (n % 4 == 0)
        n--; /* some length that is not a multiple of 4 */
    b64[n] = '\0';
    char *prefix = pwt_xasprintf("envelope: message.data: invalid base64 length %zu", n);
    check_bad_data(b64, "1302", prefix);
    free(prefix);
    free(b64);
    free(payload);
}

static void base64_with_nonzero_padding_bits_is_dead_lettered(void **state)
{
    (void)state;
    /* "e30=" is "{}"; "e31=" has bits set past the last byte: another spelling of the same bytes. */
    check_bad_data("e31=", "1303", "envelope: message.data: non-canonical base64");
    pwt_truncate_all();
    check_bad_data("QR==", "1303", "envelope: message.data: non-canonical base64");
}

static void base64_with_whitespace_or_newlines_is_dead_lettered(void **state)
{
    (void)state;
    char *payload = statuses_webhook("[" GOOD_STATUS "]");
    char *b64 = pwt_base64(payload, strlen(payload));
    size_t n = strlen(b64);
    /* MIME-style line breaks (as JSON escapes), a space, a tab: each anywhere is an error. */
    const char *const seps[] = {"\\n", "\\r\\n", " ", "\\t"};
    for (int i = 0; i < 4; i++) {
        pwt_truncate_all();
        char *broken = pwt_xasprintf("%.76s%s%s", b64, seps[i], b64 + (n > 76 ? 76 : n));
        check_bad_data(broken, "1304", "envelope: message.data: invalid base64");
        free(broken);
    }
    free(b64);
    free(payload);
}

/* ---- invalid UTF-8 ------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    const char *bytes;
} BAD_UTF8[] = {
    {"overlong '/'", "\xC0\xAF"},
    {"overlong NUL", "\xC0\x80"},
    {"encoded surrogate", "\xED\xA0\x80"},
    {"truncated 3-byte sequence", "\xE2\x82"},
    {"lone continuation", "\x80"},
    {"0xFF", "\xFF"},
    {"above U+10FFFF", "\xF4\x90\x80\x80"},
};
#define N_BAD_UTF8 (sizeof BAD_UTF8 / sizeof BAD_UTF8[0])

static void envelope_with_invalid_utf8_is_dead_lettered(void **state)
{
    (void)state;
    char *payload = statuses_webhook("[" GOOD_STATUS "]");
    for (size_t i = 0; i < N_BAD_UTF8; i++) {
        pwt_truncate_all();
        char *member = pwt_xasprintf(",\"note\":\"x%sy\"", BAD_UTF8[i].bytes);
        size_t len;
        char *body = wrap_with_member(payload, "1401", member, strlen(member), &len);
        fprintf(stderr, "  case: %s\n", BAD_UTF8[i].name);
        pwt_assert_status(post(body, len), 204);
        assert_one_dead_letter(body, len, SUB, "1401", "envelope: invalid JSON at offset ", "invalid UTF-8");
        assert_receipt("1401", "dead_letter");
        assert_no_data_rows();
        free(body);
        free(member);
    }
    free(payload);
}

/*
 * Invalid UTF-8 inside the very ids the dead letter and receipt are keyed by. Expected: 204 and the
 * raw push in dead_letters (whatever the id columns hold), nothing else. A 503 here is a poison
 * message: Pub/Sub redelivers it forever and it is never kept.
 */
static void envelope_ids_with_invalid_utf8_are_dead_lettered_not_refused(void **state)
{
    (void)state;
    char *w = good_push_body("1402");
    const char *const where[] = {"\"messageId\":\"", "\"subscription\":\""};
    for (int k = 0; k < 2; k++) {
        pwt_truncate_all();
        const char *at = strstr(w, where[k]);
        assert_non_null(at);
        size_t cut = (size_t)(at - w) + strlen(where[k]);
        char *body = pwt_xasprintf("%.*s\xC0\xAF%s", (int)cut, w, w + cut);
        size_t len = strlen(body);
        fprintf(stderr, "  case: invalid UTF-8 in %s\n", where[k]);
        pwt_assert_status(post(body, len), 204);
        char *h = pwt_hex(body, len);
        pwt_assert_rows_p("SELECT starts_with(reason, 'envelope: '), body = decode($1, 'hex') FROM dead_letters", PARAMS(h),
                          "t|t");
        assert_no_data_rows();
        free(h);
        free(body);
    }
    free(w);
}

static void unwrapped_message_id_header_with_invalid_utf8_is_dead_lettered_not_refused(void **state)
{
    (void)state;
    char *payload = statuses_webhook("[" GOOD_STATUS "]");
    char *req = pwt_xasprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          "x-goog-pubsub-message-id: 14\xFF" "03\r\nx-goog-pubsub-subscription-name: " SUB "\r\n"
                          "Content-Length: %zu\r\n\r\n%s",
                          strlen(payload), payload);
    raw_resp_t r;
    raw_exchange(worker.port, req, strlen(req), 0, &r, NULL);
    pwt_assert_status(r.status, 204);
    /* Stored, or kept as a dead letter: either way not lost, and not refused forever. */
    long long kept = pwt_scalar_int("SELECT count(*) FROM dead_letters") + pwt_scalar_int("SELECT count(*) FROM status_events");
    assert_true(kept >= 1);
    raw_resp_free(&r);
    free(req);
    free(payload);
}

static void check_payload_utf8(const char *bytes, const char *mid)
{
    char *payload = text_message_webhook("hello ");
    char *p = strstr(payload, "hello ");
    assert_non_null(p);
    char *bad = pwt_xasprintf("%.*shello %s%s", (int)(p - payload), payload, bytes, p + 6);
    check_payload_dead_lettered(bad, strlen(bad), mid, "payload: invalid JSON at offset ", "invalid UTF-8");
    free(bad);
    free(payload);
}

static void payload_with_overlong_utf8_is_dead_lettered(void **state)
{
    (void)state;
    check_payload_utf8("\xC0\xAF", "1411");
    pwt_truncate_all();
    check_payload_utf8("\xE0\x80\xAF", "1411");
}

static void payload_with_encoded_surrogate_is_dead_lettered(void **state)
{
    (void)state;
    check_payload_utf8("\xED\xA0\x80", "1412");
    pwt_truncate_all();
    check_payload_utf8("\xED\xB0\x80", "1412");
}

static void payload_with_truncated_utf8_sequence_is_dead_lettered(void **state)
{
    (void)state;
    check_payload_utf8("\xE2\x82", "1413");
    pwt_truncate_all();
    check_payload_utf8("\xF0\x9F\x98", "1413");
}

/* ---- NUL and escapes --------------------------------------------------------------------------- */

static void nul_escape_in_text_is_stored_as_fffd_and_push_kept_as_dead_letter(void **state)
{
    (void)state;
    char *payload = text_message_webhook("a\\u0000b");
    char *body = wrap(payload, strlen(payload), "1501");
    pwt_assert_status(post(body, strlen(body)), 204);
    pwt_assert_rows(Q_INBOUND, W_IN "|text|a" FFFD "b");
    pwt_assert_rows("SELECT payload->'text'->>'body' FROM inbound_messages", "a" FFFD "b");
    pwt_assert_rows("SELECT wa_id, profile_name FROM contacts", "919812340099|Asha");
    assert_one_dead_letter(body, strlen(body), SUB, "1501", "payload: ", "U+FFFD");
    assert_receipt("1501", "stored");
    ASSERT_EMPTY("status_events");
    free(body);
    free(payload);
}

/* "a\\u0000b" in JSON is the six characters \u0000 after a backslash, not a NUL: nothing to replace or report. */
static void escaped_backslash_before_u0000_is_not_a_nul(void **state)
{
    (void)state;
    char *payload = text_message_webhook("a\\\\u0000b");
    char *body = wrap(payload, strlen(payload), "1502");
    pwt_assert_status(post(body, strlen(body)), 204);
    pwt_assert_rows(Q_INBOUND, W_IN "|text|a\\u0000b");
    assert_receipt("1502", "stored");
    ASSERT_NO_DEAD_LETTERS();
    free(body);
    free(payload);
}

/*
 * A lone surrogate escape ("\ud800") names no character. The envelope parser refuses it; in a
 * payload it is replaced by U+FFFD. Expected, as for \u0000: the message stored with U+FFFD and the
 * push as it came kept in dead_letters (reason "payload: ..."), so the replacement loses nothing.
 */
static void lone_surrogate_escape_in_text_is_stored_as_fffd_and_push_kept(void **state)
{
    (void)state;
    char *payload = text_message_webhook("a\\ud800b");
    char *body = wrap(payload, strlen(payload), "1503");
    pwt_assert_status(post(body, strlen(body)), 204);
    pwt_assert_rows(Q_INBOUND, W_IN "|text|a" FFFD "b");
    assert_receipt("1503", "stored");
    assert_one_dead_letter(body, strlen(body), SUB, "1503", "payload: ", "");
    free(body);
    free(payload);
}

/* ---- wrong types ------------------------------------------------------------------------------- */

static void status_timestamp_that_is_not_a_number_is_rejected(void **state)
{
    (void)state;
    check_timestamps_rejected("1601", {"\"abc\"", "timestamp: not a Unix time"});
}

static void status_timestamp_of_wrong_type_is_rejected(void **state)
{
    (void)state;
    check_timestamps_rejected("1602", {"true", "timestamp: not a string or number"},
                              {"{\"s\":1709679600}", "timestamp: not a string or number"});
}

static void status_id_as_number_is_rejected(void **state)
{
    (void)state;
    check_status_item_rejected("{\"id\":123,\"status\":\"sent\",\"timestamp\":\"1709679600\"}", "1603", "id: not a string");
}

static void status_status_as_number_is_rejected(void **state)
{
    (void)state;
    check_status_item_rejected("{\"id\":\"" W_GOOD "\",\"status\":5,\"timestamp\":\"1709679600\"}", "1604",
                               "status: not a string");
}

static void status_recipient_id_as_number_is_rejected(void **state)
{
    (void)state;
    check_status_item_rejected(
        "{\"id\":\"" W_GOOD "\",\"status\":\"sent\",\"timestamp\":\"1709679600\",\"recipient_id\":919876543299}", "1605",
        "recipient_id: not a string");
}

static void status_conversation_as_string_is_rejected(void **state)
{
    (void)state;
    check_status_item_rejected(
        "{\"id\":\"" W_GOOD "\",\"status\":\"sent\",\"timestamp\":\"1709679600\",\"conversation\":\"marketing\"}", "1606",
        "conversation: not an object");
}

static void statuses_that_is_not_an_array_dead_letters_the_push(void **state)
{
    (void)state;
    char *payload = statuses_webhook("\"" W_GOOD "\"");
    check_payload_dead_lettered(payload, strlen(payload), "1607", "payload: entry[0].changes[0].value.statuses: not an array",
                                "");
    free(payload);
    pwt_truncate_all();
    const char *entry_string = "{\"object\":\"whatsapp_business_account\",\"entry\":\"x\"}";
    check_payload_dead_lettered(entry_string, strlen(entry_string), "1607", "payload: entry: missing or not an array", "");
}

static void one_mistyped_status_is_rejected_and_its_neighbour_stored(void **state)
{
    (void)state;
    check_good_status_kept_beside_rejected("[{\"id\":123,\"status\":\"sent\",\"timestamp\":\"1709679600\"}," GOOD_STATUS "]", "1608",
                                           "rejected 1 item(s): entry[0].changes[0].value.statuses[0].id: not a string");
}

/* ---- out-of-range times ------------------------------------------------------------------------ */

static void status_timestamp_zero_is_rejected(void **state)
{
    (void)state;
    check_timestamps_rejected("1701", {"\"0\"", "timestamp: time not after 1970-01-01T00:00:00Z"},
                              {"0", "timestamp: time not after 1970-01-01T00:00:00Z"});
}

static void status_timestamp_negative_is_rejected(void **state)
{
    (void)state;
    check_timestamps_rejected("1702", {"\"-1709679600\"", "timestamp: not a Unix time"},
                              {"-1709679600", "timestamp: time not after 1970-01-01T00:00:00Z"});
}

/* 253402300800000 ms is 10000-01-01T00:00:00Z (in seconds it would read as milliseconds: see the next test). */
static void status_timestamp_in_year_10000_is_rejected(void **state)
{
    (void)state;
    check_timestamps_rejected("1703", {"\"253402300800000\"", "timestamp: time after 9999-12-31T23:59:59Z"},
                              {"253402300800000", "timestamp: time after 9999-12-31T23:59:59Z"},
                              {"\"99999999999999999999999\"", "timestamp: time after 9999-12-31T23:59:59Z"},
                              {"1e300", "timestamp: time after 9999-12-31T23:59:59Z"});
}

/* docs/rows.md: >= 1e11 means milliseconds, so year 10000 written in seconds is read as 1978. */
static void status_timestamp_of_year_10000_in_seconds_reads_as_milliseconds(void **state)
{
    (void)state;
    char *payload = statuses_webhook("[{\"id\":\"" W_GOOD "\",\"status\":\"sent\",\"timestamp\":\"253402300800\"}]");
    pwt_assert_status(push(payload, strlen(payload), "1704"), 204);
    pwt_assert_rows(Q_EVENTS, W_GOOD "|sent|1978-01-11 21:31:40.8+00|NULL");
    assert_receipt("1704", "stored");
    ASSERT_NO_DEAD_LETTERS();
    free(payload);
}

/* ---- volume ------------------------------------------------------------------------------------- */

static void fifty_thousand_statuses_in_one_body_are_all_stored(void **state)
{
    (void)state;
    static pwt_worker_t big;
    assert_int_equal(pwt_worker_start(&big, PARAMS("MAX_BODY_BYTES=67108864", "WORKER_THREADS=1", "PUSH_DEADLINE_MS=30000",
                                                   "LOG_LEVEL=info")),
                     0);
    /* 25,000 messages x (sent, delivered): 50,000 distinct (id, status) pairs. */
    size_t cap = 50000 * 130 + 64, len = 0;
    char *arr = pwt_xmalloc(cap);
    arr[len++] = '[';
    for (int i = 0; i < 50000; i++) {
        int m = i / 2, delivered = i % 2;
        len += (size_t)snprintf(arr + len, cap - len,
                                "%s{\"id\":\"wamid.BULK%05d\",\"status\":\"%s\",\"timestamp\":\"%d\",\"recipient_id\":\"9198%08d\"}",
                                i > 0 ? "," : "", m, delivered ? "delivered" : "sent", 1709679600 + 5 * delivered, m);
    }
    arr[len++] = ']';
    arr[len] = '\0';
    char *payload = statuses_webhook(arr);
    char *body = wrap(payload, strlen(payload), "1801");
    long long t0 = pwt_now_ms();
    pwt_assert_status(post_to(&big, body, strlen(body)), 204);
    fprintf(stderr, "  50,000 statuses (%zu bytes) committed in %lld ms\n", strlen(body), pwt_now_ms() - t0);
    pwt_assert_rows("SELECT status, count(*), count(DISTINCT bsp_msg_id) FROM status_events GROUP BY 1 ORDER BY 1",
                    "delivered|25000|25000\nsent|25000|25000");
    pwt_assert_rows("SELECT current_status, count(*) FROM message_logs GROUP BY 1", "delivered|25000");
    pwt_assert_rows("SELECT bsp_msg_id, to_phone, whatsapp_status FROM message_logs WHERE bsp_msg_id IN "
                    "('wamid.BULK00000', 'wamid.BULK24999') ORDER BY 1",
                    "wamid.BULK00000|+919800000000|{\"sent\": \"2024-03-05T23:00:00Z\", \"delivered\": \"2024-03-05T23:00:05Z\"}\n"
                    "wamid.BULK24999|+919800024999|{\"sent\": \"2024-03-05T23:00:00Z\", \"delivered\": \"2024-03-05T23:00:05Z\"}");
    assert_receipt("1801", "stored");
    ASSERT_NO_DEAD_LETTERS();
    ASSERT_EMPTY("inbound_messages");
    assert_true(pwt_worker_alive(&big));
    assert_int_equal(pwt_worker_stop(&big), 0);
    free(body);
    free(payload);
    free(arr);
}

/* ---- duplicate keys ----------------------------------------------------------------------------- */

static void duplicate_keys_in_payload_last_one_wins(void **state)
{
    (void)state;
    const char *msg = "{\"from\":\"919812340099\",\"id\":\"" W_IN "\",\"timestamp\":\"1709679600\",\"type\":\"text\","
                "\"text\":{\"body\":\"first\",\"body\":\"second\"}}";
    char *payload = message_webhook(msg);
    pwt_assert_status(push(payload, strlen(payload), "1901"), 204);
    pwt_assert_rows(Q_INBOUND, W_IN "|text|second");
    pwt_assert_rows("SELECT payload->'text' FROM inbound_messages", "{\"body\": \"second\"}");
    free(payload);

    pwt_truncate_all();
    payload = statuses_webhook("[{\"id\":\"" W_GOOD "\",\"status\":\"sent\",\"status\":\"read\","
                               "\"timestamp\":\"1709679600\",\"timestamp\":\"1709679660\"}]");
    pwt_assert_status(push(payload, strlen(payload), "1902"), 204);
    pwt_assert_rows(Q_EVENTS, W_GOOD "|read|2024-03-05 23:01:00+00|NULL");
    assert_receipt("1902", "stored");
    ASSERT_NO_DEAD_LETTERS();
    free(payload);
}

static void duplicate_data_member_in_envelope_last_one_wins(void **state)
{
    (void)state;
    char *w = good_push_body("1903");
    const char *at = strstr(w, "\"data\":\"");
    assert_non_null(at);
    /* A bad first "data", the good one last: stored. */
    char *good_last = pwt_xasprintf("%.*s\"data\":\"!!!!\",%s", (int)(at - w), w, at);
    pwt_assert_status(post(good_last, strlen(good_last)), 204);
    assert_good_status_stored("1903", 0);
    /* The good one first, a bad one last: the last counts, so a dead letter. */
    pwt_truncate_all();
    char *bad_last = pwt_xasprintf("%.*s,\"data\":\"!!!!\"}%s", (int)(strstr(w, "},\"subscription\"") - w), w,
                               strstr(w, "},\"subscription\"") + 1);
    pwt_assert_status(post(bad_last, strlen(bad_last)), 204);
    assert_one_dead_letter(bad_last, strlen(bad_last), SUB, "1903", "envelope: message.data: invalid base64 character '!'",
                           "");
    assert_receipt("1903", "dead_letter");
    assert_no_data_rows();
    free(bad_last);
    free(good_last);
    free(w);
}

/* ---- HTTP surface ------------------------------------------------------------------------------- */

static void content_type_text_plain_is_still_a_push(void **state)
{
    (void)state;
    char *body = good_push_body("2001");
    pwt_assert_status(pwt_post(&worker, "/", body, strlen(body), PARAMS("Content-Type: text/plain"), NULL), 204);
    assert_good_status_stored("2001", 0);
    free(body);
}

static void missing_content_type_is_still_a_push(void **state)
{
    (void)state;
    char *body = good_push_body("2002");
    char *req = pwt_xasprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
    check_raw_push_stored(req, "2002");
    free(req);
    free(body);
}

static void http_1_0_request_gets_204_and_connection_closed(void **state)
{
    (void)state;
    char *body = good_push_body("2003");
    char *req = pwt_xasprintf("POST / HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s", strlen(body),
                          body);
    raw_resp_t r;
    int closed = 0;
    raw_exchange(worker.port, req, strlen(req), 0, &r, &closed);
    pwt_assert_status(r.status, 204);
    char *conn = raw_header(&r, "Connection");
    assert_non_null(conn);
    assert_string_equal(conn, "close");
    assert_true(closed);
    assert_good_status_stored("2003", 0);
    free(conn);
    raw_resp_free(&r);
    free(req);
    free(body);
}

static void chunked_request_body_is_stored(void **state)
{
    (void)state;
    char *body = good_push_body("2004");
    size_t n = strlen(body), a = n / 3, b = n / 3;
    char *req = pwt_xasprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "%zx\r\n%.*s\r\n%zx;ext=1\r\n%.*s\r\n%zx\r\n%s\r\n0\r\n\r\n",
                          a, (int)a, body, b, (int)b, body + a, n - a - b, body + a + b);
    check_raw_push_stored(req, "2004");
    free(req);
    free(body);
}

static void broken_chunked_encoding_is_400_and_writes_nothing(void **state)
{
    (void)state;
    const char *req = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n";
    check_raw_request_refused(req);
}

static void other_methods_on_root_answer_405_with_allow_post(void **state)
{
    (void)state;
    char *body = good_push_body("2005");
    const char *const methods[] = {"GET", "PUT", "DELETE", "PATCH", "OPTIONS"};
    for (int i = 0; i < 5; i++) {
        pwt_response_t resp;
        int with_body = strcmp(methods[i], "PUT") == 0 || strcmp(methods[i], "PATCH") == 0;
        long st = pwt_request(&worker, methods[i], "/", with_body ? body : NULL, with_body ? strlen(body) : 0, NULL, &resp);
        fprintf(stderr, "  case: %s /\n", methods[i]);
        pwt_assert_status(st, 405);
        char *allow = pwt_response_header(&resp, "Allow");
        assert_non_null(allow);
        assert_string_equal(allow, "POST");
        free(allow);
        pwt_response_free(&resp);
    }
    assert_nothing_written();
    free(body);
}

static void head_on_root_answers_405(void **state)
{
    (void)state;
    const char *req = "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n";
    raw_resp_t r;
    raw_exchange(worker.port, req, strlen(req), 1, &r, NULL);
    pwt_assert_status(r.status, 405);
    char *allow = raw_header(&r, "Allow");
    assert_non_null(allow);
    assert_string_equal(allow, "POST");
    assert_int_equal(r.body_len, 0);
    assert_nothing_written();
    free(allow);
    raw_resp_free(&r);
}

/* h2o takes a header block up to H2O_MAX_REQLEN (8192 + 4096 * 100 bytes): a 64 KiB value is a normal request. */
static void header_value_of_64_kib_is_accepted_and_push_stored(void **state)
{
    (void)state;
    char *body = good_push_body("2006");
    char *value = pwt_xmalloc(65536 + 1);
    memset(value, 'a', 65536);
    value[65536] = '\0';
    char *req = pwt_xasprintf("POST / HTTP/1.1\r\nHost: x\r\nX-Long: %s\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\n\r\n%s",
                          value, strlen(body), body);
    check_raw_push_stored(req, "2006");
    free(req);
    free(value);
    free(body);
}

static void header_block_over_h2o_limit_is_400_and_closed(void **state)
{
    (void)state;
    size_t n = 512 * 1024;
    char *value = pwt_xmalloc(n + 1);
    memset(value, 'a', n);
    value[n] = '\0';
    char *req = pwt_xasprintf("POST / HTTP/1.1\r\nHost: x\r\nX-Long: %s\r\nContent-Length: 2\r\n\r\n{}", value);
    check_raw_request_refused(req);
    free(req);
    free(value);
}

static void more_than_100_headers_is_400_and_closed(void **state)
{
    (void)state;
    char *req = pwt_xasprintf("%s", "POST / HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 150; i++) {
        char *more = pwt_xasprintf("%sX-H%d: v\r\n", req, i);
        free(req);
        req = more;
    }
    char *full = pwt_xasprintf("%sContent-Length: 2\r\n\r\n{}", req);
    check_raw_request_refused(full);
    free(full);
    free(req);
}

static void expect_100_continue_gets_100_then_204(void **state)
{
    (void)state;
    char *body = good_push_body("2007");
    char *head = pwt_xasprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
                           "Content-Length: %zu\r\n\r\n",
                           strlen(body));
    raw_conn_t c;
    raw_resp_t r;
    raw_connect(&c, worker.port);
    assert_int_equal(raw_send_str(&c, head), 0);
    assert_int_equal(raw_read_response(&c, 0, 5000, &r), 0);
    pwt_assert_status(r.status, 100);
    raw_resp_free(&r);
    assert_int_equal(raw_send_str(&c, body), 0);
    assert_int_equal(raw_read_response(&c, 0, 10000, &r), 0);
    pwt_assert_status(r.status, 204);
    raw_resp_free(&r);
    raw_close(&c);
    assert_good_status_stored("2007", 0);
    free(head);
    free(body);
}

/* The client promises more than it sends, then hangs up: nothing to answer, nothing written. */
static void body_shorter_than_content_length_then_close_writes_nothing(void **state)
{
    (void)state;
    char *body = good_push_body("2008");
    char *req = pwt_xasprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%.*s", strlen(body) + 100,
                          (int)strlen(body), body);
    raw_conn_t c;
    raw_connect(&c, worker.port);
    assert_int_equal(raw_send_str(&c, req), 0);
    usleep(200 * 1000);
    raw_close(&c);
    usleep(200 * 1000);
    assert_nothing_written();
    free(req);
    free(body);
}

static void query_string_on_root_is_still_a_push(void **state)
{
    (void)state;
    char *body = good_push_body("2009");
    pwt_assert_status(pwt_post(&worker, "/?x=1", body, strlen(body), NULL, NULL), 204);
    assert_good_status_stored("2009", 0);
    free(body);
}

/* The brief's contract: "/%2e%2e/" is another path (404), not "/" reached by decoding dot segments. */
static void percent_encoded_dot_dot_path_is_404(void **state)
{
    (void)state;
    char *body = good_push_body("2010");
    char *req = pwt_xasprintf("POST /%%2e%%2e/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                          strlen(body), body);
    raw_resp_t r;
    raw_exchange(worker.port, req, strlen(req), 0, &r, NULL);
    pwt_assert_status(r.status, 404);
    assert_nothing_written();
    raw_resp_free(&r);
    free(req);
    free(body);
}

/* ---- bodies that are not envelopes ----------------------------------------------------------- */

static void empty_body_is_dead_lettered(void **state)
{
    (void)state;
    check_body_dead_lettered_without_ids("", 0, "payload: empty", "");
}

static void body_that_is_a_bare_string_number_or_array_is_dead_lettered(void **state)
{
    (void)state;
    const char *const bodies[] = {"\"hello\"", "42", "[1,2,3]", "null", "true"};
    for (int i = 0; i < 5; i++) {
        pwt_truncate_all();
        fprintf(stderr, "  case: %s\n", bodies[i]);
        check_body_dead_lettered_without_ids(bodies[i], strlen(bodies[i]), "payload: neither a Meta nor an AiSensy webhook", "");
    }
}

/* docs/rows.md: a top level without a "message" object is an unwrapped push: the body is the payload. */
static void envelope_with_message_null_or_array_is_read_as_unwrapped_and_dead_lettered(void **state)
{
    (void)state;
    const char *const bodies[] = {
        "{\"message\":null,\"subscription\":\"" SUB "\"}",
        "{\"message\":[{\"data\":\"e30=\",\"messageId\":\"2101\"}],\"subscription\":\"" SUB "\"}",
    };
    for (int i = 0; i < 2; i++) {
        pwt_truncate_all();
        check_body_dead_lettered_without_ids(bodies[i], strlen(bodies[i]), "payload: neither a Meta nor an AiSensy webhook", "");
    }
}

static void empty_data_is_dead_lettered_as_payload_empty(void **state)
{
    (void)state;
    check_bad_data("", "2102", "payload: empty");
}

static void unknown_fields_in_envelope_and_payload_are_ignored(void **state)
{
    (void)state;
    char *wh = statuses_webhook("[" GOOD_STATUS "]");
    char *payload = pwt_xasprintf("{\"zzz\":[1,{\"a\":null}],\"version\":\"v99\",%s", wh + 1);
    const char *member = ",\"zzz\":{\"q\":[1,2,3]},\"deliveryAttempt\":3";
    size_t len;
    char *body = wrap_with_member(payload, "2103", member, strlen(member), &len);
    pwt_assert_status(post(body, len), 204);
    assert_good_status_stored("2103", 0);
    free(body);
    free(payload);
    free(wh);
}

static void webhook_in_neither_format_is_dead_lettered(void **state)
{
    (void)state;
    const char *payload = "{\"hello\":\"world\",\"data\":{\"message\":{}}}";
    check_payload_dead_lettered(payload, strlen(payload), "2104", "payload: neither a Meta nor an AiSensy webhook", "");
}

static void aisensy_without_data_message_is_dead_lettered(void **state)
{
    (void)state;
    const char *const payloads[] = {
        "{\"topic\":\"message.sender.user\",\"data\":{},\"created_at\":1709679600000}",               /* missing */
        "{\"topic\":\"message.status.updated\",\"data\":{\"message\":\"x\"},\"created_at\":1709679600000}", /* a string */
    };
    for (int i = 0; i < 2; i++) {
        pwt_truncate_all();
        check_payload_dead_lettered(payloads[i], strlen(payloads[i]), "2105", "payload: data.message: missing or not an object", "");
    }
}

static void meta_status_array_with_non_object_keeps_the_objects(void **state)
{
    (void)state;
    check_good_status_kept_beside_rejected("[42," GOOD_STATUS ",null]", "2106",
                                           "rejected 2 item(s): entry[0].changes[0].value.statuses[0]: not an object");
}

/*
 * A 100 KB wamid of incompressible characters is over PostgreSQL's btree entry limit: the database
 * refuses the row (54000), and the push is kept as a dead letter (behaviour chosen by observation).
 */
static void wamid_of_100_kb_is_dead_lettered_by_the_database(void **state)
{
    (void)state;
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    size_t n = 100000;
    char *id = pwt_xmalloc(n + 7);
    memcpy(id, "wamid.", 6);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        id[6 + i] = alphabet[(x >> 16) % 62];
    }
    id[6 + n] = '\0';
    char *item = pwt_xasprintf("[{\"id\":\"%s\",\"status\":\"sent\",\"timestamp\":\"1709679600\"}]", id);
    char *payload = statuses_webhook(item);
    char *body = wrap(payload, strlen(payload), "2107");
    pwt_assert_status(post(body, strlen(body)), 204);
    assert_one_dead_letter(body, strlen(body), SUB, "2107", "database: 54000: ", "index row");
    assert_receipt("2107", "dead_letter");
    assert_no_data_rows();
    free(body);
    free(payload);
    free(item);
    free(id);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, pwt_suite_fresh, alive_and_still_serving)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(truncated_envelope_is_dead_lettered_without_ids),
        T(truncated_payload_is_dead_lettered_under_its_message_id),
        T(payload_with_single_quotes_is_invalid_json),
        T(payload_with_trailing_comma_is_invalid_json),
        T(payload_with_nan_is_invalid_json),
        T(payload_with_infinity_is_invalid_json),
        T(payload_with_comments_is_invalid_json),
        T(envelope_with_single_quotes_is_dead_lettered),
        T(envelope_with_trailing_comma_is_dead_lettered),
        T(envelope_with_nan_is_dead_lettered),
        T(envelope_with_comment_is_dead_lettered),

        T(envelope_nested_10000_deep_is_dead_lettered_as_too_deep),
        T(payload_nested_10000_deep_is_dead_lettered_as_too_deep),
        T(body_over_max_body_bytes_is_413_and_writes_nothing),

        T(base64_with_bad_character_is_dead_lettered),
        T(base64_with_bad_length_is_dead_lettered),
        T(base64_with_nonzero_padding_bits_is_dead_lettered),
        T(base64_with_whitespace_or_newlines_is_dead_lettered),

        T(envelope_with_invalid_utf8_is_dead_lettered),
        T(envelope_ids_with_invalid_utf8_are_dead_lettered_not_refused),
        T(unwrapped_message_id_header_with_invalid_utf8_is_dead_lettered_not_refused),
        T(payload_with_overlong_utf8_is_dead_lettered),
        T(payload_with_encoded_surrogate_is_dead_lettered),
        T(payload_with_truncated_utf8_sequence_is_dead_lettered),

        T(nul_escape_in_text_is_stored_as_fffd_and_push_kept_as_dead_letter),
        T(escaped_backslash_before_u0000_is_not_a_nul),
        T(lone_surrogate_escape_in_text_is_stored_as_fffd_and_push_kept),

        T(status_timestamp_that_is_not_a_number_is_rejected),
        T(status_timestamp_of_wrong_type_is_rejected),
        T(status_id_as_number_is_rejected),
        T(status_status_as_number_is_rejected),
        T(status_recipient_id_as_number_is_rejected),
        T(status_conversation_as_string_is_rejected),
        T(statuses_that_is_not_an_array_dead_letters_the_push),
        T(one_mistyped_status_is_rejected_and_its_neighbour_stored),
        T(status_timestamp_zero_is_rejected),
        T(status_timestamp_negative_is_rejected),
        T(status_timestamp_in_year_10000_is_rejected),
        T(status_timestamp_of_year_10000_in_seconds_reads_as_milliseconds),

        T(fifty_thousand_statuses_in_one_body_are_all_stored),
        T(duplicate_keys_in_payload_last_one_wins),
        T(duplicate_data_member_in_envelope_last_one_wins),

        T(content_type_text_plain_is_still_a_push),
        T(missing_content_type_is_still_a_push),
        T(http_1_0_request_gets_204_and_connection_closed),
        T(chunked_request_body_is_stored),
        T(broken_chunked_encoding_is_400_and_writes_nothing),
        T(other_methods_on_root_answer_405_with_allow_post),
        T(head_on_root_answers_405),
        T(header_value_of_64_kib_is_accepted_and_push_stored),
        T(header_block_over_h2o_limit_is_400_and_closed),
        T(more_than_100_headers_is_400_and_closed),
        T(expect_100_continue_gets_100_then_204),
        T(body_shorter_than_content_length_then_close_writes_nothing),
        T(query_string_on_root_is_still_a_push),
        T(percent_encoded_dot_dot_path_is_404),

        T(empty_body_is_dead_lettered),
        T(body_that_is_a_bare_string_number_or_array_is_dead_lettered),
        T(envelope_with_message_null_or_array_is_read_as_unwrapped_and_dead_lettered),
        T(empty_data_is_dead_lettered_as_payload_empty),
        T(unknown_fields_in_envelope_and_payload_are_ignored),
        T(webhook_in_neither_format_is_dead_lettered),
        T(aisensy_without_data_message_is_dead_lettered),
        T(meta_status_array_with_non_object_keeps_the_objects),
        T(wamid_of_100_kb_is_dead_lettered_by_the_database),
    };
    return pwt_suite_run("hostile", &worker, PARAMS("WORKER_THREADS=1"), tests);
}
/* clang-format on */
