/* Strict base64 and base64url decoders: one bad byte, bad length or non-canonical tail is an error with its position. */
#include "base64.h"

#include "pw_str.h"

#include <stdint.h>

typedef struct {
    const uint32_t (*placed)[256]; /* each byte's 6-bit value in place in a group of four (below) */
    const char *name;              /* for error messages */
} alphabet_t;

/* The 6-bit value of c in the alphabet, or -1: its value in the last place of a group. */
static int sextet(const alphabet_t *a, unsigned char c)
{
    uint32_t v = a->placed[3][c];
    return v & 0x80000000u ? -1 : (int)v;
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
 * A byte's 6-bit value in each of the four places of a group (shifted left by 18, 12, 6, 0), or
 * bit 31 when the byte is outside the alphabet: a group is four look-ups OR-ed together, and one
 * test of bit 31 checks its four characters. The two alphabets differ only in the characters for
 * 62 and 63. Built by the preprocessor from one rule, for all 256 bytes.
 */
#define B64_SEXTET(c, c62, c63)                                                                                          \
    ((c) >= 'A' && (c) <= 'Z'   ? (c) - 'A'                                                                              \
     : (c) >= 'a' && (c) <= 'z' ? (c) - 'a' + 26                                                                         \
     : (c) >= '0' && (c) <= '9' ? (c) - '0' + 52                                                                         \
     : (c) == (c62)             ? 62                                                                                     \
     : (c) == (c63)             ? 63                                                                                     \
                                : -1)
#define B64_AT(c, shift, c62, c63) (B64_SEXTET(c, c62, c63) < 0 ? 0x80000000u : (uint32_t)B64_SEXTET(c, c62, c63) << (shift))
#define B64_4(c, s, a, b) B64_AT(c, s, a, b), B64_AT((c) + 1, s, a, b), B64_AT((c) + 2, s, a, b), B64_AT((c) + 3, s, a, b)
#define B64_16(c, s, a, b) B64_4(c, s, a, b), B64_4((c) + 4, s, a, b), B64_4((c) + 8, s, a, b), B64_4((c) + 12, s, a, b)
#define B64_64(c, s, a, b) B64_16(c, s, a, b), B64_16((c) + 16, s, a, b), B64_16((c) + 32, s, a, b), B64_16((c) + 48, s, a, b)
#define B64_256(s, a, b) {B64_64(0, s, a, b), B64_64(64, s, a, b), B64_64(128, s, a, b), B64_64(192, s, a, b)}

static const uint32_t STD_PLACED[4][256] = {B64_256(18, '+', '/'), B64_256(12, '+', '/'), B64_256(6, '+', '/'),
                                            B64_256(0, '+', '/')};
static const uint32_t URL_PLACED[4][256] = {B64_256(18, '-', '_'), B64_256(12, '-', '_'), B64_256(6, '-', '_'),
                                            B64_256(0, '-', '_')};

static const alphabet_t STD = {STD_PLACED, "base64"};
static const alphabet_t URL = {URL_PLACED, "base64url"};

/* Whole groups of 4 characters from the start of u (at most n), 3 bytes each, until a group holds
   a byte outside the alphabet (padding included). Returns the characters consumed, a multiple of 4. */
static size_t decode_groups(const uint32_t placed[4][256], const unsigned char *u, size_t n, unsigned char *out)
{
    size_t i = 0, o = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t group = placed[0][u[i]] | placed[1][u[i + 1]] | placed[2][u[i + 2]] | placed[3][u[i + 3]];
        if (group & 0x80000000u)
            break;
        out[o] = (unsigned char)(group >> 16);
        out[o + 1] = (unsigned char)(group >> 8);
        out[o + 2] = (unsigned char)group;
        o += 3;
    }
    return i;
}

size_t pw_base64_decode_groups(const char *in, size_t n, unsigned char *out, size_t *outlen)
{
    size_t used = decode_groups(STD_PLACED, (const unsigned char *)in, n, out);
    *outlen = used / 4 * 3;
    return used;
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

    /* Whole groups first: one table look-up per character. A bad character stops them; the
       careful loop below then finds and names it. */
    size_t i = decode_groups(a->placed, (const unsigned char *)in, n, out), o = i / 4 * 3;
    for (; i < n; i++) {
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
