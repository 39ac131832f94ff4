/* Unit tests for worker/cols.c: the array literals every batched statement is given. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <string.h>

#include "worker/cols.h"

static void test_strings_are_quoted_and_escaped(void **state)
{
    (void)state;
    pw_cols_t c = {0};
    pw_cols_begin(&c, 1);
    pw_cols_str(&c, 0, PW_STR_LIT("plain"));
    pw_cols_str(&c, 0, PW_STR_LIT("say \"hi\" \\ {x,y}"));
    pw_cols_str(&c, 0, PW_STR_NULL);
    pw_cols_str(&c, 0, PW_STR_LIT(""));
    assert_string_equal(c.col[0].base, "\"plain\",\"say \\\"hi\\\" \\\\ {x,y}\",NULL,\"\"");
    assert_int_equal(c.replaced, 0);
    pw_cols_dispose(&c);
}

static void test_nul_bytes_become_replacement_characters(void **state)
{
    (void)state;
    pw_cols_t c = {0};
    pw_cols_begin(&c, 1);
    pw_cols_str(&c, 0, pw_str("a\0b", 3));
    assert_string_equal(c.col[0].base, "\"a\xEF\xBF\xBD" "b\"");
    assert_int_equal(c.replaced, 1);
    pw_cols_dispose(&c);
}

static void test_jsonb_text_is_written_as_given(void **state)
{
    (void)state;
    /* proto/ hands over the value's text as received (numbers exact, escapes as they were) */
    const char *text = "{\"n\": 123456789012345678901234567890, \"t\":\"x\\ufffdy\",\"k\":\"\\\\u0000\"}";
    pw_cols_t c = {0};
    pw_cols_begin(&c, 1);
    pw_cols_jsonb(&c, 0, pw_str(text, strlen(text)));
    pw_cols_jsonb(&c, 0, PW_STR_NULL);
    assert_string_equal(c.col[0].base,
                        "\"{\\\"n\\\": 123456789012345678901234567890, \\\"t\\\":\\\"x\\\\ufffdy\\\",\\\"k\\\":\\\"\\\\\\\\u0000\\\"}\",NULL");
    assert_int_equal(c.replaced, 0);
    pw_cols_dispose(&c);
}

static void test_phone_numbers_keep_digits_behind_a_plus(void **state)
{
    (void)state;
    pw_cols_t c = {0};
    pw_cols_begin(&c, 1);
    pw_cols_phone(&c, 0, PW_STR_LIT("919876543210"));
    pw_cols_phone(&c, 0, PW_STR_LIT("+1 (650) 555-1234"));
    pw_cols_phone(&c, 0, PW_STR_LIT("US.1349"));
    pw_cols_phone(&c, 0, PW_STR_LIT("abc"));
    pw_cols_phone(&c, 0, PW_STR_NULL);
    assert_string_equal(c.col[0].base, "\"+919876543210\",\"+16505551234\",\"+1349\",NULL,NULL");
    pw_cols_dispose(&c);
}

static void test_times_are_utc_with_explicit_offset(void **state)
{
    (void)state;
    pw_cols_t c = {0};
    pw_cols_begin(&c, 1);
    pw_cols_time(&c, 0, 1696329600LL * 1000000 + 123456);
    pw_cols_time(&c, 0, 0);
    assert_string_equal(c.col[0].base, "\"2023-10-03 10:40:00.123456+00\",NULL");
    pw_cols_dispose(&c);
}

static void test_bytea_is_hex_with_escaped_backslash(void **state)
{
    (void)state;
    pw_cols_t c = {0};
    pw_cols_begin(&c, 2);
    pw_cols_bytea(&c, 0, "\x00\xff{", 3);
    pw_cols_cstr(&c, 1, "r");
    pw_cols_end_row(&c);
    pw_cols_bytea(&c, 0, "", 0);
    pw_cols_cstr(&c, 1, NULL);
    pw_cols_end_row(&c);
    assert_string_equal(c.col[0].base, "\"\\\\x00ff7b\",\"\\\\x\"");
    assert_string_equal(c.col[1].base, "\"r\",NULL");
    assert_int_equal(c.nrows, 2);
    pw_cols_dispose(&c);
}

static void test_begin_resets_for_the_next_batch(void **state)
{
    (void)state;
    pw_cols_t c = {0};
    pw_cols_begin(&c, 1);
    pw_cols_cstr(&c, 0, "first");
    pw_cols_end_row(&c);
    pw_cols_begin(&c, 1);
    assert_int_equal(c.nrows, 0);
    pw_cols_cstr(&c, 0, "second");
    assert_string_equal(c.col[0].base, "\"second\"");
    pw_cols_dispose(&c);
    pw_cols_dispose(&c); /* idempotent */
}

static void test_records_are_quoted_twice(void **state)
{
    (void)state;
    pw_cols_t c = {0};
    pw_cols_begin(&c, 1);
    const pw_str_t a[] = {PW_STR_LIT("919876543210"), PW_STR_NULL, PW_STR_LIT("say \"hi\" \\ (x,y)"), PW_STR_LIT("")};
    pw_cols_record(&c, 0, a, 4);
    const pw_str_t b[] = {PW_STR_NULL, pw_str("a\0b", 3)};
    pw_cols_record(&c, 0, b, 2);
    /* the record literal ("919876543210",,"say \"hi\" \\ (x,y)",""), then that text as one quoted array element */
    assert_string_equal(c.col[0].base, "\"(\\\"919876543210\\\",,\\\"say \\\\\\\"hi\\\\\\\" \\\\\\\\ (x,y)\\\",\\\"\\\")\"" "," "\"(,\\\"a\xEF\xBF\xBD" "b\\\")\"");
    assert_int_equal(c.replaced, 1);
    pw_cols_dispose(&c);
}

/* The quoting as written out byte by byte: what append_quoted's runs must give. */
static size_t reference_quote(const char *s, size_t n, char *out, size_t *replaced)
{
    size_t o = 0;
    out[o++] = '"';
    for (size_t k = 0; k < n; k++) {
        if (s[k] == '\0') {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            (*replaced)++;
            continue;
        }
        if (s[k] == '"' || s[k] == '\\')
            out[o++] = '\\';
        out[o++] = s[k];
    }
    out[o++] = '"';
    return o;
}

/* Strings of up to 9 bytes over a, '"', '\\', NUL and a lead byte of a two-byte character: as the reference quotes them. */
static void test_quoting_equals_the_byte_by_byte_rule(void **state)
{
    (void)state;
    static const char alphabet[] = {'a', '"', '\\', '\0', '\xC3'};
    char s[9], want[64];
    for (size_t n = 0; n <= 9; n++) {
        size_t total = 1;
        for (size_t k = 0; k < n; k++)
            total *= n <= 6 ? 5 : 3; /* up to 6 bytes every combination of the five; longer, of three per position */
        for (size_t x = 0; x < total; x++) {
            size_t v = x, base = n <= 6 ? 5 : 3;
            for (size_t k = 0; k < n; k++, v /= base)
                s[k] = alphabet[(v % base + (n <= 6 ? 0 : 1 + k % 2)) % 5];
            size_t replaced = 0;
            size_t len = reference_quote(s, n, want, &replaced);
            pw_cols_t c = {0};
            pw_cols_begin(&c, 1);
            pw_cols_str(&c, 0, pw_str(s, n));
            assert_int_equal(c.col[0].len, len);
            assert_memory_equal(c.col[0].base, want, len);
            assert_int_equal(c.replaced, replaced);
            pw_cols_dispose(&c);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strings_are_quoted_and_escaped),
        cmocka_unit_test(test_quoting_equals_the_byte_by_byte_rule),
        cmocka_unit_test(test_records_are_quoted_twice),
        cmocka_unit_test(test_nul_bytes_become_replacement_characters),
        cmocka_unit_test(test_jsonb_text_is_written_as_given),
        cmocka_unit_test(test_phone_numbers_keep_digits_behind_a_plus),
        cmocka_unit_test(test_times_are_utc_with_explicit_offset),
        cmocka_unit_test(test_bytea_is_hex_with_escaped_backslash),
        cmocka_unit_test(test_begin_resets_for_the_next_batch),
    };
    return cmocka_run_group_tests_name("worker/cols", tests, NULL, NULL);
}
