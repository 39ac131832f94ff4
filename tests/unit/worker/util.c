/* Unit tests for worker/util.c: the UTF-8-safe copy (server messages end up in dead letters' reasons). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_string_that_fits_is_copied_whole),
        cmocka_unit_test(test_a_cut_never_splits_a_character),
    };
    return cmocka_run_group_tests_name("worker/util", tests, NULL, NULL);
}
