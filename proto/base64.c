/* Strict base64 and base64url decoders: one bad byte, bad length or non-canonical tail is an error with its position. */
#include "base64.h"

#include "pw_str.h"

#include <stdint.h>

/* The two alphabets differ only in the characters for 62 and 63. */
typedef struct {
    char c62, c63;
    const char *name; /* for error messages */
} alphabet_t;

static const alphabet_t STD = {'+', '/', "base64"};
static const alphabet_t URL = {'-', '_', "base64url"};

/* The 6-bit value of c in the alphabet, or -1. */
static int sextet(const alphabet_t *a, unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (unsigned char)a->c62)
        return 62;
    if (c == (unsigned char)a->c63)
        return 63;
    return -1;
}

/* Names a bad byte so that the message stays printable whatever the input holds. */
static int bad_char(const alphabet_t *a, unsigned char c, size_t pos, char *err, size_t errlen)
{
    if (c >= 0x20 && c < 0x7f)
        return pw_set_err(err, errlen, PW_EINVAL, "invalid %s character '%c' at %zu", a->name, c, pos);
    return pw_set_err(err, errlen, PW_EINVAL, "invalid %s character 0x%02x at %zu", a->name, c, pos);
}

size_t pw_base64_decoded_max(size_t len)
{
    /* Every started group of 4 characters yields at most 3 bytes; written to avoid overflow. */
    return len / 4 * 3 + (len % 4 != 0 ? 3 : 0);
}

/*
 * Decodes n data characters (no padding) that are known to hold only a valid length
 * (n % 4 != 1). Checks every character and that the bits left over by a short last group are
 * zero: otherwise two different texts would decode to the same bytes (RFC 4648 section 3.5).
 */
static int decode_chars(const alphabet_t *a, const char *in, size_t n, unsigned char *out, size_t *outlen, char *err, size_t errlen)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        int v = sextet(a, (unsigned char)in[i]);
        if (v < 0)
            return bad_char(a, (unsigned char)in[i], i, err, errlen);
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return pw_set_err(err, errlen, PW_EINVAL, "non-canonical %s: unused bits set in the character at %zu", a->name, n - 1);
    *outlen = o;
    return 0;
}

int pw_base64_decode(const char *in, size_t len, unsigned char *out, size_t *outlen, char *err, size_t errlen)
{
    size_t pad = 0;

    *outlen = 0;
    if (len % 4 != 0)
        return pw_set_err(err, errlen, PW_EINVAL, "invalid base64 length %zu (not a multiple of 4)", len);
    while (pad < 2 && pad < len && in[len - 1 - pad] == '=')
        pad++;
    /* A third '=' (or one in the middle) is caught as a bad character below, at its position. */
    if (pad > 0 && len - pad > 0 && in[len - pad - 1] == '=')
        return pw_set_err(err, errlen, PW_EINVAL, "invalid base64 padding at %zu", len - pad - 1);
    return decode_chars(&STD, in, len - pad, out, outlen, err, errlen);
}

int pw_base64url_decode(const char *in, size_t len, unsigned char *out, size_t *outlen, char *err, size_t errlen)
{
    *outlen = 0;
    /* One character carries 6 bits, less than a byte: no encoder produces that length. */
    if (len % 4 == 1)
        return pw_set_err(err, errlen, PW_EINVAL, "invalid base64url length %zu", len);
    return decode_chars(&URL, in, len, out, outlen, err, errlen);
}
