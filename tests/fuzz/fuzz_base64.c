/*
 * libFuzzer target: proto/base64.c (pw_base64_decode, pw_base64url_decode, pw_base64_decoded_max).
 *
 * Invariants checked on every input (abort() on a violation, so libFuzzer saves the input):
 *   - the decoders never write past pw_base64_decoded_max(len) (the output buffer is malloc'ed to
 *     exactly that size, so ASan sees one byte too many) and *outlen <= that bound;
 *   - a failure always leaves *outlen == 0 and a NUL-terminated reason in err (also when err is tiny);
 *   - decoding is canonical: whatever decodes, re-encoded by the reference encoder below, gives back
 *     exactly the input text (padded for base64, unpadded for base64url), and that text decodes
 *     again to the same bytes;
 *   - the other direction: the input bytes, encoded by the reference encoder, always decode back.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/base64.h"

static const char STD_ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char URL_ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #cond);        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The simplest encoder there is: 3 bytes -> 4 characters, the tail padded with '=' when pad. */
static char *encode(const unsigned char *in, size_t n, const char *alphabet, int pad, size_t *outlen)
{
    char *out = malloc(n / 3 * 4 + 4 + 1);
    size_t o = 0, i = 0;
    CHECK(out != NULL);
    for (; i + 3 <= n; i += 3) {
        uint32_t g = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alphabet[g >> 18 & 63];
        out[o++] = alphabet[g >> 12 & 63];
        out[o++] = alphabet[g >> 6 & 63];
        out[o++] = alphabet[g & 63];
    }
    if (n - i == 1) {
        uint32_t g = (uint32_t)in[i] << 16;
        out[o++] = alphabet[g >> 18 & 63];
        out[o++] = alphabet[g >> 12 & 63];
        if (pad) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (n - i == 2) {
        uint32_t g = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = alphabet[g >> 18 & 63];
        out[o++] = alphabet[g >> 12 & 63];
        out[o++] = alphabet[g >> 6 & 63];
        if (pad)
            out[o++] = '=';
    }
    out[o] = '\0';
    *outlen = o;
    return out;
}

typedef int (*decoder_t)(const char *in, size_t len, unsigned char *out, size_t *outlen, char *err, size_t errlen);

/* Decodes into a buffer of exactly the documented size; returns it (caller frees) or NULL on failure. */
static unsigned char *decode_checked(decoder_t dec, const char *in, size_t len, size_t *outlen, size_t errlen)
{
    size_t max = pw_base64_decoded_max(len);
    unsigned char *out = malloc(max > 0 ? max : 1);
    char *err = errlen > 0 ? malloc(errlen) : NULL;
    CHECK(out != NULL);
    CHECK(max >= len / 4 * 3);
    *outlen = 12345;
    if (err != NULL)
        memset(err, 'x', errlen);
    int rc = dec(in, len, out, outlen, err, errlen);
    if (rc != 0) {
        CHECK(rc < 0);
        CHECK(*outlen == 0);
        if (err != NULL)
            CHECK(memchr(err, '\0', errlen) != NULL);
        free(err);
        free(out);
        return NULL;
    }
    CHECK(*outlen <= max);
    free(err);
    return out;
}

static void check_alphabet(decoder_t dec, const char *alphabet, int pad, const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    size_t n, n2, enc_len;

    /* Several err sizes: the reason must be truncated safely. */
    unsigned char *bytes = decode_checked(dec, in, size, &n, 128);
    unsigned char *again = decode_checked(dec, in, size, &n2, 1);
    CHECK((bytes == NULL) == (again == NULL));
    free(again);
    again = decode_checked(dec, in, size, &n2, 0);
    CHECK((bytes == NULL) == (again == NULL));
    free(again);

    if (bytes != NULL) {
        char *text = encode(bytes, n, alphabet, pad, &enc_len);
        /* Canonical: exactly one text per byte string, so re-encoding reproduces the input. */
        CHECK(enc_len == size && memcmp(text, in, size) == 0);
        unsigned char *round = decode_checked(dec, text, enc_len, &n2, 128);
        CHECK(round != NULL && n2 == n && memcmp(round, bytes, n) == 0);
        free(round);
        free(text);
        free(bytes);
    }

    /* The input as bytes: its encoding must decode back to it. */
    char *text = encode(data, size, alphabet, pad, &enc_len);
    unsigned char *round = decode_checked(dec, text, enc_len, &n2, 128);
    CHECK(round != NULL && n2 == size && memcmp(round, data, size) == 0);
    free(round);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_alphabet(pw_base64_decode, STD_ALPHABET, 1, data, size);
    check_alphabet(pw_base64url_decode, URL_ALPHABET, 0, data, size);
    return 0;
}
