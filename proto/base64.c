/* Strict base64 and base64url decoders: one bad byte, bad length or non-canonical tail is an error with its position. */
#include "base64.h"

#include "pw_str.h"

#include <stdint.h>

/* The two alphabets differ only in the characters for 62 and 63: a byte's 6-bit value, or 255. */
static const unsigned char STD_VALUES[256] = {
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,  62, 255, 255, 255,  63,
     52,  53,  54,  55,  56,  57,  58,  59,  60,  61, 255, 255, 255, 255, 255, 255,
    255,   0,   1,   2,   3,   4,   5,   6,   7,   8,   9,  10,  11,  12,  13,  14,
     15,  16,  17,  18,  19,  20,  21,  22,  23,  24,  25, 255, 255, 255, 255, 255,
    255,  26,  27,  28,  29,  30,  31,  32,  33,  34,  35,  36,  37,  38,  39,  40,
     41,  42,  43,  44,  45,  46,  47,  48,  49,  50,  51, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
};
static const unsigned char URL_VALUES[256] = {
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,  62, 255, 255,
     52,  53,  54,  55,  56,  57,  58,  59,  60,  61, 255, 255, 255, 255, 255, 255,
    255,   0,   1,   2,   3,   4,   5,   6,   7,   8,   9,  10,  11,  12,  13,  14,
     15,  16,  17,  18,  19,  20,  21,  22,  23,  24,  25, 255, 255, 255, 255,  63,
    255,  26,  27,  28,  29,  30,  31,  32,  33,  34,  35,  36,  37,  38,  39,  40,
     41,  42,  43,  44,  45,  46,  47,  48,  49,  50,  51, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
};

typedef struct {
    const unsigned char *values;
    const char *name; /* for error messages */
} alphabet_t;

static const alphabet_t STD = {STD_VALUES, "base64"};
static const alphabet_t URL = {URL_VALUES, "base64url"};

/* The 6-bit value of c in the alphabet, or -1. */
static int sextet(const alphabet_t *a, unsigned char c)
{
    return a->values[c] == 255 ? -1 : a->values[c];
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
    size_t o = 0, i = 0;

    /* Whole groups of 4 characters first, 3 bytes each: one table look-up per character. A bad
       character stops this loop; the careful loop below then finds and names it. */
    const unsigned char *u = (const unsigned char *)in, *v = a->values;
    for (; i + 4 <= n; i += 4) {
        unsigned c0 = v[u[i]], c1 = v[u[i + 1]], c2 = v[u[i + 2]], c3 = v[u[i + 3]];
        if ((c0 | c1 | c2 | c3) & 0x80)
            break;
        uint32_t group = c0 << 18 | c1 << 12 | c2 << 6 | c3;
        out[o] = (unsigned char)(group >> 16);
        out[o + 1] = (unsigned char)(group >> 8);
        out[o + 2] = (unsigned char)group;
        o += 3;
    }
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
