/* Unit tests for proto/jscan.c: the tree-less strict JSON scanner behind the envelope parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "proto/jscan.h"

/* Validates a whole document; returns 0, or -1 with why/at. */
static int validate(const char *doc, const char **why, size_t *at)
{
    pw_jscan_t sc;
    pw_jval_t v;
    pw_jscan_init(&sc, doc, strlen(doc), 4);
    int rc = pw_jscan_value(&sc, &v) == 0 && pw_jscan_end(&sc) == 0 ? 0 : -1;
    *why = sc.why;
    *at = sc.at;
    return rc;
}

static void expect_valid(const char *doc)
{
    const char *why;
    size_t at;
    if (validate(doc, &why, &at) != 0)
        print_error("rejected: %s (%s at %zu)\n", doc, why, at);
    assert_int_equal(validate(doc, &why, &at), 0);
}

static void expect_invalid(const char *doc, const char *want_why, size_t want_at)
{
    const char *why;
    size_t at;
    if (validate(doc, &why, &at) == 0)
        print_error("accepted: %s\n", doc);
    assert_int_equal(validate(doc, &why, &at), -1);
    assert_string_equal(why, want_why);
    assert_int_equal(at, want_at);
}

static void test_valid_documents(void **state)
{
    (void)state;
    expect_valid("{}");
    expect_valid(" [ ] ");
    expect_valid("{\"a\":[1,-2.5e+3,0,0.0,1E9,true,false,null,\"x\"],\"b\":{\"c\":{}}}");
    expect_valid("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\ud83d\\ude00\"");
    expect_valid("-0");
    expect_valid("[[[[]]]]"); /* exactly the depth limit (4) */
}

static void test_invalid_documents(void **state)
{
    (void)state;
    expect_invalid("", "unexpected end of data", 0);
    expect_invalid("{\"a\":1,}", "unexpected character", 7);
    expect_invalid("{'a':1}", "unexpected character", 1);
    expect_invalid("[1 2]", "unexpected character", 3);
    expect_invalid("01", "unexpected character", 1);
    expect_invalid("1.", "unexpected end of data", 2);
    expect_invalid("-", "unexpected end of data", 1);
    expect_invalid("1e", "unexpected end of data", 2);
    expect_invalid("NaN", "unexpected character", 0);
    expect_invalid("tru", "unexpected end of data", 3);
    expect_invalid("nul1", "unexpected character", 3);
    expect_invalid("\"a\tb\"", "unexpected character", 2); /* raw control character */
    expect_invalid("\"abc", "unexpected end of data", 4);
    expect_invalid("\"\\x\"", "invalid escape", 1);
    expect_invalid("\"\\u12g4\"", "invalid escape", 1);
    expect_invalid("\"\\udc00\"", "invalid escape: lone low surrogate", 1);
    expect_invalid("\"\\ud800x\"", "invalid escape: high surrogate without its low half", 1);
    expect_invalid("\"\\ud800\\u0041\"", "invalid escape: high surrogate without its low half", 1);
    expect_invalid("{} {}", "unexpected character", 3);
    expect_invalid("[[[[[]]]]]", "nesting too deep", 4);
    expect_invalid("{\"a\":{\"b\":{\"c\":{\"d\":{}}}}}", "nesting too deep", 20);
}

static void test_unescape_and_compare(void **state)
{
    (void)state;
    const char *doc = "{\"mess\\u0061ge\":\"a\\/b\\u00e9\\ud83d\\ude00\\n\"}";
    pw_jscan_t sc;
    pw_jscan_init(&sc, doc, strlen(doc), 8);
    int first = 1;
    pw_jval_t key, v;
    assert_int_equal(pw_jscan_object_next(&sc, &first, &key), 1);
    assert_true(key.escaped);
    assert_true(pw_jscan_string_is(&sc, &key, "message"));
    assert_false(pw_jscan_string_is(&sc, &key, "messag"));
    assert_int_equal(pw_jscan_value(&sc, &v), 0);
    char out[64];
    size_t n = pw_jscan_unescape(&sc, &v, out);
    assert_int_equal(n, 10);
    assert_memory_equal(out, "a/b\xc3\xa9\xf0\x9f\x98\x80\n", 10);
    assert_int_equal(pw_jscan_object_next(&sc, &first, &key), 0);
    assert_int_equal(pw_jscan_end(&sc), 0);
}

static void test_value_extents_and_peek(void **state)
{
    (void)state;
    const char *doc = " {\"n\": -12.5 , \"s\":\"xy\", \"o\":{\"k\":[1]}} ";
    pw_jscan_t sc;
    pw_jscan_init(&sc, doc, strlen(doc), 8);
    assert_int_equal(pw_jscan_peek(&sc), PW_J_OBJECT);
    int first = 1;
    pw_jval_t key, v;
    assert_int_equal(pw_jscan_object_next(&sc, &first, &key), 1);
    assert_int_equal(pw_jscan_value(&sc, &v), 0);
    assert_int_equal(v.type, PW_J_NUMBER);
    assert_int_equal(v.end - v.start, 5);
    assert_memory_equal(doc + v.start, "-12.5", 5);
    assert_int_equal(pw_jscan_object_next(&sc, &first, &key), 1);
    assert_int_equal(pw_jscan_value(&sc, &v), 0);
    assert_int_equal(v.type, PW_J_STRING);
    assert_memory_equal(doc + v.start, "xy", 2);
    assert_int_equal(pw_jscan_object_next(&sc, &first, &key), 1);
    assert_int_equal(pw_jscan_peek(&sc), PW_J_OBJECT);
    assert_int_equal(pw_jscan_value(&sc, &v), 0);
    assert_int_equal(v.type, PW_J_OBJECT);
    assert_memory_equal(doc + v.start, "{\"k\":[1]}", 9);
    assert_int_equal(pw_jscan_object_next(&sc, &first, &key), 0);
    assert_int_equal(pw_jscan_end(&sc), 0);
    assert_int_equal(pw_jscan_peek(&sc), PW_J_NONE);
}

/* One escape form, alone in a string, then at its start and at its end: the lossy verdict, the
   unescaped bytes, the sanitized text (same length), and whether strict mode accepts it. */
typedef struct {
    const char *escape;    /* as written in JSON */
    int lossy;
    const char *unescaped; /* its bytes */
    size_t unescaped_len;
    const char *sanitized; /* its JSON text after pw_jscan_sanitize */
    int strict_ok;         /* accepted without lone_surrogates_ok */
} escape_case_t;

static void check_escape_in(const escape_case_t *c, const char *head, const char *tail)
{
    char doc[128], want[128], text[128];
    snprintf(doc, sizeof doc, "[\"%s%s%s\"]", head, c->escape, tail);
    size_t want_len = (size_t)snprintf(want, sizeof want, "%s", head);
    memcpy(want + want_len, c->unescaped, c->unescaped_len);
    want_len += c->unescaped_len;
    want_len += (size_t)snprintf(want + want_len, sizeof want - want_len, "%s", tail);

    pw_jscan_t sc;
    pw_jval_t arr, v;
    int first = 1;
    pw_jscan_init(&sc, doc, strlen(doc), 4);
    sc.lone_surrogates_ok = 1;
    assert_int_equal(pw_jscan_array_next(&sc, &first, &v), 1);
    if (v.lossy != c->lossy)
        print_error("%s: lossy %d\n", doc, v.lossy);
    assert_int_equal(v.lossy, c->lossy);
    assert_int_equal(sc.n_lossy, (size_t)c->lossy);
    char out[128];
    size_t n = pw_jscan_unescape(&sc, &v, out);
    assert_int_equal(n, want_len);
    assert_memory_equal(out, want, n);
    assert_int_equal(pw_jscan_array_next(&sc, &first, &v), 0);

    /* the whole array: lossy inside, and sanitized into the same length */
    pw_jscan_init(&sc, doc, strlen(doc), 4);
    sc.lone_surrogates_ok = 1;
    assert_int_equal(pw_jscan_value(&sc, &arr), 0);
    assert_int_equal(arr.lossy, c->lossy);
    assert_int_equal(pw_jscan_sanitize(&sc, &arr, text), strlen(doc));
    snprintf(want, sizeof want, "[\"%s%s%s\"]", head, c->sanitized, tail);
    assert_memory_equal(text, want, strlen(doc));

    pw_jscan_init(&sc, doc, strlen(doc), 4);
    assert_int_equal(pw_jscan_value(&sc, &arr) == 0, c->strict_ok);
}

static void test_escapes_postgresql_cannot_store(void **state)
{
    static const escape_case_t CASES[] = {
        {"\\ud83d\\udc4d", 0, "\xf0\x9f\x91\x8d", 4, "\\ud83d\\udc4d", 1}, /* a correct pair (json.dumps of an emoji) */
        {"\\uD83D\\uDC4D", 0, "\xf0\x9f\x91\x8d", 4, "\\uD83D\\uDC4D", 1},
        {"\\ud83d", 1, "\xef\xbf\xbd", 3, "\\ufffd", 0},                 /* lone high */
        {"\\udc4d", 1, "\xef\xbf\xbd", 3, "\\ufffd", 0},                 /* lone low */
        {"\\udc4d\\ud83d", 1, "\xef\xbf\xbd\xef\xbf\xbd", 6, "\\ufffd\\ufffd", 0}, /* reversed pair */
        {"\\ud83d\\u0041", 1, "\xef\xbf\xbd" "A", 4, "\\ufffd\\u0041", 0}, /* high, then not a low half */
        {"\\ud83d\\ud83d\\udc4d", 1, "\xef\xbf\xbd\xf0\x9f\x91\x8d", 7, "\\ufffd\\ud83d\\udc4d", 0},
        /* U+1DA00, a pair whose code point's low 16 bits look like a half (json-c 0.16 reads U+FFFD) */
        {"\\ud836\\ude00", 0, "\xf0\x9d\xa8\x80", 4, "\\ud836\\ude00", 1},
        {"\\ud83d\\ud836\\ude00", 1, "\xef\xbf\xbd\xf0\x9d\xa8\x80", 7, "\\ufffd\\ud836\\ude00", 0},
        {"\\ude00\\ud836\\ude00", 1, "\xef\xbf\xbd\xf0\x9d\xa8\x80", 7, "\\ufffd\\ud836\\ude00", 0},
        {"\\u0000", 1, "\0", 1, "\\ufffd", 1},                            /* NUL: valid JSON, not storable */
        {"\\\\u0000", 0, "\\u0000", 6, "\\\\u0000", 1},                   /* an escaped backslash, then text */
        {"\\\\\\u0000", 1, "\\\0", 2, "\\\\\\ufffd", 1},                  /* escaped backslash, then NUL */
        {"\\\\ud83d", 0, "\\ud83d", 6, "\\\\ud83d", 1},
        {"\\u00e9", 0, "\xc3\xa9", 2, "\\u00e9", 1},
    };
    (void)state;
    for (size_t k = 0; k < sizeof CASES / sizeof CASES[0]; k++) {
        check_escape_in(&CASES[k], "", "");
        check_escape_in(&CASES[k], "", "tail");
        check_escape_in(&CASES[k], "head ", "");
    }
}

static void test_lossy_counts_keys_and_containers(void **state)
{
    (void)state;
    const char *doc = "{\"k\\u0000\":1,\"a\":[\"ok\",{\"b\":\"\\udc00\"}],\"c\":\"\\ud83d\\ude00\"}";
    pw_jscan_t sc;
    pw_jval_t key, v;
    int first = 1;
    pw_jscan_init(&sc, doc, strlen(doc), 8);
    sc.lone_surrogates_ok = 1;
    assert_int_equal(pw_jscan_object_next(&sc, &first, &key), 1);
    assert_true(key.lossy);
    assert_int_equal(pw_jscan_value(&sc, &v), 0);
    assert_false(v.lossy);
    assert_int_equal(pw_jscan_object_next(&sc, &first, &key), 1);
    assert_int_equal(pw_jscan_value(&sc, &v), 0);
    assert_true(v.lossy); /* an array holding a lossy string */
    assert_int_equal(pw_jscan_object_next(&sc, &first, &key), 1);
    assert_int_equal(pw_jscan_value(&sc, &v), 0);
    assert_false(v.lossy);
    assert_int_equal(sc.n_lossy, 2);
    size_t lossy = 0;
    assert_int_equal(pw_json_validate(doc, strlen(doc), &lossy, NULL, 0), 0);
    assert_int_equal(lossy, 2);
}

/*
 * The trusted read of a container equals the validating read: by its brackets (counted outside
 * strings), and by the spans pw_json_validate_spans recorded (all of them, or only the first two,
 * the others then by their brackets).
 */
static void check_trusted_at(const char *doc, size_t at)
{
    pw_jspan_t spans[64];
    size_t n_all, n_two, lossy;
    assert_int_equal(pw_json_validate_spans(doc, strlen(doc), &lossy, spans, 64, &n_all, NULL, 0), 0);
    assert_int_equal(pw_json_validate_spans(doc, strlen(doc), &lossy, spans, 2, &n_two, NULL, 0), 0);
    assert_true(n_two == (n_all < 2 ? n_all : 2));
    assert_int_equal(pw_json_validate_spans(doc, strlen(doc), &lossy, spans, 64, &n_all, NULL, 0), 0);
    for (int way = 0; way < 3; way++) {
        pw_jscan_t strict, fast;
        pw_jval_t a, b;
        pw_jscan_init(&strict, doc, strlen(doc), 16);
        strict.lone_surrogates_ok = 1;
        strict.i = at;
        fast = strict;
        fast.trusted = 1;
        fast.spans = way == 0 ? NULL : spans;
        fast.n_spans = way == 0 ? 0 : way == 1 ? n_all : n_two;
        assert_int_equal(pw_jscan_value(&strict, &a), 0);
        assert_int_equal(pw_jscan_value(&fast, &b), 0);
        assert_int_equal(b.type, a.type);
        assert_int_equal(b.start, a.start);
        assert_int_equal(b.end, a.end);
        assert_int_equal(b.lossy, a.lossy);
        assert_int_equal(fast.n_lossy, strict.n_lossy);
        assert_int_equal(fast.i, strict.i);
    }
}

static void test_trusted_read_equals_validating_read(void **state)
{
    (void)state;
    static const char *const docs[] = {
        "{}",
        "[ ]",
        " {\"a\": [1, 2, {\"b\": \"}]{[\"}], \"c\": \"\\\"]\\\\\"} ",
        "[\"\\\\\", \"x\\\\\\\"}\", [[[]]], {\"\":{}}]",
        "{\"k\\u0000\": 1, \"a\": [\"ok\", {\"b\": \"\\udc00\"}], \"c\": \"\\ud83d\\ude00\"}",
        "[\"\\ud800x\", \"\\u00e9\\u20ac\", \"caf\xc3\xa9 \xe2\x82\xac\"]",
        "{\"n\": -1.5e3, \"t\": true, \"f\": false, \"z\": null, \"s\": \"\\/\\b\\f\\n\\r\\t\"}",
        "[{\"a\\u0000\": [{}, [\"\\udc00\"]]}, {\"b\": {\"c\": [\"\\u0000\", {\"d\": \"\\ud800\"}]}}, [[], {}]]",
    };
    for (size_t k = 0; k < sizeof docs / sizeof docs[0]; k++) {
        const char *doc = docs[k];
        size_t lossy;
        assert_int_equal(pw_json_validate(doc, strlen(doc), &lossy, NULL, 0), 0);
        /* every container of the document, from its opening bracket (brackets inside strings are skipped) */
        int in_string = 0;
        for (size_t i = 0; doc[i] != '\0'; i++) {
            if (in_string) {
                if (doc[i] == '\\')
                    i++;
                else if (doc[i] == '"')
                    in_string = 0;
            } else if (doc[i] == '"') {
                in_string = 1;
            } else if (doc[i] == '{' || doc[i] == '[') {
                check_trusted_at(doc, i);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_documents),
        cmocka_unit_test(test_invalid_documents),
        cmocka_unit_test(test_unescape_and_compare),
        cmocka_unit_test(test_value_extents_and_peek),
        cmocka_unit_test(test_escapes_postgresql_cannot_store),
        cmocka_unit_test(test_lossy_counts_keys_and_containers),
        cmocka_unit_test(test_trusted_read_equals_validating_read),
    };
    return cmocka_run_group_tests_name("proto/jscan", tests, NULL, NULL);
}
