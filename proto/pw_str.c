/* The shared error helper of the proto layer. */
#include "pw_str.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void *pw__proto_xrealloc(void *p, size_t n, const char *file, int line)
{
    if ((p = realloc(p, n > 0 ? n : 1)) == NULL) {
        fprintf(stderr, "%s:%d: out of memory (%zu bytes)\n", file, line, n);
        abort();
    }
    return p;
}

int pw_set_err(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n >= errlen)
            pw_str_trim_utf8(err);
    }
    return code;
}

const char *pw_strerror(int code)
{
    switch (code) {
    case PW_OK:
        return "ok";
    case PW_EINVAL:
        return "malformed input";
    case PW_ERANGE:
        return "value out of range";
    case PW_ETOOBIG:
        return "input too large";
    case PW_EUNSUPP:
        return "unsupported format";
    case PW_EUNAVAIL:
        return "unavailable, retry later";
    case PW_EREFUSED:
        return "refused by the database";
    case PW_ECONFLICT:
        return "conflict with another transaction";
    case PW_ETIMEDOUT:
        return "timed out";
    case PW_ECANCELED:
        return "canceled";
    case PW_EUNAUTH:
        return "not authenticated";
    case PW_EFORBIDDEN:
        return "forbidden";
    default:
        return "unknown error";
    }
}

/* The length of the well-formed UTF-8 sequence at s (n bytes left), or 0 when it is not one
   (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t len;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++)
        if ((s[k] & 0xc0) != 0x80)
            return 0;
    return len;
}

const char *pw_str_quote(char *out, size_t outlen, pw_str_t s, size_t max)
{
    const unsigned char *u = (const unsigned char *)s.base;
    size_t n = s.base != NULL ? (s.len < max ? s.len : max) : 0, o = 0;

    if (outlen == 0)
        return out;
    for (size_t i = 0; i < n;) {
        char esc[8];
        const char *piece;
        size_t len, used = utf8_seq(u + i, s.len - i);
        if (used == 0) {
            piece = "\xEF\xBF\xBD"; /* U+FFFD for one stray byte */
            len = 3;
            used = 1;
        } else if (used > 1) {
            if (i + used > n)
                break; /* a character cut by max: left out whole */
            piece = (const char *)u + i;
            len = used;
        } else if (u[i] == '"' || u[i] == '\\') {
            esc[0] = '\\';
            esc[1] = (char)u[i];
            piece = esc;
            len = 2;
        } else if (u[i] < 0x20 || u[i] == 0x7f) {
            const char *named = u[i] == '\n' ? "\\n" : u[i] == '\r' ? "\\r" : u[i] == '\t' ? "\\t" : NULL;
            if (named != NULL) {
                piece = named;
                len = 2;
            } else {
                snprintf(esc, sizeof esc, "\\u%04x", u[i]);
                piece = esc;
                len = 6;
            }
        } else {
            piece = (const char *)u + i;
            len = 1;
        }
        if (o + len >= outlen)
            break; /* no room for the whole piece and the terminator */
        memcpy(out + o, piece, len);
        o += len;
        i += used;
    }
    out[o] = '\0';
    return out;
}

void pw_str_trim_utf8(char *s)
{
    size_t n = strlen(s), start = n;
    /* Back to the start of the last sequence (at most 3 continuation bytes before it). */
    while (start > 0 && n - start < 4 && ((unsigned char)s[start - 1] & 0xc0) == 0x80)
        start--;
    if (start > 0 && (unsigned char)s[start - 1] >= 0xc0) {
        start--;
        if (utf8_seq((const unsigned char *)s + start, n - start) != n - start)
            s[start] = '\0';
    }
}
