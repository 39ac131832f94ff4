/* Unit tests for proto/pubsub.c: wrapped and unwrapped push envelopes, and everything malformed about them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/pubsub.h"

#define S 1000000LL

static char err[256];

static int parse(const char *json, pw_envelope_t *env)
{
    err[0] = '\0';
    return pw_envelope_parse_wrapped(json, strlen(json), env, err, sizeof(err));
}

static void assert_str(pw_str_t s, const char *want)
{
    if (want == NULL) {
        assert_null(s.base);
        assert_int_equal(s.len, 0);
        return;
    }
    assert_non_null(s.base);
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.base, want, s.len);
}

/* A failed parse must leave nothing to release: the struct is all zero. */
static void assert_zeroed(const pw_envelope_t *env)
{
    static const pw_envelope_t zero;
    assert_memory_equal(env, &zero, sizeof(zero));
}

static void expect_fail(const char *json, int want_rc, const char *want_err)
{
    pw_envelope_t env;
    int rc = parse(json, &env);
    if (rc != want_rc)
        print_error("input %s\n", json);
    assert_int_equal(rc, want_rc);
    assert_string_equal(err, want_err);
    assert_zeroed(&env);
}

static void test_minimal_documented_example(void **state)
{
    pw_envelope_t env;
    (void)state;
    /* The docs' "minimal values" example: both spellings of messageId and publishTime. */
    assert_int_equal(parse("{\"message\":{\"data\":\"eyJhIjoxfQ==\",\"messageId\":\"2070443601311540\","
                           "\"message_id\":\"2070443601311540\",\"publishTime\":\"2021-02-26T19:13:55.749Z\","
                           "\"publish_time\":\"2021-02-26T19:13:55.749Z\"},"
                           "\"subscription\":\"projects/myproject/subscriptions/mysubscription\"}",
                           &env),
                     0);
    assert_string_equal(err, "");
    assert_int_equal(env.wrapped, 1);
    assert_str(env.message_id, "2070443601311540");
    assert_str(env.subscription, "projects/myproject/subscriptions/mysubscription");
    assert_int_equal(env.publish_time, 1614366835 * S + 749000);
    assert_int_equal(env.data_len, 7);
    assert_memory_equal(env.data, "{\"a\":1}", 7);
    assert_int_equal(env.delivery_attempt, 0);
    assert_null(env.attributes.base);
    assert_str(env.ordering_key, NULL);
    pw_envelope_dispose(&env);
    assert_zeroed(&env);
    pw_envelope_dispose(&env); /* idempotent */
}

static void test_maximal_documented_example(void **state)
{
    pw_envelope_t env;
    (void)state;
    assert_int_equal(parse("{\"message\":{\"attributes\":{\"key\":\"value\",\"k2\":\"\"},\"data\":\"SGVsbG8=\","
                           "\"messageId\":\"2070443601311540\",\"orderingKey\":\"key-1\","
                           "\"publishTime\":\"2021-02-26T19:13:55.749123456Z\"},"
                           "\"subscription\":\"projects/p/subscriptions/s\",\"deliveryAttempt\":5}",
                           &env),
                     0);
    assert_str(env.message_id, "2070443601311540");
    assert_int_equal(env.publish_time, 1614366835 * S + 749123);
    assert_int_equal(env.delivery_attempt, 5);
    assert_str(env.ordering_key, "key-1");
    assert_non_null(env.attributes.base);
    assert_int_equal(env.attributes.len, strlen("{\"key\":\"value\",\"k2\":\"\"}"));
    assert_memory_equal(env.attributes.base, "{\"key\":\"value\",\"k2\":\"\"}", env.attributes.len);
    assert_int_equal(env.data_len, 5);
    assert_memory_equal(env.data, "Hello", 5);
    pw_envelope_dispose(&env);
}

static void test_one_spelling_each(void **state)
{
    pw_envelope_t env;
    (void)state;
    assert_int_equal(parse("{\"message\":{\"message_id\":\"42\",\"publish_time\":\"2024-10-03T10:30:00Z\"}}", &env), 0);
    assert_str(env.message_id, "42");
    assert_int_equal(env.publish_time, 1727951400 * S);
    assert_str(env.subscription, NULL);
    pw_envelope_dispose(&env);

    assert_int_equal(parse("{\"message\":{\"messageId\":\"43\",\"publishTime\":\"2024-10-03T16:00:00+05:30\"}}", &env), 0);
    assert_str(env.message_id, "43");
    assert_int_equal(env.publish_time, 1727951400 * S);
    pw_envelope_dispose(&env);
}

static void test_same_instant_spelled_differently(void **state)
{
    pw_envelope_t env;
    (void)state;
    assert_int_equal(parse("{\"message\":{\"publishTime\":\"2021-02-26T19:13:55.749Z\","
                           "\"publish_time\":\"2021-02-26T19:13:55.749000000Z\"}}",
                           &env),
                     0);
    assert_int_equal(env.publish_time, 1614366835 * S + 749000);
    pw_envelope_dispose(&env);
}

static void test_data_absent_or_empty(void **state)
{
    pw_envelope_t env;
    (void)state;
    /* a message may carry only attributes: not an error */
    assert_int_equal(parse("{\"message\":{\"attributes\":{\"a\":\"b\"},\"messageId\":\"1\"}}", &env), 0);
    assert_null(env.data);
    assert_int_equal(env.data_len, 0);
    pw_envelope_dispose(&env);
    assert_int_equal(parse("{\"message\":{\"data\":\"\",\"messageId\":\"1\"}}", &env), 0);
    assert_null(env.data);
    assert_int_equal(env.data_len, 0);
    pw_envelope_dispose(&env);
    /* JSON null reads as absent (protobuf's JSON mapping), and the emulator's empty attributes are fine */
    assert_int_equal(parse("{\"message\":{\"data\":null,\"messageId\":null,\"attributes\":{}},\"subscription\":null}", &env), 0);
    assert_null(env.data);
    assert_str(env.message_id, NULL);
    assert_non_null(env.attributes.base);
    pw_envelope_dispose(&env);
}

static void test_both_spellings_conflict(void **state)
{
    (void)state;
    expect_fail("{\"message\":{\"messageId\":\"1\",\"message_id\":\"2\"}}", PW_EINVAL,
                "message.messageId and message.message_id differ");
    expect_fail("{\"message\":{\"messageId\":\"12\",\"message_id\":\"1\"}}", PW_EINVAL,
                "message.messageId and message.message_id differ");
    expect_fail("{\"message\":{\"publishTime\":\"2021-02-26T19:13:55Z\",\"publish_time\":\"2021-02-26T19:13:56Z\"}}", PW_EINVAL,
                "message.publishTime and message.publish_time differ");
}

static void test_wrong_member_types(void **state)
{
    (void)state;
    expect_fail("{\"message\":{\"messageId\":2070443601311540}}", PW_EINVAL, "message.messageId: not a string");
    expect_fail("{\"message\":{\"message_id\":true}}", PW_EINVAL, "message.message_id: not a string");
    expect_fail("{\"message\":{\"publishTime\":1614366835}}", PW_EINVAL, "message.publishTime: not a string");
    expect_fail("{\"message\":{\"data\":123}}", PW_EINVAL, "message.data: not a string");
    expect_fail("{\"message\":{\"orderingKey\":[]}}", PW_EINVAL, "message.orderingKey: not a string");
    expect_fail("{\"message\":{},\"subscription\":7}", PW_EINVAL, "subscription: not a string");
    expect_fail("{\"message\":{\"attributes\":[]}}", PW_EINVAL, "message.attributes: not an object");
    expect_fail("{\"message\":{\"attributes\":{\"n\":1}}}", PW_EINVAL, "message.attributes.n: not a string");
    expect_fail("{\"message\":{},\"deliveryAttempt\":\"5\"}", PW_EINVAL, "deliveryAttempt: not an integer");
    expect_fail("{\"message\":{},\"deliveryAttempt\":5.5}", PW_EINVAL, "deliveryAttempt: not an integer");
    expect_fail("{\"message\":{},\"deliveryAttempt\":-1}", PW_ERANGE, "deliveryAttempt: -1 out of range");
    expect_fail("{\"message\":{},\"deliveryAttempt\":4294967296}", PW_ERANGE, "deliveryAttempt: 4294967296 out of range");
    expect_fail("{\"message\":\"hi\"}", PW_EINVAL, "message: missing or not an object");
    expect_fail("{\"message\":null}", PW_EINVAL, "message: missing or not an object");
    expect_fail("{\"subscription\":\"s\"}", PW_EINVAL, "message: missing or not an object");
    expect_fail("[{\"message\":{}}]", PW_EINVAL, "envelope: not a JSON object");
    expect_fail("\"message\"", PW_EINVAL, "envelope: not a JSON object");
}

static void test_bad_publish_time(void **state)
{
    (void)state;
    expect_fail("{\"message\":{\"publishTime\":\"2021-02-26T19:13:55\"}}", PW_EINVAL,
                "message.publishTime: not an RFC 3339 time: \"2021-02-26T19:13:55\"");
    expect_fail("{\"message\":{\"publish_time\":\"1969-12-31T00:00:00Z\"}}", PW_ERANGE,
                "message.publish_time: time not after 1970-01-01T00:00:00Z");
}

static void test_bad_base64(void **state)
{
    (void)state;
    expect_fail("{\"message\":{\"data\":\"eyJ!IjoxfQ==\"}}", PW_EINVAL, "message.data: invalid base64 character '!' at 3");
    expect_fail("{\"message\":{\"data\":\"!yJhIjoxfQ==\"}}", PW_EINVAL, "message.data: invalid base64 character '!' at 0");
    expect_fail("{\"message\":{\"data\":\"eyJhIjoxf!==\"}}", PW_EINVAL, "message.data: invalid base64 character '!' at 9");
    expect_fail("{\"message\":{\"data\":\"eyJhIjoxfQ=!\"}}", PW_EINVAL, "message.data: invalid base64 character '=' at 10");
    expect_fail("{\"message\":{\"data\":\"eyJhIjoxfQ\"}}", PW_EINVAL,
                "message.data: invalid base64 length 10 (not a multiple of 4)");
    expect_fail("{\"message\":{\"data\":\"eyJhIjoxfR==\"}}", PW_EINVAL,
                "message.data: non-canonical base64: unused bits set in the character at 9");
    expect_fail("{\"message\":{\"data\":\"eyJhIjox-Q==\"}}", PW_EINVAL, "message.data: invalid base64 character '-' at 8");
    expect_fail("{\"message\":{\"data\":\"eyJh IjoxfQ==\"}}", PW_EINVAL,
                "message.data: invalid base64 length 13 (not a multiple of 4)");
}

static void test_bad_json(void **state)
{
    (void)state;
    expect_fail("{\"message\":{\"messageId\":\"1\"}", PW_EINVAL, "invalid JSON at offset 28: unexpected end of data");
    expect_fail("{\"message\":{}}garbage", PW_EINVAL, "invalid JSON at offset 14: unexpected character");
    expect_fail("{\"message\":{}}{}", PW_EINVAL, "invalid JSON at offset 14: unexpected character");
    expect_fail("", PW_EINVAL, "empty JSON input");
    expect_fail(" \n", PW_EINVAL, "empty JSON input");
    expect_fail("{\"message\":{\"messageId\":\"\xff\"}}", PW_EINVAL, "invalid JSON at offset 25: invalid UTF-8");
    expect_fail("{\"message\":{\"data\":'x'}}", PW_EINVAL, "invalid JSON at offset 19: unexpected character");
    expect_fail("{\"message\":{},}", PW_EINVAL, "invalid JSON at offset 14: unexpected character");
}

static void test_trailing_nul_is_garbage(void **state)
{
    pw_envelope_t env;
    (void)state;
    assert_int_equal(pw_envelope_parse_wrapped("{\"message\":{}}\0", 15, &env, err, sizeof(err)), PW_EINVAL);
    assert_string_equal(err, "invalid JSON at offset 14: unexpected character");
    assert_zeroed(&env);
}

static void test_deep_nesting(void **state)
{
    enum { DEPTH = 10000 };
    char *json = malloc(2 * DEPTH + 64);
    pw_envelope_t env;
    size_t n = 0;
    (void)state;
    n += (size_t)sprintf(json, "{\"message\":{\"attributes\":");
    memset(json + n, '[', DEPTH);
    n += DEPTH;
    memset(json + n, ']', DEPTH);
    n += DEPTH;
    n += (size_t)sprintf(json + n, "}}");
    assert_int_equal(pw_envelope_parse_wrapped(json, n, &env, err, sizeof(err)), PW_EINVAL);
    assert_string_equal(err, "nesting too deep (over 64 levels)");
    assert_zeroed(&env);
    free(json);
}

static void test_is_wrapped(void **state)
{
    (void)state;
#define W(lit) pw_envelope_is_wrapped(lit, sizeof(lit) - 1)
    assert_int_equal(W("{\"message\":{}}"), 1);
    assert_int_equal(W("  {\n \"message\" :\t{\"data\":\"\"}}"), 1);
    assert_int_equal(W("{\"subscription\":\"a\\\"}\",\"x\":[{\"message\":{}},\"]\"],\"n\":-1.5e3,\"message\":{}}"), 1);
    assert_int_equal(W("{\"object\":\"whatsapp_business_account\",\"entry\":[{\"changes\":[]}]}"), 0);
    assert_int_equal(W("{\"topic\":\"message.sender.user\",\"data\":{\"message\":{\"messageId\":\"w\"}}}"), 0);
    assert_int_equal(W("{\"message\":\"hi\"}"), 0);
    assert_int_equal(W("{\"message\":[]}"), 0);
    assert_int_equal(W("{\"messages\":{}}"), 0);
    assert_int_equal(W("{\"x\":{\"message\":{}}}"), 0);
    assert_int_equal(W("[{\"message\":{}}]"), 0);
    assert_int_equal(W(""), 0);
    assert_int_equal(W("not json"), 0);
    assert_int_equal(W("{\"message\""), 0);
    assert_int_equal(W("{\"a\":\"unterminated"), 0);
    assert_int_equal(pw_envelope_is_wrapped("{\"message\":{}}", 11), 0); /* only len bytes are read */
#undef W
}

static void test_unwrapped(void **state)
{
    char body[] = "{\"object\":\"whatsapp_business_account\"}";
    char id[] = "1234", sub[] = "projects/p/subscriptions/s", key[] = "k";
    pw_unwrapped_meta_t meta = {pw_str(id, 4), PW_STR_LIT("2021-02-26T19:13:55.749Z"), pw_str(sub, strlen(sub)), pw_str(key, 1)};
    pw_envelope_t env;
    (void)state;
    assert_int_equal(pw_envelope_from_unwrapped(body, strlen(body), &meta, &env, err, sizeof(err)), 0);
    assert_int_equal(env.wrapped, 0);
    assert_null(env.attributes.base);
    assert_int_equal(env.publish_time, 1614366835 * S + 749000);
    /* env must not borrow from the request: scribble over the sources, then compare */
    memset(body, 'x', sizeof(body) - 1);
    memset(id, 'x', 4);
    memset(sub, 'x', strlen(sub));
    key[0] = 'x';
    assert_int_equal(env.data_len, 38);
    assert_memory_equal(env.data, "{\"object\":\"whatsapp_business_account\"}", 38);
    assert_str(env.message_id, "1234");
    assert_str(env.subscription, "projects/p/subscriptions/s");
    assert_str(env.ordering_key, "k");
    pw_envelope_dispose(&env);
    assert_zeroed(&env);
    pw_envelope_dispose(&env);
}

static void test_unwrapped_without_metadata(void **state)
{
    pw_unwrapped_meta_t empty = {PW_STR_LIT(""), PW_STR_NULL, PW_STR_NULL, PW_STR_NULL};
    pw_envelope_t env;
    (void)state;
    assert_int_equal(pw_envelope_from_unwrapped("x", 1, NULL, &env, err, sizeof(err)), 0);
    assert_int_equal(env.data_len, 1);
    assert_str(env.message_id, NULL);
    assert_int_equal(env.publish_time, 0);
    pw_envelope_dispose(&env);
    /* an empty body (attributes-only message) gives no data; an empty header is absent */
    assert_int_equal(pw_envelope_from_unwrapped("", 0, &empty, &env, err, sizeof(err)), 0);
    assert_null(env.data);
    assert_int_equal(env.data_len, 0);
    assert_str(env.message_id, NULL);
    pw_envelope_dispose(&env);
}

static void test_unwrapped_bad_publish_time(void **state)
{
    pw_unwrapped_meta_t meta = {PW_STR_LIT("1"), PW_STR_LIT("yesterday"), PW_STR_NULL, PW_STR_NULL};
    pw_envelope_t env;
    (void)state;
    assert_int_equal(pw_envelope_from_unwrapped("{}", 2, &meta, &env, err, sizeof(err)), PW_EINVAL);
    assert_string_equal(err, "x-goog-pubsub-publish-time: not an RFC 3339 time: \"yesterday\"");
    assert_zeroed(&env);
}

static void test_dispose_zeroed(void **state)
{
    pw_envelope_t env;
    (void)state;
    memset(&env, 0, sizeof(env));
    pw_envelope_dispose(&env);
    assert_zeroed(&env);
}

static void test_null_err_buffer(void **state)
{
    pw_envelope_t env;
    (void)state;
    assert_int_equal(pw_envelope_parse_wrapped("{", 1, &env, NULL, 0), PW_EINVAL);
    assert_int_equal(pw_envelope_parse_wrapped("{\"message\":{\"data\":\"!\"}}", 24, &env, NULL, 0), PW_EINVAL);
}

/* The envelope is read without json-c: escapes, escaped keys, duplicates and unknown members must
   mean what they mean in JSON. */
static void test_escapes_duplicates_and_unknown_members(void **state)
{
    pw_envelope_t env;
    (void)state;
    /* "eyJhIjoxfQ==" with its '/'-free text escaped as a JSON serializer may: \u0065 is 'e' */
    assert_int_equal(parse("{\"mess\\u0061ge\":{\"data\":\"\\u0065yJhIjoxfQ==\",\"messageId\":\"id\\\"1\\u00e9\","
                           "\"future\":[{\"x\":[1,2,{\"y\":null}]},-1.5e3,true]},"
                           "\"subscription\":\"projects\\/p\\/subscriptions\\/s\",\"other\":{}}",
                           &env),
                     0);
    assert_str(env.message_id, "id\"1\xc3\xa9");
    assert_str(env.subscription, "projects/p/subscriptions/s");
    assert_int_equal(env.data_len, 7);
    assert_memory_equal(env.data, "{\"a\":1}", 7);
    pw_envelope_dispose(&env);

    /* a repeated member: the last one counts (as json-c and most parsers do) */
    assert_int_equal(parse("{\"message\":{\"messageId\":\"a\",\"messageId\":\"b\"}}", &env), 0);
    assert_str(env.message_id, "b");
    pw_envelope_dispose(&env);

    /* unknown members are still validated */
    expect_fail("{\"message\":{},\"x\":[01]}", PW_EINVAL, "invalid JSON at offset 20: unexpected character");
    expect_fail("{\"message\":{\"x\":\"\\ud800\"}}", PW_EINVAL,
                "invalid JSON at offset 17: invalid escape: high surrogate without its low half");
}

/* message.data is decoded while it is scanned when it holds only base64 characters, and by the
   ordinary scan and decoder otherwise: both must give the same bytes and the same errors. */
static void expect_data(const char *json, const char *want, size_t want_len)
{
    pw_envelope_t env;
    int rc = parse(json, &env);
    if (rc != 0)
        print_error("input %s: %s\n", json, err);
    assert_int_equal(rc, 0);
    assert_int_equal(env.data_len, want_len);
    assert_memory_equal(env.data, want, want_len);
    pw_envelope_dispose(&env);
}

static void test_data_decoded_while_scanned(void **state)
{
    (void)state;
    /* no padding, one '=', two '=': the last group is decoded with the strict checks */
    expect_data("{\"message\":{\"data\":\"eyJhIjox\"}}", "{\"a\":1", 6);
    expect_data("{\"message\":{\"data\":\"eyJhIjoxMn0=\"}}", "{\"a\":12}", 8);
    expect_data("{\"message\":{\"data\":\"eyJhIjoxfQ==\",\"messageId\":\"1\"}}", "{\"a\":1}", 7);
    expect_data("{\"message\":{\"data\":  \"eyJhIjoxfQ==\"  }}", "{\"a\":1}", 7);
    /* '+' and '/', the two characters a JSON writer may escape: plain, then as "\/" */
    expect_data("{\"message\":{\"data\":\"+/+/\"}}", "\xfb\xff\xbf", 3);
    expect_data("{\"message\":{\"data\":\"+\\/+\\/\"}}", "\xfb\xff\xbf", 3);
    /* duplicates: the last one counts, whichever way each was read */
    expect_data("{\"message\":{\"data\":\"eyJhIjoxfQ==\",\"data\":\"eyJhIjox\"}}", "{\"a\":1", 6);
    expect_data("{\"message\":{\"data\":\"eyJhIjoxfQ==\",\"data\":\"+\\/+\\/\"}}", "\xfb\xff\xbf", 3);
    expect_data("{\"message\":{\"data\":\"+\\/+\\/\",\"data\":\"eyJhIjox\"}}", "{\"a\":1", 6);
    /* an empty string or null after a decoded one is absent, as it is alone */
    pw_envelope_t env;
    assert_int_equal(parse("{\"message\":{\"data\":\"eyJhIjox\",\"data\":\"\"}}", &env), 0);
    assert_null(env.data);
    pw_envelope_dispose(&env);
    assert_int_equal(parse("{\"message\":{\"data\":\"eyJhIjox\",\"data\":null}}", &env), 0);
    assert_null(env.data);
    pw_envelope_dispose(&env);
    /* a decoded data member does not hide a later error, nor an earlier one */
    expect_fail("{\"message\":{\"data\":\"eyJhIjox\",\"messageId\":5}}", PW_EINVAL, "message.messageId: not a string");
    expect_fail("{\"message\":{\"data\":\"eyJhIjox\"},\"x\":[01]}", PW_EINVAL, "invalid JSON at offset 37: unexpected character");
    expect_fail("{\"message\":{\"data\":\"eyJhIjox\",\"data\":\"eyJ!\"}}", PW_EINVAL,
                "message.data: invalid base64 character '!' at 3");
    /* a string that never ends, and one that ends inside a padded group */
    expect_fail("{\"message\":{\"data\":\"eyJhIjox", PW_EINVAL, "invalid JSON at offset 28: unexpected end of data");
    expect_fail("{\"message\":{\"data\":\"eyJhIjoxf\"Q==\"}}", PW_EINVAL, "invalid JSON at offset 30: unexpected character");
    expect_fail("{\"message\":{\"data\":\"eyJhIjoxfQ=\"}}", PW_EINVAL, "message.data: invalid base64 length 11 (not a multiple of 4)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_documented_example),
        cmocka_unit_test(test_maximal_documented_example),
        cmocka_unit_test(test_one_spelling_each),
        cmocka_unit_test(test_same_instant_spelled_differently),
        cmocka_unit_test(test_data_absent_or_empty),
        cmocka_unit_test(test_both_spellings_conflict),
        cmocka_unit_test(test_wrong_member_types),
        cmocka_unit_test(test_bad_publish_time),
        cmocka_unit_test(test_bad_base64),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_trailing_nul_is_garbage),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_is_wrapped),
        cmocka_unit_test(test_unwrapped),
        cmocka_unit_test(test_unwrapped_without_metadata),
        cmocka_unit_test(test_unwrapped_bad_publish_time),
        cmocka_unit_test(test_dispose_zeroed),
        cmocka_unit_test(test_null_err_buffer),
        cmocka_unit_test(test_escapes_duplicates_and_unknown_members),
        cmocka_unit_test(test_data_decoded_while_scanned),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
