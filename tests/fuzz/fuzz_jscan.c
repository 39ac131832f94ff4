/*
 * libFuzzer target: proto/jscan.c (the tree-less scanner the envelope and the webhook payload are
 * read with) against pw_json_parse_strict (json-c, which still reads the JWT parts and the JWKS).
 *
 * "The scanner accepts" means what pw_envelope_parse_wrapped does: pw_json_utf8_invalid_at finds
 * nothing, then pw_jscan_value and pw_jscan_end succeed (max depth PW_JSON_MAX_DEPTH).
 *
 * Checked (abort() with "MISMATCH"/"invariant violated" on a violation):
 *   1. scanner accepts => json-c accepts, except for the depth difference below;
 *   2. json-c accepts and the scanner does not => the scanner's error is one of json-c's known
 *      extensions (list below), at the place it reports;
 *   3. both accept => the same tree: types, array lengths, number values, string bytes (the
 *      scanner's pw_jscan_unescape vs json-c's, except in inputs with surrogate escapes, where
 *      json-c 0.16 is wrong: has_surrogate_escape),
 *      object members (duplicates: the last one counts in json-c; the number of distinct keys
 *      matches);
 *   3'. every string the scanner reads unescapes to what an independent reference decoder of
 *      RFC 8259 escapes gives (reference_unescape: lone surrogate halves as U+FFFD);
 *   4. scanner internals: pw_jscan_peek agrees with the value read, extents lie inside the input,
 *      pw_jscan_unescape never writes more than the raw length and yields valid UTF-8,
 *      pw_jscan_string_is agrees with the unescaped bytes;
 *   5. a trusted read of every container (check_trusted) agrees with the validating read, by
 *      brackets and by the spans pw_json_validate_spans recorded (all, or the first few).
 *
 * Known differences (json-c 0.16 with JSON_TOKENER_STRICT, as pw_json_parse_strict sets it):
 *   json-c accepts, RFC 8259 and the scanner do not:
 *     a. NaN, Infinity, -Infinity as values;
 *     b. raw control characters (U+0000..U+001F) inside strings;
 *     c. a number ending in '.' ("1.", "1.e5") and redundant leading zeros ("00", "-01", "[00.5]"; a
 *        bare "01" is refused), no digit between a minus sign and the point ("-.5");
 *     d. lone UTF-16 surrogates in \u escapes (json-c stores U+FFFD);
 *   depth: the scanner counts containers (64 nested arrays/objects pass), json-c counts values,
 *     leaves included (the value inside the 64th container is level 65 and fails), so
 *     "[[...[1]...]]" with 64 brackets passes the scanner and fails json-c: checked below as
 *     "json-c may refuse only when the deepest value sits at level >= 64";
 *   keys: json-c truncates object keys at an escaped NUL ("a\u0000b" is the key "a", and replaces
 *     an earlier "a"), so keys are compared as json-c sees them: up to their first NUL.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/jscan.h"
#include "proto/pw_json.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #cond);        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void mismatch(const char *what, size_t at, const char *why)
{
    fprintf(stderr, "MISMATCH: %s (scanner: %s at offset %zu)\n", what, why != NULL ? why : "-", at);
    abort();
}

/* ---- the scanner's view, walked value by value ---- */

/* Writes code point cp as UTF-8 at out; its length. */
static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/*
 * The oracle for string bytes: a plain decoder of a string's raw text (validated by the scanner)
 * as RFC 8259 and Unicode define it. \u escapes are UTF-16 code units: a high half directly
 * followed by a low half is one code point; every other half is one U+FFFD; anything else is
 * copied. Written apart from proto/jscan.c, and not json-c, which is wrong here (has_surrogate_escape).
 */
static size_t reference_unescape(const char *raw, size_t len, char *out)
{
    size_t o = 0;
    unsigned high = 0; /* a high half waiting for its low half */
    for (size_t i = 0; i < len;) {
        unsigned unit = 0;
        int is_unit = 0;
        char byte = raw[i];
        if (raw[i] == '\\') {
            char e = raw[i + 1];
            if (e == 'u') {
                for (int k = 0; k < 4; k++) {
                    char h = raw[i + 2 + k];
                    unit = unit << 4 | (unsigned)(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
                }
                is_unit = 1;
                i += 6;
            } else {
                byte = e == 'b' ? '\b' : e == 'f' ? '\f' : e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t' : e;
                i += 2;
            }
        } else {
            i++;
        }
        if (is_unit && high != 0 && unit >= 0xdc00 && unit <= 0xdfff) {
            o += put_utf8(out + o, 0x10000 + ((high - 0xd800) << 10) + (unit - 0xdc00));
            high = 0;
            continue;
        }
        if (high != 0) {
            o += put_utf8(out + o, 0xfffd);
            high = 0;
        }
        if (!is_unit)
            out[o++] = byte;
        else if (unit >= 0xd800 && unit <= 0xdbff)
            high = unit;
        else
            o += put_utf8(out + o, unit >= 0xdc00 && unit <= 0xdfff ? 0xfffd : unit);
    }
    if (high != 0)
        o += put_utf8(out + o, 0xfffd);
    return o;
}

/*
 * 1 when the text holds a \u escape of a UTF-16 surrogate half (\uD800..\uDFFF, any case).
 * json-c 0.16 is no oracle for those: it classifies the decoded code point of a pair with
 * IS_HIGH_SURROGATE / IS_LOW_SURROGATE, which mask 0xFC00 without dropping the bits above 16, so
 * a correct pair for U+xD800..U+xDFFF ("\ud836\ude00", U+1DA00) comes out as U+FFFD, and after
 * one it mis-decodes or drops the halves that follow. Such inputs are compared with the reference
 * decoder only (every string, always), not with json-c's tree.
 */
static int has_surrogate_escape(const char *s, size_t n)
{
    for (size_t i = 0; i + 3 < n; i++)
        if (s[i] == '\\' && s[i + 1] == 'u' && (s[i + 2] | 0x20) == 'd' && strchr("89abcdefABCDEF", s[i + 3]) != NULL &&
            s[i + 3] != '\0')
            return 1;
    return 0;
}

/* Unescapes string v into a new buffer; checks the documented bound, the UTF-8 of the result and
   its bytes against the reference decoder. */
static char *unescape(const pw_jscan_t *sc, const pw_jval_t *v, size_t *n)
{
    size_t raw = v->end - v->start;
    char *buf = malloc(raw + 1), *want = malloc(raw + 1);
    CHECK(buf != NULL && want != NULL);
    *n = pw_jscan_unescape(sc, v, buf);
    CHECK(*n <= raw);
    CHECK(pw_json_utf8_invalid_at(buf, *n) == *n);
    if (!v->escaped)
        CHECK(*n == raw && memcmp(buf, sc->s + v->start, raw) == 0);
    size_t want_n = reference_unescape(sc->s + v->start, raw, want);
    if (want_n != *n || memcmp(buf, want, want_n) != 0)
        mismatch("string differs from the reference decoder", v->start, NULL);
    free(want);
    return buf;
}

static void skip_ws(pw_jscan_t *sc)
{
    while (sc->i < sc->len && (sc->s[sc->i] == ' ' || sc->s[sc->i] == '\t' || sc->s[sc->i] == '\n' || sc->s[sc->i] == '\r'))
        sc->i++;
}

static int equal_number(const char *text, size_t n, json_object *o)
{
    char buf[512];
    if (n >= sizeof buf)
        return 1; /* not worth comparing */
    memcpy(buf, text, n);
    buf[n] = '\0';
    int integral = strpbrk(buf, ".eE") == NULL;
    if (json_object_is_type(o, json_type_int)) {
        if (!integral)
            return 0;
        errno = 0;
        long long v = strtoll(buf, NULL, 10);
        if (errno == ERANGE)
            return 1; /* json-c saturates (or goes unsigned): nothing exact to compare */
        return json_object_get_int64(o) == v;
    }
    if (json_object_is_type(o, json_type_double)) {
        double d = strtod(buf, NULL);
        double j = json_object_get_double(o);
        return d == j || (d != d && j != j);
    }
    return 0;
}

/* Reads the value at sc and compares it with o (NULL: compare nothing, only walk). */
static void walk(pw_jscan_t *sc, json_object *o, int compare);

static void walk_object(pw_jscan_t *sc, json_object *o, int compare)
{
    typedef struct {
        char *key;
        size_t key_len; /* json-c's view: up to the first NUL */
        size_t value_at;
        int depth;
    } member_t;
    member_t *m = NULL;
    size_t count = 0, cap = 0;
    int first = 1, rc;
    pw_jval_t key, v;

    if (compare)
        CHECK(json_object_is_type(o, json_type_object));
    /* Pass 1: where every member is (values only validated). */
    while ((rc = pw_jscan_object_next(sc, &first, &key)) == 1) {
        if (count == cap) {
            cap = cap ? 2 * cap : 8;
            m = realloc(m, cap * sizeof *m);
            CHECK(m != NULL);
        }
        CHECK(key.type == PW_J_STRING && key.start <= key.end && key.end <= sc->len);
        m[count].key = unescape(sc, &key, &m[count].key_len);
        CHECK(pw_jscan_string_is(sc, &key, "message") == (m[count].key_len == 7 && memcmp(m[count].key, "message", 7) == 0));
        m[count].value_at = sc->i;
        m[count].depth = sc->depth;
        count++;
        CHECK(pw_jscan_value(sc, &v) == 0);
    }
    CHECK(rc == 0);

    /* Pass 2: each member's value against json-c's value for that key (the last occurrence).
       Keys compare as json-c sees them: cut at the first NUL. */
    size_t distinct = 0;
    for (size_t k = 0; k < count; k++) {
        const char *nul = memchr(m[k].key, '\0', m[k].key_len);
        if (nul != NULL)
            m[k].key_len = (size_t)(nul - m[k].key);
    }
    for (size_t k = 0; k < count; k++) {
        int last = 1;
        for (size_t j = k + 1; j < count && last; j++)
            if (m[j].key_len == m[k].key_len && memcmp(m[j].key, m[k].key, m[k].key_len) == 0)
                last = 0;
        distinct += last;
        pw_jscan_t sub = *sc;
        sub.i = m[k].value_at;
        sub.depth = m[k].depth;
        json_object *child = NULL;
        int present = 0;
        if (compare) {
            char *z = malloc(m[k].key_len + 1);
            CHECK(z != NULL);
            memcpy(z, m[k].key, m[k].key_len);
            z[m[k].key_len] = '\0';
            present = json_object_object_get_ex(o, z, &child);
            free(z);
            if (!present)
                mismatch("object key missing in json-c", m[k].value_at, NULL);
        }
        walk(&sub, child, compare && last);
        free(m[k].key);
    }
    if (compare && (size_t)json_object_object_length(o) != distinct)
        mismatch("json-c has a different number of object members", sc->i, NULL);
    free(m);
}

static void walk_array(pw_jscan_t *sc, json_object *o, int compare)
{
    size_t n = 0;
    if (compare)
        CHECK(json_object_is_type(o, json_type_array));
    CHECK(sc->s[sc->i] == '[');
    sc->i++;
    sc->depth++;
    skip_ws(sc);
    if (sc->s[sc->i] == ']') {
        sc->i++;
    } else {
        for (;;) {
            json_object *child = NULL;
            if (compare) {
                if (n >= json_object_array_length(o))
                    mismatch("json-c array is shorter", sc->i, NULL);
                child = json_object_array_get_idx(o, n);
            }
            walk(sc, child, compare);
            n++;
            skip_ws(sc);
            CHECK(sc->i < sc->len);
            if (sc->s[sc->i] == ',') {
                sc->i++;
                continue;
            }
            CHECK(sc->s[sc->i] == ']');
            sc->i++;
            break;
        }
    }
    sc->depth--;
    if (compare && json_object_array_length(o) != n)
        mismatch("json-c array has a different length", sc->i, NULL);
}

/*
 * 5. A trusted read (sc->trusted: the bracket walk the webhook reader uses on validated text)
 *    of the container at `at` ends where the validating read ends, with the same lossy flag and
 *    the same count of lossy strings.
 */
static pw_jspan_t spans[4096]; /* the input's spans (pw_json_validate_spans) */
static size_t n_spans_all, n_spans_few; /* all of them (up to 4096), or only the first 3 */

static void check_trusted(const pw_jscan_t *sc, size_t at)
{
    pw_jscan_t strict = *sc;
    pw_jval_t a, b;
    strict.i = at;
    strict.n_lossy = 0;
    strict.why = NULL;
    CHECK(pw_jscan_value(&strict, &a) == 0);
    /* By brackets alone, by every recorded span, by the first few spans and brackets for the rest. */
    for (int way = 0; way < 3; way++) {
        pw_jscan_t fast = *sc;
        fast.i = at;
        fast.n_lossy = 0;
        fast.why = NULL;
        fast.trusted = 1;
        fast.spans = way == 0 ? NULL : spans;
        fast.n_spans = way == 0 ? 0 : way == 1 ? n_spans_all : n_spans_few;
        CHECK(pw_jscan_value(&fast, &b) == 0);
        if (a.type != b.type || a.start != b.start || a.end != b.end || a.lossy != b.lossy ||
            strict.n_lossy != fast.n_lossy || strict.i != fast.i)
            mismatch("the trusted read of a container differs from the validating read", at,
                     way == 0 ? "by brackets" : "by spans");
    }
}

static void walk(pw_jscan_t *sc, json_object *o, int compare)
{
    pw_jtype_t peeked = pw_jscan_peek(sc);
    size_t at = sc->i;
    CHECK(peeked != PW_J_NONE);
    if (peeked == PW_J_OBJECT || peeked == PW_J_ARRAY)
        check_trusted(sc, at);
    if (peeked == PW_J_OBJECT) {
        walk_object(sc, o, compare);
        return;
    }
    if (peeked == PW_J_ARRAY) {
        walk_array(sc, o, compare);
        return;
    }
    pw_jval_t v;
    CHECK(pw_jscan_value(sc, &v) == 0);
    CHECK(v.type == peeked);
    CHECK(v.start >= at && v.start <= v.end && v.end <= sc->len);
    if (!compare) {
        if (v.type == PW_J_STRING) { /* still checked against the reference decoder */
            size_t n;
            free(unescape(sc, &v, &n));
        }
        return;
    }
    switch (v.type) {
    case PW_J_STRING: {
        size_t n;
        char *s = unescape(sc, &v, &n);
        if (!json_object_is_type(o, json_type_string) || (size_t)json_object_get_string_len(o) != n ||
            memcmp(json_object_get_string(o), s, n) != 0)
            mismatch("string differs", v.start, NULL);
        free(s);
        break;
    }
    case PW_J_NUMBER:
        if (!equal_number(sc->s + v.start, v.end - v.start, o))
            mismatch("number differs", v.start, NULL);
        break;
    case PW_J_TRUE:
    case PW_J_FALSE:
        if (!json_object_is_type(o, json_type_boolean) || json_object_get_boolean(o) != (v.type == PW_J_TRUE))
            mismatch("boolean differs", v.start, NULL);
        break;
    case PW_J_NULL:
        if (o != NULL)
            mismatch("null differs", v.start, NULL);
        break;
    default:
        CHECK(0);
    }
}

/* ---- the known json-c extensions ---- */

/* Deepest value level of an input the scanner accepted: containers and leaves, top level = 1. */
static int value_depth(const char *s, size_t n)
{
    int depth = 0, max = 0, in_string = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = 0;
            continue;
        }
        if (c == '"' || c == '-' || (c >= '0' && c <= '9') || c == 't' || c == 'f' || c == 'n') {
            if (depth + 1 > max)
                max = depth + 1; /* a leaf one level below its container */
            in_string = c == '"';
            /* skip the rest of a literal or number */
            if (!in_string)
                while (i + 1 < n && s[i + 1] != ',' && s[i + 1] != ']' && s[i + 1] != '}' && s[i + 1] != ' ' &&
                       s[i + 1] != '\n' && s[i + 1] != '\t' && s[i + 1] != '\r')
                    i++;
        } else if (c == '[' || c == '{') {
            depth++;
            if (depth > max)
                max = depth;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return max;
}

/* Is the scanner's failure at sc->at one json-c forgives (see the header comment)? */
static int known_extension(const pw_jscan_t *sc)
{
    const char *s = sc->s;
    size_t at = sc->at, n = sc->len;
    const char *why = sc->why != NULL ? sc->why : "";

    if (strncmp(why, "invalid escape: ", 16) == 0) /* d. the two surrogate messages */
        return 1;
    if (at > 0 && at <= n && s[at - 1] == '.') /* c. "1." and "1.e5": the scanner wants a digit after '.' */
        return 1;
    if (at >= n)
        return 0;
    unsigned char c = (unsigned char)s[at];
    if (c < 0x20) /* b. (outside a string json-c refuses it too, so it did not accept) */
        return 1;
    if (c == 'N' || c == 'I') /* a. */
        return 1;
    if (c == '-' && at + 1 < n && s[at + 1] == 'I')
        return 1;
    if (at > 0 && s[at - 1] == '-' && c == 'I') /* "-I..." reported after the minus */
        return 1;
    /* c. more digits after a leading zero: json-c takes "00", "-01", "00.5" (not "01": its check
       looks only at the first two characters of an unsigned number) */
    if (c == '.' && at >= 1 && s[at - 1] == '-') /* c. "-.5": no digit before the point */
        return 1;
    if (at >= 1 && s[at - 1] == '0' && c >= '0' && c <= '9' &&
        (at == 1 || !((s[at - 2] >= '0' && s[at - 2] <= '9') || s[at - 2] == '.' || s[at - 2] == 'e' || s[at - 2] == 'E' ||
                      s[at - 2] == '+')))
        return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    pw_jscan_t sc;
    pw_jval_t v;
    json_object *o = NULL;
    char err[256];

    int utf8_ok = pw_json_utf8_invalid_at(s, size) == size;
    int surrogates = has_surrogate_escape(s, size);
    pw_jscan_init(&sc, s, size, PW_JSON_MAX_DEPTH);
    int scan_ok = utf8_ok && pw_jscan_value(&sc, &v) == 0 && pw_jscan_end(&sc) == 0;
    if (scan_ok)
        CHECK(v.start <= v.end && v.end <= size);
    else if (utf8_ok)
        CHECK(sc.why != NULL && sc.at <= size);
    int json_ok = pw_json_parse_strict(s, size, &o, err, sizeof err) == 0;
    CHECK(json_ok == (o != NULL) || (json_ok && o == NULL)); /* a top-level null is a NULL object */

    if (scan_ok && !json_ok) {
        if (strstr(err, "nesting too deep") != NULL && value_depth(s, size) > PW_JSON_MAX_DEPTH)
            return 0; /* the depth difference */
        mismatch("the scanner accepts what json-c refuses", 0, err);
    }
    if (!scan_ok && json_ok && utf8_ok && !known_extension(&sc)) {
        json_object_put(o);
        mismatch("json-c accepts what the scanner refuses, not a known json-c extension", sc.at, sc.why);
    }
    /* The spans the walks below check trusted reads against (the webhook's lenient mode). */
    size_t spans_lossy;
    n_spans_all = n_spans_few = 0;
    if (pw_json_validate_spans(s, size, &spans_lossy, spans, 3, &n_spans_few, NULL, 0) == 0) {
        CHECK(pw_json_validate_spans(s, size, &spans_lossy, spans, sizeof spans / sizeof spans[0], &n_spans_all, NULL, 0) == 0);
        CHECK(n_spans_few <= 3 && n_spans_few <= n_spans_all);
    }
    if (scan_ok && json_ok) {
        pw_jscan_t w;
        pw_jscan_init(&w, s, size, PW_JSON_MAX_DEPTH);
        walk(&w, o, !surrogates);
        CHECK(pw_jscan_end(&w) == 0);
        CHECK(w.depth == 0);
    }

    /* The webhook's mode (lone_surrogates_ok): half a surrogate pair reads as U+FFFD, as in
       json-c; every string holding one or a \u0000 is counted lossy, a correct pair is not; the
       sanitized copy (pw_jscan_sanitize) has the same length, is strict JSON and has nothing lossy. */
    if (utf8_ok) {
        pw_jscan_t l;
        pw_jval_t lv;
        pw_jscan_init(&l, s, size, PW_JSON_MAX_DEPTH);
        l.lone_surrogates_ok = 1;
        int lenient_ok = pw_jscan_value(&l, &lv) == 0 && pw_jscan_end(&l) == 0;
        if (scan_ok)
            CHECK(lenient_ok);
        if (lenient_ok && !json_ok && !(strstr(err, "nesting too deep") != NULL && value_depth(s, size) > PW_JSON_MAX_DEPTH))
            mismatch("the lenient scanner accepts what json-c refuses", 0, err);
        if (lenient_ok) {
            CHECK(lv.lossy == (l.n_lossy > 0));
            if (json_ok) {
                pw_jscan_t w;
                pw_jscan_init(&w, s, size, PW_JSON_MAX_DEPTH);
                w.lone_surrogates_ok = 1;
                walk(&w, o, !surrogates);
                CHECK(pw_jscan_end(&w) == 0);
            }
            if (lv.type == PW_J_STRING) { /* the text with its quotes */
                lv.start--;
                lv.end++;
            }
            size_t n = lv.end - lv.start, lossy = 1;
            char *clean = malloc(n + 1);
            CHECK(clean != NULL);
            CHECK(pw_jscan_sanitize(&l, &lv, clean) == n);
            CHECK(pw_json_validate(clean, n, &lossy, NULL, 0) == 0 && lossy == 0);
            pw_jscan_t st;
            pw_jval_t sv;
            pw_jscan_init(&st, clean, n, PW_JSON_MAX_DEPTH);
            CHECK(pw_jscan_value(&st, &sv) == 0 && pw_jscan_end(&st) == 0);
            if (l.n_lossy == 0)
                CHECK(memcmp(clean, s + lv.start, n) == 0);
            free(clean);
        }
    }
    json_object_put(o);

    /* The envelope's other entry point into the scanner: a top-level object, member by member. */
    if (utf8_ok) {
        pw_jscan_t m;
        pw_jval_t key, val;
        int first = 1, rc;
        pw_jscan_init(&m, s, size, 4);
        while ((rc = pw_jscan_object_next(&m, &first, &key)) == 1) {
            CHECK(key.type == PW_J_STRING && key.end <= size);
            if (pw_jscan_value(&m, &val) != 0)
                break;
            CHECK(val.end <= size);
        }
    }
    return 0;
}
