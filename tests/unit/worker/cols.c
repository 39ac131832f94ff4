/* Unit tests for worker/cols.c: the array elements every batched statement is given. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "worker/cols.h"

static const uint32_t TEXT[] = {PW_OID_TEXT};

/* Asserts that a column holds exactly the binary elements want[0..nwant), of lengths lens[] (want[i] NULL: a NULL element). */
static void assert_elements(const pw_buf_t *col, const char *const *want, size_t nwant, const size_t *lens)
{
    size_t at = 0;
    for (size_t i = 0; i < nwant; i++) {
        assert_true(at + 4 <= col->len);
        int32_t len = (int32_t)pw_get_be32(col->base + at);
        at += 4;
        if (want[i] == NULL) {
            assert_int_equal(len, -1);
            continue;
        }
        assert_int_equal(len, lens[i]);
        assert_memory_equal(col->base + at, want[i], lens[i]);
        at += lens[i];
    }
    assert_int_equal(at, col->len);
}

static void test_text_is_sent_as_it_is(void **state)
{
    (void)state;
    pw_cols_t c = {0};
    pw_cols_begin(&c, 1, TEXT);
    pw_cols_str(&c, 0, PW_STR_LIT("plain"));
    pw_cols_str(&c, 0, PW_STR_LIT("say \"hi\" \\ {x,y}"));
    pw_cols_str(&c, 0, PW_STR_NULL);
    pw_cols_str(&c, 0, PW_STR_LIT(""));
    pw_cols_cstr(&c, 0, NULL);
    const char *const want[] = {"plain", "say \"hi\" \\ {x,y}", NULL, "", NULL};
    const size_t lens[] = {5, 16, 0, 0, 0};
    assert_elements(&c.col[0], want, 5, lens);
    assert_int_equal(c.replaced, 0);
    pw_cols_dispose(&c);
}

static void test_nul_bytes_become_replacement_characters(void **state)
{
    (void)state;
    pw_cols_t c = {0};
    pw_cols_begin(&c, 1, TEXT);
    pw_cols_str(&c, 0, pw_str("a\0b\0", 4));
    pw_cols_str(&c, 0, pw_str("\0", 1));
    const char *const want[] = {"a\xEF\xBF\xBD" "b\xEF\xBF\xBD", "\xEF\xBF\xBD"};
    const size_t lens[] = {8, 3};
    assert_elements(&c.col[0], want, 2, lens);
    assert_int_equal(c.replaced, 3);
    pw_cols_dispose(&c);
}

static void test_jsonb_is_version_one_then_the_text_as_given(void **state)
{
    (void)state;
    /* proto/ hands over the value's text as received (numbers exact, escapes as they were) */
    const char *text = "{\"n\": 123456789012345678901234567890, \"k\":\"\\u0000\"}";
    static const uint32_t types[] = {PW_OID_JSONB};
    pw_cols_t c = {0};
    pw_cols_begin(&c, 1, types);
    pw_cols_jsonb(&c, 0, pw_str(text, strlen(text)));
    pw_cols_jsonb(&c, 0, PW_STR_NULL);
    char v1[128];
    v1[0] = 1;
    memcpy(v1 + 1, text, strlen(text));
    const char *const want[] = {v1, NULL};
    const size_t lens[] = {1 + strlen(text), 0};
    assert_elements(&c.col[0], want, 2, lens);
    pw_cols_dispose(&c);
}

static void test_phone_numbers_keep_digits_behind_a_plus(void **state)
{
    (void)state;
    pw_cols_t c = {0};
    pw_cols_begin(&c, 1, TEXT);
    pw_cols_phone(&c, 0, PW_STR_LIT("919876543210"));
    pw_cols_phone(&c, 0, PW_STR_LIT("+1 (650) 555-1234"));
    pw_cols_phone(&c, 0, PW_STR_LIT("US.1349"));
    pw_cols_phone(&c, 0, PW_STR_LIT("abc"));
    pw_cols_phone(&c, 0, PW_STR_NULL);
    const char *const want[] = {"+919876543210", "+16505551234", "+1349", NULL, NULL};
    const size_t lens[] = {13, 12, 5, 0, 0};
    assert_elements(&c.col[0], want, 5, lens);
    pw_cols_dispose(&c);
}

/* timestamptz and bigint: 8 bytes, big-endian; a time counts microseconds from 2000-01-01T00:00:00Z. */
static void test_times_and_ids_are_eight_bytes(void **state)
{
    (void)state;
    static const uint32_t types[] = {PW_OID_TIMESTAMPTZ, PW_OID_INT8};
    pw_cols_t c = {0};
    pw_cols_begin(&c, 2, types);
    pw_cols_time(&c, 0, 1696329600LL * 1000000 + 123456); /* 2023-10-03T10:40:00.123456Z */
    pw_cols_id(&c, 1, 0x0102030405060708LL);
    pw_cols_end_row(&c);
    pw_cols_time(&c, 0, 946684800LL * 1000000 - 1); /* 1999-12-31T23:59:59.999999Z: -1 */
    pw_cols_id(&c, 1, 0);
    pw_cols_end_row(&c);
    pw_cols_time(&c, 0, 0);
    pw_cols_id(&c, 1, 1);
    pw_cols_end_row(&c);
    /* (1696329600 - 946684800) * 1e6 + 123456 = 749644800123456 = 0x0002A9CC4804E240 */
    const char *const times[] = {"\x00\x02\xA9\xCC\x48\x04\xE2\x40", "\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF", NULL};
    const char *const ids[] = {"\x01\x02\x03\x04\x05\x06\x07\x08", NULL, "\0\0\0\0\0\0\0\x01"};
    const size_t lens[] = {8, 8, 8};
    assert_elements(&c.col[0], times, 3, lens);
    assert_elements(&c.col[1], ids, 3, lens);
    assert_int_equal(c.nrows, 3);
    pw_cols_dispose(&c);
}

static void test_bytea_is_its_bytes(void **state)
{
    (void)state;
    static const uint32_t types[] = {PW_OID_BYTEA};
    pw_cols_t c = {0};
    pw_cols_begin(&c, 1, types);
    pw_cols_bytea(&c, 0, "\x00\xff{", 3);
    pw_cols_bytea(&c, 0, "", 0);
    const char *const want[] = {"\x00\xff{", ""};
    const size_t lens[] = {3, 0};
    assert_elements(&c.col[0], want, 2, lens);
    assert_int_equal(c.replaced, 0); /* bytes, not text: a NUL is kept */
    pw_cols_dispose(&c);
}

static void test_begin_resets_for_the_next_batch(void **state)
{
    (void)state;
    pw_cols_t c = {0};
    pw_cols_begin(&c, 1, TEXT);
    pw_cols_cstr(&c, 0, "first");
    pw_cols_end_row(&c);
    pw_cols_begin(&c, 1, TEXT);
    assert_int_equal(c.nrows, 0);
    pw_cols_cstr(&c, 0, "second");
    const char *const want[] = {"second"};
    const size_t lens[] = {6};
    assert_elements(&c.col[0], want, 1, lens);
    pw_cols_dispose(&c);
    pw_cols_dispose(&c); /* idempotent */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_is_sent_as_it_is),
        cmocka_unit_test(test_nul_bytes_become_replacement_characters),
        cmocka_unit_test(test_jsonb_is_version_one_then_the_text_as_given),
        cmocka_unit_test(test_phone_numbers_keep_digits_behind_a_plus),
        cmocka_unit_test(test_times_and_ids_are_eight_bytes),
        cmocka_unit_test(test_bytea_is_its_bytes),
        cmocka_unit_test(test_begin_resets_for_the_next_batch),
    };
    return cmocka_run_group_tests_name("worker/cols", tests, NULL, NULL);
}
