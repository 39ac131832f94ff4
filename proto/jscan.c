/* A strict JSON scanner without a tree: validation and member extents in one pass. */
#include "jscan.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

void pw_jscan_init(pw_jscan_t *sc, const char *s, size_t len, int max_depth)
{
    memset(sc, 0, sizeof *sc);
    sc->s = s;
    sc->len = len;
    sc->max_depth = max_depth;
}

static int fail(pw_jscan_t *sc, size_t at, const char *why)
{
    if (sc->why == NULL) {
        sc->why = why;
        sc->at = at;
    }
    return -1;
}

/* An error at the read position: running out of input is told apart from a wrong character. */
static int unexpected(pw_jscan_t *sc)
{
    return fail(sc, sc->i, sc->i >= sc->len ? "unexpected end of data" : "unexpected character");
}

static void skip_ws_run(pw_jscan_t *sc)
{
    while (sc->i < sc->len) {
        char c = sc->s[sc->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        sc->i++;
    }
}

/* Called between every two tokens, and a compact payload (what Meta sends) has no whitespace:
   the common case, a byte above ' ', is answered inline, without a call. */
static inline void skip_ws(pw_jscan_t *sc)
{
    if (sc->i < sc->len && (unsigned char)sc->s[sc->i] > ' ')
        return;
    skip_ws_run(sc);
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p[k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* What a \uXXXX escape at p (n bytes left, n >= 6, hex already valid) stands for. */
typedef enum { U_PLAIN, U_NUL, U_PAIR, U_LONE } uesc_t;

static uesc_t classify_u(const char *p, size_t n, unsigned *cp)
{
    unsigned u, lo;
    hex4(p + 2, &u);
    *cp = u;
    if (u >= 0xd800 && u <= 0xdbff && n >= 12 && p[6] == '\\' && p[7] == 'u' && hex4(p + 8, &lo) == 0 && lo >= 0xdc00 &&
        lo <= 0xdfff) {
        *cp = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
        return U_PAIR;
    }
    if (u >= 0xd800 && u <= 0xdfff)
        return U_LONE;
    return u == 0 ? U_NUL : U_PLAIN;
}

/*
 * At a backslash: validates one escape (a surrogate pair counts as one) and steps over it. A high
 * surrogate not followed by its low half is one lossy escape; what follows is read on its own.
 */
static int scan_escape(pw_jscan_t *sc, int *lossy)
{
    size_t at = sc->i;
    unsigned u, cp;
    if (sc->i + 1 >= sc->len)
        return fail(sc, sc->len, "unexpected end of data");
    char c = sc->s[sc->i + 1];
    if (strchr("\"\\/bfnrt", c) != NULL && c != '\0') {
        sc->i += 2;
        return 0;
    }
    if (c != 'u' || sc->i + 6 > sc->len || hex4(sc->s + sc->i + 2, &u) != 0)
        return fail(sc, at, "invalid escape");
    switch (classify_u(sc->s + sc->i, sc->len - sc->i, &cp)) {
    case U_PAIR:
        sc->i += 12;
        return 0;
    case U_LONE:
        if (!sc->lone_surrogates_ok)
            return fail(sc, at, u >= 0xdc00 ? "invalid escape: lone low surrogate" : "invalid escape: high surrogate without its low half");
        *lossy = 1;
        break;
    case U_NUL:
        *lossy = 1;
        break;
    case U_PLAIN:
        break;
    }
    sc->i += 6;
    return 0;
}

/* 1 for the bytes that end a run of plain string content: '"', '\\' and control characters. */
static const unsigned char STRING_STOP[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
};

/* At the opening quote. */
static int scan_string(pw_jscan_t *sc, pw_jval_t *out)
{
    const unsigned char *u = (const unsigned char *)sc->s;
    sc->i++;
    out->type = PW_J_STRING;
    out->start = sc->i;
    out->escaped = 0;
    out->lossy = 0;
    while (sc->i < sc->len) {
        /* Most of a string is plain content: skip it quickly, with the position in a local (a
           byte read through u could be sc->i itself as far as the compiler knows, so sc->i
           would be stored and loaded again for every four bytes). */
        size_t i = sc->i, len = sc->len;
        while (i + 4 <= len && !(STRING_STOP[u[i]] | STRING_STOP[u[i + 1]] | STRING_STOP[u[i + 2]] | STRING_STOP[u[i + 3]]))
            i += 4;
        while (i < len && !STRING_STOP[u[i]])
            i++;
        sc->i = i;
        if (i >= len)
            break;
        unsigned char c = u[i];
        if (c == '"') {
            out->end = sc->i++;
            sc->n_lossy += (size_t)out->lossy;
            return 0;
        }
        if (c != '\\') /* a control character: the only other stop */
            return fail(sc, sc->i, "unexpected character");
        out->escaped = 1;
        if (scan_escape(sc, &out->lossy) != 0)
            return -1;
    }
    return fail(sc, sc->len, "unexpected end of data");
}

/* 1 for '"' and '\\': what ends a run of plain content in a string already validated. */
static const unsigned char QUOTE_STOP[256] = {['"'] = 1, ['\\'] = 1};
/* 1 for the bytes a bracket walk over validated text looks at: '"' and the four brackets. */
static const unsigned char BRACKET_STOP[256] = {['"'] = 1, ['{'] = 1, ['}'] = 1, ['['] = 1, [']'] = 1};

/*
 * Trusted text (sc->trusted): from just after a string's opening quote at i, the offset just
 * after its closing quote. Sets *lossy when it holds a lossy escape (an escaped NUL or a lone
 * surrogate half), as scan_escape would. Escapes are rare: only they are looked at closely.
 */
static size_t skip_trusted_string(const pw_jscan_t *sc, size_t i, int *lossy)
{
    const unsigned char *u = (const unsigned char *)sc->s;
    while (i < sc->len) {
        while (i + 4 <= sc->len && !(QUOTE_STOP[u[i]] | QUOTE_STOP[u[i + 1]] | QUOTE_STOP[u[i + 2]] | QUOTE_STOP[u[i + 3]]))
            i += 4;
        if (i >= sc->len)
            break;
        if (u[i] == '"')
            return i + 1;
        if (u[i] != '\\') {
            i++;
        } else if (i + 6 <= sc->len && u[i + 1] == 'u') {
            unsigned cp;
            switch (classify_u(sc->s + i, sc->len - i, &cp)) {
            case U_PAIR:
                i += 12;
                break;
            case U_LONE:
            case U_NUL:
                *lossy = 1;
                i += 6;
                break;
            case U_PLAIN:
                i += 6;
                break;
            }
        } else {
            i += 2;
        }
    }
    return sc->len;
}

/* Trusted text: steps over the object or array at sc->i by counting brackets outside strings. */
static int skip_trusted_container(pw_jscan_t *sc)
{
    const unsigned char *u = (const unsigned char *)sc->s;
    size_t i = sc->i + 1;
    int depth = 1;
    while (i < sc->len) {
        while (i + 4 <= sc->len &&
               !(BRACKET_STOP[u[i]] | BRACKET_STOP[u[i + 1]] | BRACKET_STOP[u[i + 2]] | BRACKET_STOP[u[i + 3]]))
            i += 4;
        if (i >= sc->len)
            break;
        unsigned char c = u[i];
        if (c == '"') {
            int lossy = 0;
            i = skip_trusted_string(sc, i + 1, &lossy);
            sc->n_lossy += (size_t)lossy;
            continue;
        }
        if (c == '{' || c == '[') {
            depth++;
        } else if ((c == '}' || c == ']') && --depth == 0) {
            sc->i = i + 1;
            return 0;
        }
        i++;
    }
    return fail(sc, sc->len, "unexpected end of data");
}

static int digits(pw_jscan_t *sc)
{
    size_t from = sc->i;
    while (sc->i < sc->len && sc->s[sc->i] >= '0' && sc->s[sc->i] <= '9')
        sc->i++;
    return sc->i > from ? 0 : unexpected(sc);
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int scan_number(pw_jscan_t *sc)
{
    if (sc->s[sc->i] == '-')
        sc->i++;
    if (sc->i < sc->len && sc->s[sc->i] == '0')
        sc->i++;
    else if (digits(sc) != 0)
        return -1;
    if (sc->i < sc->len && sc->s[sc->i] == '.') {
        sc->i++;
        if (digits(sc) != 0)
            return -1;
    }
    if (sc->i < sc->len && (sc->s[sc->i] == 'e' || sc->s[sc->i] == 'E')) {
        sc->i++;
        if (sc->i < sc->len && (sc->s[sc->i] == '+' || sc->s[sc->i] == '-'))
            sc->i++;
        if (digits(sc) != 0)
            return -1;
    }
    return 0;
}

static int scan_literal(pw_jscan_t *sc, const char *lit)
{
    size_t n = strlen(lit);
    for (size_t k = 0; k < n; k++, sc->i++)
        if (sc->i >= sc->len || sc->s[sc->i] != lit[k])
            return unexpected(sc);
    return 0;
}

static int scan_array(pw_jscan_t *sc)
{
    sc->i++; /* '[' */
    skip_ws(sc);
    if (sc->i < sc->len && sc->s[sc->i] == ']') {
        sc->i++;
        return 0;
    }
    for (;;) {
        pw_jval_t v;
        if (pw_jscan_value(sc, &v) != 0)
            return -1;
        skip_ws(sc);
        if (sc->i < sc->len && sc->s[sc->i] == ',') {
            sc->i++;
            continue;
        }
        if (sc->i < sc->len && sc->s[sc->i] == ']') {
            sc->i++;
            return 0;
        }
        return unexpected(sc);
    }
}

int pw_jscan_array_next(pw_jscan_t *sc, int *first, pw_jval_t *elem)
{
    skip_ws(sc);
    if (*first) {
        if (sc->i >= sc->len || sc->s[sc->i] != '[')
            return unexpected(sc);
        if (++sc->depth > sc->max_depth)
            return fail(sc, sc->i, "nesting too deep");
        sc->i++;
        *first = 0;
        skip_ws(sc);
        if (sc->i < sc->len && sc->s[sc->i] == ']') {
            sc->i++;
            sc->depth--;
            return 0;
        }
    } else {
        if (sc->i < sc->len && sc->s[sc->i] == ']') {
            sc->i++;
            sc->depth--;
            return 0;
        }
        if (sc->i >= sc->len || sc->s[sc->i] != ',')
            return unexpected(sc);
        sc->i++;
    }
    return pw_jscan_value(sc, elem) == 0 ? 1 : -1;
}

int pw_jscan_object_next(pw_jscan_t *sc, int *first, pw_jval_t *key)
{
    skip_ws(sc);
    if (*first) {
        if (sc->i >= sc->len || sc->s[sc->i] != '{')
            return unexpected(sc);
        if (++sc->depth > sc->max_depth)
            return fail(sc, sc->i, "nesting too deep");
        sc->i++;
        *first = 0;
        skip_ws(sc);
        if (sc->i < sc->len && sc->s[sc->i] == '}') {
            sc->i++;
            sc->depth--;
            return 0;
        }
    } else {
        if (sc->i < sc->len && sc->s[sc->i] == '}') {
            sc->i++;
            sc->depth--;
            return 0;
        }
        if (sc->i >= sc->len || sc->s[sc->i] != ',')
            return unexpected(sc);
        sc->i++;
        skip_ws(sc);
    }
    if (sc->i >= sc->len || sc->s[sc->i] != '"')
        return unexpected(sc);
    if (scan_string(sc, key) != 0)
        return -1;
    skip_ws(sc);
    if (sc->i >= sc->len || sc->s[sc->i] != ':')
        return unexpected(sc);
    sc->i++;
    return 1;
}

/* Trusted text: the recorded span of the container at sc->i, or NULL (binary search by start). */
static const pw_jspan_t *known_span(const pw_jscan_t *sc)
{
    size_t lo = 0, hi = sc->n_spans;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sc->spans[mid].start < sc->i)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < sc->n_spans && sc->spans[lo].start == sc->i ? &sc->spans[lo] : NULL;
}

/* A validating read of the container at sc->i: its slot in sc->record, or NULL when not recording (or full). */
static pw_jspan_t *record_span(pw_jscan_t *sc)
{
    if (sc->record == NULL || sc->n_recorded >= sc->record_cap)
        return NULL;
    pw_jspan_t *span = &sc->record[sc->n_recorded++];
    span->start = sc->i;
    return span;
}

/* Trusted text: steps over the container at sc->i, by its recorded span when there is one. */
static int skip_trusted(pw_jscan_t *sc)
{
    const pw_jspan_t *span = known_span(sc);
    if (span == NULL)
        return skip_trusted_container(sc);
    sc->i = span->end;
    sc->n_lossy += span->n_lossy;
    return 0;
}

int pw_jscan_value(pw_jscan_t *sc, pw_jval_t *out)
{
    size_t lossy_before = sc->n_lossy;
    skip_ws(sc);
    out->start = sc->i;
    out->escaped = 0;
    out->lossy = 0;
    if (sc->i >= sc->len)
        return unexpected(sc);
    char c = sc->s[sc->i];
    int rc;
    switch (c) {
    case '"':
        return scan_string(sc, out);
    case '{': {
        out->type = PW_J_OBJECT;
        if (sc->trusted) {
            rc = skip_trusted(sc);
            break;
        }
        pw_jspan_t *span = record_span(sc);
        int first = 1;
        pw_jval_t key, v;
        while ((rc = pw_jscan_object_next(sc, &first, &key)) == 1)
            if (pw_jscan_value(sc, &v) != 0)
                return -1;
        if (span != NULL)
            *span = (pw_jspan_t){span->start, sc->i, sc->n_lossy - lossy_before};
        break;
    }
    case '[':
        out->type = PW_J_ARRAY;
        if (sc->trusted) {
            rc = skip_trusted(sc);
            break;
        }
        if (++sc->depth > sc->max_depth)
            return fail(sc, sc->i, "nesting too deep");
        pw_jspan_t *span = record_span(sc);
        rc = scan_array(sc);
        sc->depth--;
        if (span != NULL)
            *span = (pw_jspan_t){span->start, sc->i, sc->n_lossy - lossy_before};
        break;
    case 't':
        out->type = PW_J_TRUE;
        rc = scan_literal(sc, "true");
        break;
    case 'f':
        out->type = PW_J_FALSE;
        rc = scan_literal(sc, "false");
        break;
    case 'n':
        out->type = PW_J_NULL;
        rc = scan_literal(sc, "null");
        break;
    default:
        if (c != '-' && (c < '0' || c > '9'))
            return unexpected(sc);
        out->type = PW_J_NUMBER;
        rc = scan_number(sc);
        break;
    }
    out->end = sc->i;
    out->lossy = sc->n_lossy != lossy_before;
    return rc < 0 ? -1 : 0;
}

int pw_jscan_end(pw_jscan_t *sc)
{
    skip_ws(sc);
    return sc->i == sc->len ? 0 : fail(sc, sc->i, "unexpected character");
}

pw_jtype_t pw_jscan_peek(pw_jscan_t *sc)
{
    skip_ws(sc);
    if (sc->i >= sc->len)
        return PW_J_NONE;
    switch (sc->s[sc->i]) {
    case '{':
        return PW_J_OBJECT;
    case '[':
        return PW_J_ARRAY;
    case '"':
        return PW_J_STRING;
    case 't':
        return PW_J_TRUE;
    case 'f':
        return PW_J_FALSE;
    case 'n':
        return PW_J_NULL;
    default:
        return PW_J_NUMBER;
    }
}

/* Appends code point cp as UTF-8. */
static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

size_t pw_jscan_unescape(const pw_jscan_t *sc, const pw_jval_t *v, char *out)
{
    const char *p = sc->s + v->start, *end = sc->s + v->end;
    size_t o = 0;
    while (p < end) {
        if (*p != '\\') {
            out[o++] = *p++;
            continue;
        }
        char c = p[1];
        p += 2;
        switch (c) {
        case 'b':
            out[o++] = '\b';
            break;
        case 'f':
            out[o++] = '\f';
            break;
        case 'n':
            out[o++] = '\n';
            break;
        case 'r':
            out[o++] = '\r';
            break;
        case 't':
            out[o++] = '\t';
            break;
        case 'u': {
            unsigned cp; /* validated by the scan */
            uesc_t kind = classify_u(p - 2, (size_t)(end - (p - 2)), &cp);
            p += kind == U_PAIR ? 10 : 4;
            o += put_utf8(out + o, kind == U_LONE ? 0xfffd : cp);
            break;
        }
        default: /* " \ / */
            out[o++] = c;
            break;
        }
    }
    return o;
}

int pw_jscan_string_is(const pw_jscan_t *sc, const pw_jval_t *v, const char *lit)
{
    size_t n = strlen(lit), raw = v->end - v->start;
    if (v->type != PW_J_STRING)
        return 0;
    if (!v->escaped)
        return raw == n && memcmp(sc->s + v->start, lit, n) == 0;
    char buf[64];
    if (raw > sizeof buf)
        return 0; /* an escaped key this long cannot be one of ours */
    size_t m = pw_jscan_unescape(sc, v, buf);
    return m == n && memcmp(buf, lit, n) == 0;
}

size_t pw_jscan_sanitize(const pw_jscan_t *sc, const pw_jval_t *v, char *out)
{
    const char *p = sc->s + v->start, *end = sc->s + v->end;
    size_t n = v->end - v->start;
    memcpy(out, p, n);
    /* Backslashes occur only inside strings, each starting an escape of 2, 6 or 12 bytes. */
    for (const char *b = memchr(p, '\\', n); b != NULL; b = memchr(b, '\\', (size_t)(end - b))) {
        unsigned cp;
        if (b[1] != 'u') {
            b += 2;
            continue;
        }
        uesc_t kind = classify_u(b, (size_t)(end - b), &cp);
        if (kind == U_NUL || kind == U_LONE)
            memcpy(out + (b - p), "\\ufffd", 6);
        b += kind == U_PAIR ? 12 : 6;
    }
    return n;
}

/* ---- whole documents ---- */

static int is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return 0;
    return 1;
}

/*
 * The offset of the first byte that is not well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or len. json-c's VALIDATE_UTF8 checks only the shape of a
 * sequence and lets "\xc0\xaf" and encoded surrogates through, which PostgreSQL then refuses.
 */
size_t pw_json_utf8_invalid_at(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        /* ASCII, eight bytes at a time: most of a push is. */
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ULL)
                break;
            i += 8;
        }
        if (i >= len)
            break;
        unsigned char c = s[i];
        size_t n;
        unsigned char lo = 0x80, hi = 0xbf; /* the allowed range of the second byte */
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            lo = c == 0xe0 ? 0xa0 : 0x80; /* E0 80..9F would be overlong */
            hi = c == 0xed ? 0x9f : 0xbf; /* ED A0..BF are the surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            lo = c == 0xf0 ? 0x90 : 0x80; /* F0 80..8F would be overlong */
            hi = c == 0xf4 ? 0x8f : 0xbf; /* F4 90.. is above U+10FFFF */
        } else {
            return i; /* a continuation byte, C0/C1 (always overlong) or F5..FF */
        }
        if (len - i <= n || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= n; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return i;
        i += n + 1;
    }
    return len;
}

int pw_json_validate(const char *s, size_t len, size_t *n_lossy, char *err, size_t errlen)
{
    return pw_json_validate_spans(s, len, n_lossy, NULL, 0, NULL, err, errlen);
}

int pw_json_validate_spans(const char *s, size_t len, size_t *n_lossy, pw_jspan_t *spans, size_t cap, size_t *n_spans,
                           char *err, size_t errlen)
{
    size_t bad;

    if (n_lossy != NULL)
        *n_lossy = 0;
    if (n_spans != NULL)
        *n_spans = 0;
    if (len > INT_MAX)
        return pw_set_err(err, errlen, PW_ETOOBIG, "JSON input of %zu bytes is over the parser's limit", len);
    if (is_blank(s, len))
        return pw_set_err(err, errlen, PW_EINVAL, "empty JSON input");
    if ((bad = pw_json_utf8_invalid_at(s, len)) != len)
        return pw_set_err(err, errlen, PW_EINVAL, "invalid JSON at offset %zu: invalid UTF-8", bad);
    pw_jscan_t sc;
    pw_jval_t v;
    pw_jscan_init(&sc, s, len, PW_JSON_MAX_DEPTH);
    sc.lone_surrogates_ok = 1;
    sc.record = spans;
    sc.record_cap = spans != NULL ? cap : 0;
    if (pw_jscan_value(&sc, &v) != 0 || pw_jscan_end(&sc) != 0) {
        if (sc.why != NULL && strcmp(sc.why, "nesting too deep") == 0)
            return pw_set_err(err, errlen, PW_EINVAL, "nesting too deep (over %d levels)", PW_JSON_MAX_DEPTH);
        return pw_set_err(err, errlen, PW_EINVAL, "invalid JSON at offset %zu: %s", sc.at,
                          sc.why != NULL ? sc.why : "unexpected character");
    }
    if (n_lossy != NULL)
        *n_lossy = sc.n_lossy;
    if (n_spans != NULL)
        *n_spans = sc.n_recorded;
    return 0;
}

