/* Unit tests for worker/util.c: the UTF-8-safe copy (server messages end up in dead letters' reasons) and the decimal appender. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "worker/util.h"

static void test_a_string_that_fits_is_copied_whole(void **state)
{
    (void)state;
    char dst[16];
    assert_int_equal(pw_utf8_copy(dst, sizeof dst, "caf\xC3\xA9"), 5);
    assert_string_equal(dst, "caf\xC3\xA9");
    assert_int_equal(pw_utf8_copy(dst, 1, "abc"), 0);
    assert_string_equal(dst, "");
}

static void test_a_cut_never_splits_a_character(void **state)
{
    (void)state;
    /* "aé☕😀": 1 + 2 + 3 + 4 bytes; every capacity cuts before, never inside, a character. */
    const char *s = "a\xC3\xA9\xE2\x98\x95\xF0\x9F\x98\x80";
    static const size_t want[] = {0, 0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10};
    for (size_t cap = 1; cap <= 11; cap++) {
        char dst[16];
        memset(dst, 'X', sizeof dst);
        size_t n = pw_utf8_copy(dst, cap, s);
        assert_int_equal(n, want[cap]);
        assert_int_equal(dst[n], '\0');
        assert_memory_equal(dst, s, n);
    }
    char dst[256];
    char src[600];
    for (size_t i = 0; i < 300; i++)
        memcpy(src + 2 * i, "\xC3\xA9", 2);
    src[600 - 1] = '\0'; /* 299 whole characters and one lead byte */
    assert_int_equal(pw_utf8_copy(dst, sizeof dst, src), 254); /* 255 would split the 128th character */
}

/* The decimal appender prints what printf's %llu prints, at both ends of the range and between. */
static void test_append_u64_is_printf_llu(void **state)
{
    (void)state;
    static const uint64_t values[] = {0, 7, 9, 10, 99, 100, 4294967295u, 4294967296u, 18446744073709551615u};
    pw_buf_t b = {0};
    for (size_t k = 0; k < sizeof values / sizeof values[0]; k++) {
        char want[32];
        snprintf(want, sizeof want, "%llu", (unsigned long long)values[k]);
        pw_buf_reset(&b);
        pw_buf_append(&b, "x", 1);
        pw_buf_append_u64(&b, values[k]);
        assert_int_equal(b.len, 1 + strlen(want));
        assert_string_equal(b.base + 1, want);
    }
    pw_buf_dispose(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_string_that_fits_is_copied_whole),
        cmocka_unit_test(test_a_cut_never_splits_a_character),
        cmocka_unit_test(test_append_u64_is_printf_llu),
    };
    return cmocka_run_group_tests_name("worker/util", tests, NULL, NULL);
}
