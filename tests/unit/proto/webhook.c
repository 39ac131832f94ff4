/* Unit tests for proto/webhook.c: strict parsing, format sniffing, dispose, and the shared item builders. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

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
        assert_null(m->payload);
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
    assert_non_null(wh.scratch);
    json_object *arr = pw__webhook_keep(&wh, json_object_new_array());
    assert_int_equal(json_object_array_length(arr), 0);
    pw_webhook_dispose(&wh);
    assert_null(wh.scratch);
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

static void test_unix_time_by_json_type(void **state)
{
    pw_time_us_t t;
    json_object *v;
    (void)state;
    v = json_object_new_string("1696329600");
    assert_int_equal(pw__webhook_unix_time(v, &t, err, sizeof(err)), 0);
    assert_int_equal(t, 1696329600 * S);
    json_object_put(v);
    v = json_object_new_int64(1696329600123LL);
    assert_int_equal(pw__webhook_unix_time(v, &t, err, sizeof(err)), 0);
    assert_int_equal(t, 1696329600 * S + 123000);
    json_object_put(v);
    v = json_object_new_double(1696329600.25);
    assert_int_equal(pw__webhook_unix_time(v, &t, err, sizeof(err)), 0);
    assert_int_equal(t, 1696329600 * S + 250000);
    json_object_put(v);
    v = json_object_new_int64(0);
    assert_int_equal(pw__webhook_unix_time(v, &t, err, sizeof(err)), PW_ERANGE);
    json_object_put(v);
    v = json_object_new_int64(INT64_MAX);
    assert_int_equal(pw__webhook_unix_time(v, &t, err, sizeof(err)), PW_ERANGE);
    json_object_put(v);
    v = json_object_new_boolean(1);
    assert_int_equal(pw__webhook_unix_time(v, &t, err, sizeof(err)), PW_EINVAL);
    assert_string_equal(err, "not a string or number");
    json_object_put(v);
    assert_int_equal(pw__webhook_unix_time(NULL, &t, err, sizeof(err)), PW_EINVAL);
}

static void test_field_readers(void **state)
{
    json_object *o = json_tokener_parse("{\"s\":\"x\",\"e\":\"\",\"n\":1,\"z\":null}");
    pw_str_t out;
    (void)state;
    assert_null(pw__webhook_opt_string(o, "s", &out));
    assert_int_equal(out.len, 1);
    assert_null(pw__webhook_opt_string(o, "e", &out));
    assert_null(out.base);
    assert_null(pw__webhook_opt_string(o, "absent", &out));
    assert_null(pw__webhook_opt_string(o, "z", &out));
    assert_string_equal(pw__webhook_opt_string(o, "n", &out), "not a string");
    assert_string_equal(pw__webhook_req_string(o, "e", &out), "empty");
    assert_string_equal(pw__webhook_req_string(o, "absent", &out), "missing");
    assert_string_equal(pw__webhook_req_string(o, "z", &out), "missing");
    assert_string_equal(pw__webhook_req_string(o, "n", &out), "not a string");
    assert_null(pw__webhook_req_string(o, "s", &out));
    json_object_put(o);
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
        cmocka_unit_test(test_field_readers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
