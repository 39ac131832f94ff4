/* Unit tests for proto/base64.c: the strict decoders, every kind of malformed input, with positions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "proto/base64.h"
#include "proto/pw_str.h"

typedef int (*decoder_t)(const char *, size_t, unsigned char *, size_t *, char *, size_t);

/* Decodes a C string and asserts success and the exact bytes. */
static void expect_ok(decoder_t dec, const char *in, const char *want, size_t want_len)
{
    unsigned char out[256];
    size_t outlen = 999;
    char err[128] = "";
    assert_true(pw_base64_decoded_max(strlen(in)) <= sizeof(out));
    assert_int_equal(dec(in, strlen(in), out, &outlen, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_int_equal(outlen, want_len);
    assert_memory_equal(out, want, want_len);
}

/* Asserts PW_EINVAL with exactly the given message. */
static void expect_err(decoder_t dec, const char *in, size_t len, const char *want_err)
{
    unsigned char out[256];
    size_t outlen = 999;
    char err[128] = "";
    assert_int_equal(dec(in, len, out, &outlen, err, sizeof(err)), PW_EINVAL);
    assert_string_equal(err, want_err);
    assert_int_equal(outlen, 0);
}

static void test_rfc4648_vectors(void **state)
{
    (void)state;
    expect_ok(pw_base64_decode, "", "", 0);
    expect_ok(pw_base64_decode, "Zg==", "f", 1);
    expect_ok(pw_base64_decode, "Zm8=", "fo", 2);
    expect_ok(pw_base64_decode, "Zm9v", "foo", 3);
    expect_ok(pw_base64_decode, "Zm9vYg==", "foob", 4);
    expect_ok(pw_base64_decode, "Zm9vYmE=", "fooba", 5);
    expect_ok(pw_base64_decode, "Zm9vYmFy", "foobar", 6);
}

static void test_binary_and_both_extra_chars(void **state)
{
    (void)state;
    /* 0xfb 0xff 0xbf uses 62 and 63 in both alphabets; NUL bytes survive. */
    expect_ok(pw_base64_decode, "+/+/", "\xfb\xff\xbf", 3);
    expect_ok(pw_base64url_decode, "-_-_", "\xfb\xff\xbf", 3);
    expect_ok(pw_base64_decode, "AAAA", "\0\0\0", 3);
    expect_ok(pw_base64_decode, "eyJhIjoxfQ==", "{\"a\":1}", 7);
}

static void test_decoded_max(void **state)
{
    (void)state;
    assert_int_equal(pw_base64_decoded_max(0), 0);
    assert_int_equal(pw_base64_decoded_max(4), 3);
    assert_int_equal(pw_base64_decoded_max(8), 6);
    assert_int_equal(pw_base64_decoded_max(2), 3); /* base64url "YQ" -> 1 byte; 3 is an upper bound */
    assert_int_equal(pw_base64_decoded_max(7), 6);
}

static void test_bad_character_positions(void **state)
{
    (void)state;
    expect_err(pw_base64_decode, "!m9v", 4, "invalid base64 character '!' at 0");
    expect_err(pw_base64_decode, "Zm9vYm%y", 8, "invalid base64 character '%' at 6");
    expect_err(pw_base64_decode, "Zm9vYmF!", 8, "invalid base64 character '!' at 7");
    expect_err(pw_base64_decode, "Zm9v Zm9", 8, "invalid base64 character ' ' at 4");
    expect_err(pw_base64_decode, "Zm9v\nZm9", 8, "invalid base64 character 0x0a at 4");
    expect_err(pw_base64_decode, "Zm\0v", 4, "invalid base64 character 0x00 at 2");
    expect_err(pw_base64_decode, "Zm9\xc3", 4, "invalid base64 character 0xc3 at 3");
    /* the url alphabet is not the standard one, and the reverse */
    expect_err(pw_base64_decode, "-_-_", 4, "invalid base64 character '-' at 0");
    expect_err(pw_base64url_decode, "+/+/", 4, "invalid base64url character '+' at 0");
}

static void test_bad_length_and_padding(void **state)
{
    (void)state;
    expect_err(pw_base64_decode, "Zm9", 3, "invalid base64 length 3 (not a multiple of 4)");
    expect_err(pw_base64_decode, "Zg", 2, "invalid base64 length 2 (not a multiple of 4)"); /* padding required */
    expect_err(pw_base64_decode, "Zm9vY", 5, "invalid base64 length 5 (not a multiple of 4)");
    expect_err(pw_base64_decode, "Z===", 4, "invalid base64 padding at 1");
    expect_err(pw_base64_decode, "====", 4, "invalid base64 padding at 1");
    expect_err(pw_base64_decode, "Zg==Zg==", 8, "invalid base64 character '=' at 2");
    expect_err(pw_base64_decode, "Z=g=", 4, "invalid base64 character '=' at 1");
}

static void test_non_canonical_tail(void **state)
{
    (void)state;
    /* "Zh==" and "Zg==" would both decode to "f": only the one with zero unused bits is accepted. */
    expect_err(pw_base64_decode, "Zh==", 4, "non-canonical base64: unused bits set in the character at 1");
    expect_err(pw_base64_decode, "Zm9=", 4, "non-canonical base64: unused bits set in the character at 2");
    expect_err(pw_base64url_decode, "Zh", 2, "non-canonical base64url: unused bits set in the character at 1");
}

static void test_base64url(void **state)
{
    (void)state;
    expect_ok(pw_base64url_decode, "", "", 0);
    expect_ok(pw_base64url_decode, "Zg", "f", 1);
    expect_ok(pw_base64url_decode, "Zm8", "fo", 2);
    expect_ok(pw_base64url_decode, "Zm9v", "foo", 3);
    /* a JWT header */
    expect_ok(pw_base64url_decode, "eyJhbGciOiJSUzI1NiJ9", "{\"alg\":\"RS256\"}", 15);
    expect_err(pw_base64url_decode, "Zg==", 4, "invalid base64url character '=' at 2");
    expect_err(pw_base64url_decode, "Zm9vY", 5, "invalid base64url length 5");
    expect_err(pw_base64url_decode, "Z", 1, "invalid base64url length 1");
}

static void test_null_err_buffer(void **state)
{
    unsigned char out[8];
    size_t outlen;
    (void)state;
    assert_int_equal(pw_base64_decode("!!!!", 4, out, &outlen, NULL, 0), PW_EINVAL);
    assert_int_equal(pw_base64url_decode("!!", 2, out, &outlen, NULL, 0), PW_EINVAL);
}

/* Every byte in every place of a group, against the alphabets written out: the decoder's
   tables are built by the preprocessor, and one wrong entry would decode a byte wrongly or
   accept one that is not base64. */
static void check_every_byte(decoder_t dec, const char *alphabet)
{
    for (int place = 0; place < 4; place++) {
        for (int b = 0; b < 256; b++) {
            if (b == '=' && place == 3 && dec == pw_base64_decode)
                continue; /* padding: test_bad_length_and_padding */
            char in[4] = {'A', 'A', 'A', 'A'};
            unsigned char out[3];
            size_t outlen = 0;
            char err[128] = "";
            in[place] = (char)b;
            const char *at = b == 0 ? NULL : memchr(alphabet, b, 64);
            int rc = dec(in, 4, out, &outlen, err, sizeof err);
            if (at == NULL) {
                if (rc == 0)
                    print_error("byte 0x%02x in place %d was accepted\n", b, place);
                assert_int_equal(rc, PW_EINVAL);
                continue;
            }
            assert_int_equal(rc, 0);
            assert_int_equal(outlen, 3);
            uint32_t group = (uint32_t)(at - alphabet) << (18 - 6 * place);
            unsigned char want[3] = {(unsigned char)(group >> 16), (unsigned char)(group >> 8), (unsigned char)group};
            assert_memory_equal(out, want, 3);
        }
    }
}

static void test_every_byte_in_every_place(void **state)
{
    (void)state;
    check_every_byte(pw_base64_decode, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
    check_every_byte(pw_base64url_decode, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");
}

/* The groups alone: as far as whole groups of the alphabet go, no further. */
static void test_decode_groups(void **state)
{
    unsigned char out[16];
    size_t outlen = 99;
    (void)state;
    assert_int_equal(pw_base64_decode_groups("eyJhIjoxfQ==\"", 13, out, &outlen), 8);
    assert_int_equal(outlen, 6);
    assert_memory_equal(out, "{\"a\":1", 6);
    assert_int_equal(pw_base64_decode_groups("eyJhIjox\"", 9, out, &outlen), 8);
    assert_int_equal(pw_base64_decode_groups("eyJhIj", 6, out, &outlen), 4);
    assert_int_equal(outlen, 3);
    assert_int_equal(pw_base64_decode_groups("eyJ\\/jox", 8, out, &outlen), 0);
    assert_int_equal(outlen, 0);
    assert_int_equal(pw_base64_decode_groups("eyJh-_ox", 8, out, &outlen), 4); /* base64url's two are not base64's */
    assert_int_equal(pw_base64_decode_groups("", 0, out, &outlen), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_binary_and_both_extra_chars),
        cmocka_unit_test(test_decoded_max),
        cmocka_unit_test(test_bad_character_positions),
        cmocka_unit_test(test_bad_length_and_padding),
        cmocka_unit_test(test_non_canonical_tail),
        cmocka_unit_test(test_base64url),
        cmocka_unit_test(test_null_err_buffer),
        cmocka_unit_test(test_every_byte_in_every_place),
        cmocka_unit_test(test_decode_groups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
