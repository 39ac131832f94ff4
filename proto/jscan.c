/* A strict JSON scanner without a tree: validation and member extents in one pass. */
#include "jscan.h"

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

static void skip_ws(pw_jscan_t *sc)
{
    while (sc->i < sc->len) {
        char c = sc->s[sc->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        sc->i++;
    }
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

/* At a backslash: validates one escape (a surrogate pair counts as one) and steps over it. */
static int scan_escape(pw_jscan_t *sc)
{
    size_t at = sc->i;
    if (sc->i + 1 >= sc->len)
        return fail(sc, sc->len, "unexpected end of data");
    char c = sc->s[sc->i + 1];
    if (strchr("\"\\/bfnrt", c) != NULL && c != '\0') {
        sc->i += 2;
        return 0;
    }
    unsigned u, lo;
    if (c != 'u' || sc->i + 6 > sc->len || hex4(sc->s + sc->i + 2, &u) != 0)
        return fail(sc, at, "invalid escape");
    sc->i += 6;
    if (sc->lone_surrogates_ok)
        return 0; /* a following low half is then just another escape */
    if (u >= 0xdc00 && u <= 0xdfff)
        return fail(sc, at, "invalid escape: lone low surrogate");
    if (u >= 0xd800 && u <= 0xdbff) {
        if (sc->i + 6 > sc->len || sc->s[sc->i] != '\\' || sc->s[sc->i + 1] != 'u' || hex4(sc->s + sc->i + 2, &lo) != 0 ||
            lo < 0xdc00 || lo > 0xdfff)
            return fail(sc, at, "invalid escape: high surrogate without its low half");
        sc->i += 6;
    }
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
    while (sc->i < sc->len) {
        /* Most of a string is plain content (a base64 payload is all of it): skip it quickly. */
        while (sc->i + 4 <= sc->len && !(STRING_STOP[u[sc->i]] | STRING_STOP[u[sc->i + 1]] | STRING_STOP[u[sc->i + 2]] |
                                          STRING_STOP[u[sc->i + 3]]))
            sc->i += 4;
        if (sc->i >= sc->len)
            break;
        unsigned char c = u[sc->i];
        if (c == '"') {
            out->end = sc->i++;
            return 0;
        }
        if (c == '\\') {
            out->escaped = 1;
            if (scan_escape(sc) != 0)
                return -1;
        } else if (c < 0x20) {
            return fail(sc, sc->i, "unexpected character");
        } else {
            sc->i++;
        }
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

int pw_jscan_value(pw_jscan_t *sc, pw_jval_t *out)
{
    skip_ws(sc);
    out->start = sc->i;
    out->escaped = 0;
    if (sc->i >= sc->len)
        return unexpected(sc);
    char c = sc->s[sc->i];
    int rc;
    switch (c) {
    case '"':
        return scan_string(sc, out);
    case '{': {
        out->type = PW_J_OBJECT;
        int first = 1;
        pw_jval_t key, v;
        while ((rc = pw_jscan_object_next(sc, &first, &key)) == 1)
            if (pw_jscan_value(sc, &v) != 0)
                return -1;
        break;
    }
    case '[':
        out->type = PW_J_ARRAY;
        if (++sc->depth > sc->max_depth)
            return fail(sc, sc->i, "nesting too deep");
        rc = scan_array(sc);
        sc->depth--;
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
            unsigned cp, lo;
            hex4(p, &cp); /* validated by the scan */
            p += 4;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                hex4(p + 2, &lo);
                p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            o += put_utf8(out + o, cp);
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
