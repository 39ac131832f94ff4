/* Unit tests for proto/pw_str.c: quoting input into reasons, trimming cut UTF-8, the error helper. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "proto/jscan.h"
#include "proto/pw_str.h"

static const char *quote(const char *s, size_t len, size_t max, size_t outlen)
{
    static char out[256];
    assert_true(outlen <= sizeof out);
    memset(out, 'X', sizeof out);
    const char *q = pw_str_quote(out, outlen, pw_str(s, len), max);
    assert_ptr_equal(q, out);
    assert_int_equal(pw_json_utf8_invalid_at(out, strlen(out)), strlen(out)); /* always valid UTF-8 */
    return out;
}

#define Q(lit, max) quote(lit, sizeof(lit) - 1, max, 256)

static void test_quote_keeps_whole_characters(void **state)
{
    (void)state;
    char ts[64];
    memset(ts, 'a', 39);
    memcpy(ts + 39, "\xe2\x82\xac", 3); /* "a" x 39 + the euro sign: 42 bytes */
    assert_string_equal(quote(ts, 42, 40, 256), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"); /* the cut sign left out */
    assert_string_equal(quote(ts, 42, 42, 256), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xe2\x82\xac");
    assert_string_equal(Q("\xf0\x9f\x91\x8d", 3), "");
    assert_string_equal(Q("\xf0\x9f\x91\x8dx", 4), "\xf0\x9f\x91\x8d");
    assert_string_equal(Q("abc", 2), "ab");
    assert_string_equal(Q("", 40), "");
    assert_string_equal(quote(NULL, 0, 40, 256), "");
}

static void test_quote_escapes_and_replaces(void **state)
{
    (void)state;
    assert_string_equal(Q("a\nb\tc\rd", 40), "a\\nb\\tc\\rd");
    assert_string_equal(Q("a\0b", 40), "a\\u0000b");
    assert_string_equal(Q("\x01\x1f\x7f", 40), "\\u0001\\u001f\\u007f");
    assert_string_equal(Q("say \"hi\" \\o/", 40), "say \\\"hi\\\" \\\\o/");
    assert_string_equal(Q("\xff" "a\xc0\xaf" "b\xed\xa0\x80", 40),
                        "\xef\xbf\xbd" "a\xef\xbf\xbd\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    assert_string_equal(Q("\xe2\x82", 40), "\xef\xbf\xbd\xef\xbf\xbd"); /* a sequence cut short in the input */
}

static void test_quote_fits_the_buffer(void **state)
{
    (void)state;
    assert_string_equal(quote("abcdef", 6, 40, 4), "abc");
    assert_string_equal(quote("a\xe2\x82\xac", 4, 40, 4), "a"); /* the sign does not fit with the NUL */
    assert_string_equal(quote("a\xe2\x82\xac", 4, 40, 5), "a\xe2\x82\xac");
    assert_string_equal(quote("a\n", 2, 40, 3), "a"); /* never half an escape */
    char one[1] = {'X'};
    pw_str_quote(one, 1, PW_STR_LIT("abc"), 40);
    assert_int_equal(one[0], '\0');
    pw_str_quote(one, 0, PW_STR_LIT("abc"), 40); /* nothing written */
}

static void test_trim_and_set_err(void **state)
{
    (void)state;
    char s[16];
    strcpy(s, "ab\xe2\x82");
    pw_str_trim_utf8(s);
    assert_string_equal(s, "ab");
    strcpy(s, "ab\xe2\x82\xac");
    pw_str_trim_utf8(s);
    assert_string_equal(s, "ab\xe2\x82\xac");
    strcpy(s, "ab\xf0");
    pw_str_trim_utf8(s);
    assert_string_equal(s, "ab");
    strcpy(s, "");
    pw_str_trim_utf8(s);
    assert_string_equal(s, "");

    char err[6];
    assert_int_equal(pw_set_err(err, sizeof err, PW_EINVAL, "%s", "abcd\xe2\x82\xac"), PW_EINVAL);
    assert_string_equal(err, "abcd"); /* not "abcd\xe2" */
    assert_int_equal(pw_set_err(err, sizeof err, PW_ERANGE, "x%dy", 1), PW_ERANGE);
    assert_string_equal(err, "x1y");
    assert_int_equal(pw_set_err(NULL, 0, PW_EINVAL, "ignored"), PW_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quote_keeps_whole_characters),
        cmocka_unit_test(test_quote_escapes_and_replaces),
        cmocka_unit_test(test_quote_fits_the_buffer),
        cmocka_unit_test(test_trim_and_set_err),
    };
    return cmocka_run_group_tests_name("proto/pw_str", tests, NULL, NULL);
}
