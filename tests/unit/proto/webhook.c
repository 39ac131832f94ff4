/* Unit tests for proto/webhook.c: strict parsing, format sniffing, dispose, and the shared item builders. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/webhook.h"

#define S 1000000LL

static char err[256];
static const pw_webhook_t ZERO;

static int parse_n(const char *body, size_t len, pw_webhook_t *wh)
{
    err[0] = '\0';
    return pw_webhook_parse(body, len, wh, err, sizeof(err));
}

static void expect_fail(const char *body, size_t len, int want_rc, const char *want_err)
{
    pw_webhook_t wh;
    int rc = parse_n(body, len, &wh);
    if (rc != want_rc)
        print_error("input %.*s\n", (int)(len > 80 ? 80 : len), body);
    assert_int_equal(rc, want_rc);
    assert_string_equal(err, want_err);
    assert_memory_equal(&wh, &ZERO, sizeof(ZERO)); /* nothing to release after a failure */
}

#define FAIL(lit, rc, msg) expect_fail(lit, sizeof(lit) - 1, rc, msg)

static void test_neither_format(void **state)
{
    (void)state;
    FAIL("{}", PW_EUNSUPP, "neither a Meta nor an AiSensy webhook");
    FAIL("[]", PW_EUNSUPP, "neither a Meta nor an AiSensy webhook");
    FAIL("\"entry\"", PW_EUNSUPP, "neither a Meta nor an AiSensy webhook");
    FAIL("123", PW_EUNSUPP, "neither a Meta nor an AiSensy webhook");
    FAIL("null", PW_EUNSUPP, "neither a Meta nor an AiSensy webhook");
    FAIL("{\"entry\":\"x\"}", PW_EUNSUPP, "neither a Meta nor an AiSensy webhook");
    FAIL("{\"object\":\"page\",\"entry\":{}}", PW_EUNSUPP, "neither a Meta nor an AiSensy webhook");
    FAIL("{\"topic\":1,\"data\":{}}", PW_EUNSUPP, "neither a Meta nor an AiSensy webhook");
    FAIL("{\"message\":{\"data\":\"e30=\"}}", PW_EUNSUPP, "neither a Meta nor an AiSensy webhook");
}

static void test_sniffing(void **state)
{
    pw_webhook_t wh;
    (void)state;
    /* Gupshup v3 relays Meta's envelope with extra keys and no "object" */
    assert_int_equal(parse_n("{\"gs_app_id\":\"g\",\"entry\":[]}", 28, &wh), 0);
    assert_int_equal(wh.format, PW_FORMAT_META);
    pw_webhook_dispose(&wh);
    assert_int_equal(parse_n("{\"topic\":\"x\",\"data\":{}}", 23, &wh), 0);
    assert_int_equal(wh.format, PW_FORMAT_AISENSY);
    assert_int_equal(wh.n_ignored, 1);
    pw_webhook_dispose(&wh);
}

static void test_invalid_json(void **state)
{
    (void)state;
    FAIL("", PW_EINVAL, "empty JSON input");
    FAIL("\r\n\t ", PW_EINVAL, "empty JSON input");
    FAIL("{\"object\":\"whatsapp_business_account\",\"entry\":[", PW_EINVAL, "invalid JSON at offset 47: unexpected end of data");
    FAIL("{\"object\":\"whatsapp_business_account\",\"entry\":[]}}", PW_EINVAL, "invalid JSON at offset 49: unexpected character");
    FAIL("{\"entry\":[]} x", PW_EINVAL, "invalid JSON at offset 13: unexpected character");
    FAIL("{\"entry\":[]}\0", PW_EINVAL, "invalid JSON at offset 12: unexpected character");
    FAIL("{\"entry\":[1,]}", PW_EINVAL, "invalid JSON at offset 12: unexpected character");
    FAIL("{\"entry\":[\"\xc3\x28\"]}", PW_EINVAL, "invalid JSON at offset 11: invalid UTF-8");
    FAIL("{\"entry\":[\"\xed\xa0\x80\"]}", PW_EINVAL, "invalid JSON at offset 11: invalid UTF-8");     /* a surrogate */
    FAIL("{\"entry\":[\"\xc0\xaf\"]}", PW_EINVAL, "invalid JSON at offset 11: invalid UTF-8");         /* overlong */
    FAIL("{\"entry\":[\"\xf4\x90\x80\x80\"]}", PW_EINVAL, "invalid JSON at offset 11: invalid UTF-8"); /* > U+10FFFF */
    FAIL("{\"entry\":[\"\xe2\x82\"]}", PW_EINVAL, "invalid JSON at offset 11: invalid UTF-8");         /* cut short */
    FAIL("{\"entry\":[\"\xff\"]}", PW_EINVAL, "invalid JSON at offset 11: invalid UTF-8");
    FAIL("{\"entry\":[\"\xf0\x9f\x98\"]}", PW_EINVAL, "invalid JSON at offset 11: invalid UTF-8");
    FAIL("{\"entry\":[tru]}", PW_EINVAL, "invalid JSON at offset 13: unexpected character");
    /* what json-c accepts even when strict, and RFC 8259 does not */
    FAIL("{\"entry\":[NaN]}", PW_EINVAL, "invalid JSON at offset 10: unexpected character");
    FAIL("{\"entry\":[-Infinity]}", PW_EINVAL, "invalid JSON at offset 11: unexpected character");
    FAIL("{\"entry\":[1.]}", PW_EINVAL, "invalid JSON at offset 12: unexpected character");
    FAIL("{\"entry\":[\"a\tb\"]}", PW_EINVAL, "invalid JSON at offset 12: unexpected character");
}

static void test_deep_nesting(void **state)
{
    enum { DEPTH = 10000 };
    char *body = malloc(2 * DEPTH + 32);
    size_t n = 0;
    (void)state;
    memcpy(body, "{\"entry\":", 9);
    n = 9;
    memset(body + n, '[', DEPTH);
    n += DEPTH;
    memset(body + n, ']', DEPTH);
    n += DEPTH;
    body[n++] = '}';
    expect_fail(body, n, PW_EINVAL, "nesting too deep (over 64 levels)");
    free(body);
}

static void test_strings_with_nul(void **state)
{
    pw_webhook_t wh;
    const char *body = "{\"entry\":[{\"changes\":[{\"field\":\"messages\",\"value\":{\"messages\":[{\"id\":\"m\","
                       "\"timestamp\":\"1696329600\",\"type\":\"text\",\"text\":{\"body\":\"a\\u0000b\"}}]}}]}]}";
    (void)state;
    assert_int_equal(parse_n(body, strlen(body), &wh), 0);
    assert_int_equal(wh.n_inbound, 1);
    assert_int_equal(wh.inbound[0].body.len, 3);
    assert_memory_equal(wh.inbound[0].body.base, "a\0b", 3);
    pw_webhook_dispose(&wh);
}

static void test_not_nul_terminated(void **state)
{
    pw_webhook_t wh;
    const char body[] = "{\"entry\":[]}GARBAGE";
    (void)state;
    assert_int_equal(parse_n(body, 12, &wh), 0); /* only len bytes count */
    pw_webhook_dispose(&wh);
}

static void test_dispose(void **state)
{
    pw_webhook_t wh;
    (void)state;
    memset(&wh, 0, sizeof(wh));
    pw_webhook_dispose(&wh); /* safe on a zeroed struct */
    assert_memory_equal(&wh, &ZERO, sizeof(ZERO));
    assert_int_equal(parse_n("{\"entry\":[]}", 12, &wh), 0);
    pw_webhook_dispose(&wh);
    assert_memory_equal(&wh, &ZERO, sizeof(ZERO));
    pw_webhook_dispose(&wh); /* idempotent */
}

static void test_null_err_buffer(void **state)
{
    pw_webhook_t wh;
    (void)state;
    assert_int_equal(pw_webhook_parse("{", 1, &wh, NULL, 0), PW_EINVAL);
    assert_int_equal(pw_webhook_parse("{}", 2, &wh, NULL, 0), PW_EUNSUPP);
    assert_int_equal(pw_webhook_parse("{\"entry\":{}}", 12, &wh, err, 1), PW_EUNSUPP);
    assert_string_equal(err, ""); /* a one-byte buffer holds only the terminator */
}

/* ---- the builders shared by whatsapp.c and aisensy.c ---- */

static void test_builders_grow_and_zero(void **state)
{
    pw_webhook_t wh;
    (void)state;
    memset(&wh, 0, sizeof(wh));
    for (int i = 0; i < 1000; i++) {
        pw_status_t *s = pw__webhook_add_status(&wh);
        assert_null(s->id.base);
        assert_int_equal(s->occurred_at, 0);
        s->occurred_at = i;
        pw_inbound_t *m = pw__webhook_add_inbound(&wh);
        assert_null(m->payload.base);
        m->sent_at = i;
        pw_contact_t *c = pw__webhook_add_contact(&wh);
        assert_int_equal(c->seen_at, 0);
        c->seen_at = i;
    }
    assert_int_equal(wh.n_statuses, 1000);
    assert_int_equal(wh.n_inbound, 1000);
    assert_int_equal(wh.n_contacts, 1000);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(wh.statuses[i].occurred_at, i);
        assert_int_equal(wh.inbound[i].sent_at, i);
        assert_int_equal(wh.contacts[i].seen_at, i);
    }
    pw_webhook_dispose(&wh);
}

static void test_reject_keeps_first_reason(void **state)
{
    pw_webhook_t wh;
    char long_path[400];
    (void)state;
    memset(&wh, 0, sizeof(wh));
    memset(long_path, 'p', sizeof(long_path) - 1);
    long_path[sizeof(long_path) - 1] = '\0';
    pw__webhook_reject(&wh, "%s: first", "a.b[0]");
    pw__webhook_reject(&wh, "%s: second", "a.b[1]");
    assert_int_equal(wh.n_rejected, 2);
    assert_string_equal(wh.reject_reason, "a.b[0]: first");
    pw_webhook_dispose(&wh);
    pw__webhook_reject(&wh, "%s", long_path); /* truncated, still terminated */
    assert_int_equal(strlen(wh.reject_reason), sizeof(wh.reject_reason) - 1);
}

static void test_kept_strings(void **state)
{
    pw_webhook_t wh;
    (void)state;
    memset(&wh, 0, sizeof(wh));
    pw_str_t a = pw__webhook_keep_concat(&wh, PW_STR_LIT("91"), PW_STR_LIT("9876543210"));
    pw_str_t b = pw__webhook_keep_lower(&wh, PW_STR_LIT("QUICK_Reply-\xc3\x89"));
    pw_str_t c = pw__webhook_keep_concat(&wh, PW_STR_LIT(""), PW_STR_LIT(""));
    assert_int_equal(a.len, 12);
    assert_memory_equal(a.base, "919876543210", 12);
    assert_int_equal(b.len, 14);
    assert_memory_equal(b.base, "quick_reply-\xc3\x89", 14); /* ASCII only: bytes of UTF-8 untouched */
    assert_non_null(c.base);
    assert_int_equal(c.len, 0);
    assert_non_null(wh.arena);
    pw_webhook_dispose(&wh);
    assert_null(wh.arena);
}

static void test_known_status(void **state)
{
    (void)state;
    pw_str_t s = pw__webhook_known_status(PW_STR_LIT("read"), 0);
    assert_int_equal(s.len, 4);
    assert_memory_equal(s.base, "read", 4);
    assert_null(pw__webhook_known_status(PW_STR_LIT("READ"), 0).base);
    s = pw__webhook_known_status(PW_STR_LIT("PlAyEd"), 1);
    assert_int_equal(s.len, 6);
    assert_memory_equal(s.base, "played", 6);
    assert_null(pw__webhook_known_status(PW_STR_LIT("deleted"), 1).base);
    assert_null(pw__webhook_known_status(PW_STR_LIT("sent "), 1).base);
    assert_null(pw__webhook_known_status(PW_STR_NULL, 1).base);
}

/* wh reading text (the test's own), and its root value. */
static pw_jval_t value_of(pw_webhook_t *wh, const char *text)
{
    pw_jscan_t sc;
    pw_jval_t v;
    memset(wh, 0, sizeof(*wh));
    wh->text = pw_str(text, strlen(text));
    pw_jscan_init(&sc, text, strlen(text), PW_JSON_MAX_DEPTH);
    assert_int_equal(pw_jscan_value(&sc, &v), 0);
    return v;
}

static int unix_time_of(const char *text, pw_time_us_t *t)
{
    pw_webhook_t wh;
    pw_jval_t v = value_of(&wh, text);
    int rc = pw__webhook_unix_time(&wh, &v, t, err, sizeof(err));
    pw_webhook_dispose(&wh);
    return rc;
}

static void test_unix_time_by_json_type(void **state)
{
    pw_time_us_t t;
    (void)state;
    assert_int_equal(unix_time_of("\"1696329600\"", &t), 0);
    assert_int_equal(t, 1696329600 * S);
    assert_int_equal(unix_time_of("\"\\u0031696329600\"", &t), 0); /* escaped: unescaped first */
    assert_int_equal(t, 1696329600 * S);
    assert_int_equal(unix_time_of("1696329600123", &t), 0);
    assert_int_equal(t, 1696329600 * S + 123000);
    assert_int_equal(unix_time_of("1696329600.25", &t), 0);
    assert_int_equal(t, 1696329600 * S + 250000);
    assert_int_equal(unix_time_of("1.69632960025e9", &t), 0);
    assert_int_equal(t, 1696329600 * S + 250000);
    assert_int_equal(unix_time_of("0", &t), PW_ERANGE);
    assert_int_equal(unix_time_of("-0", &t), PW_ERANGE);
    assert_int_equal(unix_time_of("-5", &t), PW_ERANGE);
    assert_string_equal(err, "time not after 1970-01-01T00:00:00Z");
    assert_int_equal(unix_time_of("9223372036854775807", &t), PW_ERANGE);
    assert_int_equal(unix_time_of("123456789012345678901234567890", &t), PW_ERANGE); /* saturates, as json-c did */
    assert_string_equal(err, "time after 9999-12-31T23:59:59Z");
    assert_int_equal(unix_time_of("true", &t), PW_EINVAL);
    assert_string_equal(err, "not a string or number");
    assert_int_equal(unix_time_of("{}", &t), PW_EINVAL);
    pw_webhook_t wh;
    pw_jval_t none = {0};
    memset(&wh, 0, sizeof(wh));
    assert_int_equal(pw__webhook_unix_time(&wh, &none, &t, err, sizeof(err)), PW_EINVAL);
}

static void test_numbers_as_json_c_typed_them(void **state)
{
    pw_webhook_t wh;
    int64_t i;
    double d;
    (void)state;
    static const struct {
        const char *text;
        int kind;
        int64_t i;
        double d;
    } CASES[] = {
        {"0", 1, 0, 0},
        {"-0", 1, 0, 0},
        {"91", 1, 91, 0},
        {"-91", 1, -91, 0},
        {"9223372036854775807", 1, INT64_MAX, 0},
        {"9223372036854775808", 1, INT64_MAX, 0},
        {"123456789012345678901234567890", 1, INT64_MAX, 0},
        {"-9223372036854775808", 1, INT64_MIN, 0},
        {"-9223372036854775809", 1, INT64_MIN, 0},
        {"-123456789012345678901234567890", 1, INT64_MIN, 0},
        {"0.0", 0, 0, 0.0},
        {"1e-400", 0, 0, 0.0},
        {"2.5E3", 0, 0, 2500.0},
        {"-1.5", 0, 0, -1.5},
    };
    for (size_t k = 0; k < sizeof CASES / sizeof CASES[0]; k++) {
        pw_jval_t v = value_of(&wh, CASES[k].text);
        int kind = pw__webhook_number(&wh, &v, &i, &d);
        if (kind != CASES[k].kind)
            print_error("%s\n", CASES[k].text);
        assert_int_equal(kind, CASES[k].kind);
        if (kind == 1)
            assert_true(i == CASES[k].i);
        else
            assert_true(d == CASES[k].d);
        pw_webhook_dispose(&wh);
    }
    pw_jval_t v = value_of(&wh, "\"1\"");
    assert_int_equal(pw__webhook_number(&wh, &v, &i, &d), -1);
    pw_webhook_dispose(&wh);
}

static void test_field_readers(void **state)
{
    pw_webhook_t wh;
    pw_jval_t o = value_of(&wh, "{\"s\":\"x\",\"e\":\"\",\"n\":1,\"z\":null,\"d\":\"a\",\"d\":\"bb\",\"u\":null,"
                                "\"\\u0075\":\"esc\\u00e9\",\"k\\u0000x\":\"cut\"}");
    pw_str_t out;
    pw_jval_t v;
    (void)state;
#define M(key) (v = pw__webhook_member(&wh, &o, key), &v)
    assert_null(pw__webhook_opt_string(&wh, M("s"), &out));
    assert_int_equal(out.len, 1);
    assert_null(pw__webhook_opt_string(&wh, M("e"), &out));
    assert_null(out.base);
    assert_null(pw__webhook_opt_string(&wh, M("absent"), &out));
    assert_null(pw__webhook_opt_string(&wh, M("z"), &out));
    assert_string_equal(pw__webhook_opt_string(&wh, M("n"), &out), "not a string");
    assert_string_equal(pw__webhook_req_string(&wh, M("e"), &out), "empty");
    assert_string_equal(pw__webhook_req_string(&wh, M("absent"), &out), "missing");
    assert_string_equal(pw__webhook_req_string(&wh, M("z"), &out), "missing");
    assert_string_equal(pw__webhook_req_string(&wh, M("n"), &out), "not a string");
    assert_null(pw__webhook_req_string(&wh, M("s"), &out));
    /* the last duplicate counts; a key with escapes matches unescaped, and up to its first NUL */
    assert_null(pw__webhook_req_string(&wh, M("d"), &out));
    assert_int_equal(out.len, 2);
    assert_memory_equal(out.base, "bb", 2);
    assert_null(pw__webhook_req_string(&wh, M("u"), &out));
    assert_int_equal(out.len, 5);
    assert_memory_equal(out.base, "esc\xc3\xa9", 5);
    assert_null(pw__webhook_req_string(&wh, M("k"), &out));
    assert_memory_equal(out.base, "cut", 3);
    assert_int_equal(pw__webhook_count(&wh, &o), 9);
    assert_int_equal(M("s")->type, PW_J_STRING);
#undef M
    pw_webhook_dispose(&wh);
}

static void test_json_text_is_kept_exactly(void **state)
{
    pw_webhook_t wh;
    const char *body = "{\"entry\":[{\"changes\":[{\"field\":\"messages\",\"value\":{\"statuses\":[{\"id\":\"a\","
                       "\"status\":\"sent\",\"timestamp\":\"1696329600\",\"pricing\":{ \"n\" : 123456789012345678901234567890,"
                       "\"f\":1.50},\"conversation\":{\"t\":\"\\ud83d\\udc4d \\u0000 \\\\u0000 \\udc4d\"},"
                       "\"errors\":[{\"k\\ud83d\":1}]}]}}]}]}";
    (void)state;
    assert_int_equal(parse_n(body, strlen(body), &wh), 0);
    assert_int_equal(wh.n_statuses, 1);
    const pw_status_t *s = &wh.statuses[0];
    /* as received: pw_webhook_parse borrows the body */
    assert_int_equal(s->pricing.len, strlen("{ \"n\" : 123456789012345678901234567890,\"f\":1.50}"));
    assert_memory_equal(s->pricing.base, "{ \"n\" : 123456789012345678901234567890,\"f\":1.50}", s->pricing.len);
    assert_true(s->pricing.base > body && s->pricing.base < body + strlen(body));
    /* what jsonb refuses is replaced in a copy of the same length; the pair and \\u0000 stay */
    const char *want = "{\"t\":\"\\ud83d\\udc4d \\ufffd \\\\u0000 \\ufffd\"}";
    assert_int_equal(s->conversation.len, strlen(want));
    assert_memory_equal(s->conversation.base, want, s->conversation.len);
    assert_true(s->conversation.base < body || s->conversation.base > body + strlen(body));
    want = "[{\"k\\ufffd\":1}]"; /* keys too */
    assert_int_equal(s->errors.len, strlen(want));
    assert_memory_equal(s->errors.base, want, s->errors.len);
    assert_int_equal(wh.n_lossy, 2); /* the string with \\u0000 and the lone \\udc4d, and the key */
    pw_webhook_dispose(&wh);
}

static void test_item_cap_before_any_item_is_read(void **state)
{
    /* One item over the cap in one change, in an array of empty objects: refused, nothing kept. */
    enum { N = PW_WEBHOOK_MAX_ITEMS + 1 };
    char *body = malloc(3 * (size_t)N + 128);
    size_t n = (size_t)sprintf(body, "{\"entry\":[{\"changes\":[{\"field\":\"messages\",\"value\":{\"statuses\":[");
    (void)state;
    for (int i = 0; i < N; i++) {
        memcpy(body + n, i > 0 ? ",{}" : "{}", i > 0 ? 3 : 2);
        n += i > 0 ? 3 : 2;
    }
    n += (size_t)sprintf(body + n, "]}}]}]}");
    expect_fail(body, n, PW_ETOOBIG, "more than 100000 items in one webhook");
    free(body);
}

static void test_unrelated_members_cost_nothing(void **state)
{
    /* 100,000 values in a member no one reads: accepted, nothing allocated for them but the
       fixed table of the first containers' spans. */
    enum { N = 100000 };
    char *body = malloc(3 * (size_t)N + 128);
    size_t n = (size_t)sprintf(body, "{\"object\":\"whatsapp_business_account\",\"entry\":[],\"x\":[");
    pw_webhook_t wh;
    (void)state;
    for (int i = 0; i < N; i++) {
        memcpy(body + n, i > 0 ? ",{}" : "{}", i > 0 ? 3 : 2);
        n += i > 0 ? 3 : 2;
    }
    n += (size_t)sprintf(body + n, "]}");
    assert_int_equal(parse_n(body, n, &wh), 0);
    assert_int_equal(wh.n_statuses + wh.n_inbound + wh.n_contacts + wh.n_ignored, 0);
    assert_int_equal(wh.n_spans, PW_WEBHOOK_SPANS);
    assert_non_null(wh.spans);
    pw_webhook_dispose(&wh);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_neither_format),
        cmocka_unit_test(test_sniffing),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_strings_with_nul),
        cmocka_unit_test(test_not_nul_terminated),
        cmocka_unit_test(test_dispose),
        cmocka_unit_test(test_null_err_buffer),
        cmocka_unit_test(test_builders_grow_and_zero),
        cmocka_unit_test(test_reject_keeps_first_reason),
        cmocka_unit_test(test_kept_strings),
        cmocka_unit_test(test_known_status),
        cmocka_unit_test(test_unix_time_by_json_type),
        cmocka_unit_test(test_numbers_as_json_c_typed_them),
        cmocka_unit_test(test_field_readers),
        cmocka_unit_test(test_json_text_is_kept_exactly),
        cmocka_unit_test(test_item_cap_before_any_item_is_read),
        cmocka_unit_test(test_unrelated_members_cost_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
