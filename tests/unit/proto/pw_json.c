/* Unit tests for proto/pw_json.c: the strict parser's edges and null-aware member access. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <string.h>

#include "proto/pw_json.h"

static char err[256];

static int parse(const char *s, size_t len, json_object **o)
{
    err[0] = '\0';
    return pw_json_parse_strict(s, len, o, err, sizeof(err));
}

#define PARSE(lit, o) parse(lit, sizeof(lit) - 1, o)

static void test_values(void **state)
{
    json_object *o;
    (void)state;
    assert_int_equal(PARSE("{\"a\":[1,2.5,\"x\",null,true]}", &o), 0);
    assert_true(json_object_is_type(o, json_type_object));
    json_object_put(o);
    /* a top-level scalar ends at the end of input: not mistaken for truncation */
    assert_int_equal(PARSE("123", &o), 0);
    assert_int_equal(json_object_get_int(o), 123);
    json_object_put(o);
    assert_int_equal(PARSE(" \"s\" \n", &o), 0);
    assert_string_equal(json_object_get_string(o), "s");
    json_object_put(o);
    assert_int_equal(PARSE("null", &o), 0);
    assert_null(o); /* JSON null is json-c's NULL object */
}

static void test_errors(void **state)
{
    json_object *o = (json_object *)&o;
    (void)state;
    assert_int_equal(PARSE("", &o), PW_EINVAL);
    assert_string_equal(err, "empty JSON input");
    assert_null(o);
    assert_int_equal(PARSE("{\"a\":", &o), PW_EINVAL);
    assert_string_equal(err, "invalid JSON at offset 5: unexpected end of data");
    assert_int_equal(PARSE("12 3", &o), PW_EINVAL);
    assert_string_equal(err, "invalid JSON at offset 3: unexpected character");
    assert_int_equal(PARSE("{} {}", &o), PW_EINVAL);
    assert_string_equal(err, "invalid JSON at offset 3: unexpected character");
    assert_int_equal(PARSE("\"\xc0\xaf\"", &o), PW_EINVAL); /* overlong encoding of '/' */
    assert_string_equal(err, "invalid JSON at offset 1: invalid UTF-8");
    assert_null(o);
    /* the valid edges: U+0080, U+07FF, U+FFFF, U+10000, U+10FFFF, and U+E000 just past the surrogates */
    assert_int_equal(PARSE("\"\xc2\x80\xdf\xbf\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\xee\x80\x80\"", &o), 0);
    assert_int_equal(json_object_get_string_len(o), 18);
    json_object_put(o);
    assert_int_equal(PARSE("\"\xed\x9f\xbf\"", &o), 0); /* U+D7FF */
    json_object_put(o);
    assert_int_equal(PARSE("\"\xed\xbf\xbf\"", &o), PW_EINVAL);     /* U+DFFF */
    assert_int_equal(PARSE("\"\xe0\x9f\xbf\"", &o), PW_EINVAL);     /* overlong U+07FF */
    assert_int_equal(PARSE("\"\xf0\x8f\xbf\xbf\"", &o), PW_EINVAL); /* overlong U+FFFF */
    assert_int_equal(PARSE("\"\xf5\x80\x80\x80\"", &o), PW_EINVAL);
    assert_int_equal(PARSE("\"\x80\"", &o), PW_EINVAL); /* a lone continuation byte */
}

static void test_too_big(void **state)
{
    json_object *o;
    (void)state;
    /* refused on the length alone, before a byte is read */
    assert_int_equal(parse("{}", (size_t)INT_MAX + 1, &o), PW_ETOOBIG);
    assert_string_equal(err, "JSON input of 2147483648 bytes is over the parser's limit");
}

static void test_depth_limit_exact(void **state)
{
    char body[256];
    json_object *o;
    (void)state;
    memset(body, '[', 64);
    memset(body + 64, ']', 64);
    assert_int_equal(parse(body, 128, &o), 0);
    json_object_put(o);
    memset(body, '[', 65);
    memset(body + 65, ']', 65);
    assert_int_equal(parse(body, 130, &o), PW_EINVAL);
    assert_string_equal(err, "nesting too deep (over 64 levels)");
    assert_null(o);
}

static void test_member_and_str(void **state)
{
    json_object *o;
    (void)state;
    assert_int_equal(PARSE("{\"s\":\"a\\u0000b\",\"n\":null,\"i\":1}", &o), 0);
    pw_str_t s = pw_json_str(pw_json_member(o, "s"));
    assert_int_equal(s.len, 3);
    assert_memory_equal(s.base, "a\0b", 3);
    assert_null(pw_json_member(o, "n"));
    assert_null(pw_json_member(o, "absent"));
    assert_null(pw_json_member(NULL, "s"));
    assert_null(pw_json_member(pw_json_member(o, "i"), "s")); /* not an object */
    assert_null(pw_json_str(pw_json_member(o, "i")).base);
    assert_null(pw_json_str(NULL).base);
    json_object_put(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),         cmocka_unit_test(test_errors),
        cmocka_unit_test(test_too_big),        cmocka_unit_test(test_depth_limit_exact),
        cmocka_unit_test(test_member_and_str),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
