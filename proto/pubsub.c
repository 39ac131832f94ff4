/* The Pub/Sub push envelope: the wrapped JSON form and the unwrapped body-plus-headers form, into one pw_envelope_t. */
#include "pubsub.h"

#include "base64.h"
#include "jscan.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* ---- is it wrapped? A shallow scan of the top-level object, never building a tree. ---- */

static size_t skip_ws(const char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* s[i] is '"'; returns the index just past the closing quote, or len when unterminated. */
static size_t skip_string(const char *s, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return len;
}

/* Skips one value of any kind by bracket counting: enough to find the next top-level key. */
static size_t skip_value(const char *s, size_t len, size_t i)
{
    size_t depth = 0;
    while (i < len) {
        char c = s[i];
        if (c == '"') {
            i = skip_string(s, len, i);
        } else if (c == '{' || c == '[') {
            depth++;
            i++;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return i; /* the end of the enclosing object */
            depth--;
            i++;
        } else if (c == ',' && depth == 0) {
            return i;
        } else {
            i++;
        }
        if (depth == 0 && (c == '"' || c == '}' || c == ']'))
            return i; /* a string or a whole container is done */
    }
    return len;
}

int pw_envelope_is_wrapped(const char *body, size_t len)
{
    size_t i = skip_ws(body, len, 0);

    if (i >= len || body[i] != '{')
        return 0;
    for (i++;;) {
        size_t key, key_end;
        i = skip_ws(body, len, i);
        if (i >= len || body[i] != '"')
            return 0;
        key = i + 1;
        i = key_end = skip_string(body, len, i);
        i = skip_ws(body, len, i);
        if (i >= len || body[i] != ':')
            return 0;
        i = skip_ws(body, len, i + 1);
        if (key_end - key == 8 && memcmp(body + key, "message\"", 8) == 0 && i < len && body[i] == '{')
            return 1;
        i = skip_ws(body, len, skip_value(body, len, i));
        if (i >= len || body[i] != ',')
            return 0;
        i++;
    }
}

/* ---- the wrapped form ----
 *
 * Read with pw_jscan, not json-c: the envelope has a fixed shape and one big member (the base64
 * data), and building a json-c tree for it cost more than everything else a push needs. The
 * members are located in one validating pass, then checked in a fixed order, so that the first
 * error named is the same whatever the member order.
 */

enum { F_SUBSCRIPTION, F_DELIVERY_ATTEMPT, F_MESSAGE, F_MESSAGE_ID, F_MESSAGE_ID_SNAKE, F_PUBLISH_TIME,
       F_PUBLISH_TIME_SNAKE, F_ORDERING_KEY, F_ATTRIBUTES, F_DATA, F_COUNT };

typedef struct {
    pw_jscan_t sc;
    pw_jval_t f[F_COUNT]; /* duplicate members: the last one counts, as with json-c */
    char *copies;         /* unescaped strings, owned by the envelope in the end */
    size_t copies_used;
    /* message.data decoded while it was scanned (decode_data_while_scanning); NULL when the
       data member that counts (the last) was read the ordinary way */
    unsigned char *decoded;
    size_t decoded_len;
} wrapped_t;

static const char *const message_members[] = {[F_MESSAGE_ID] = "messageId",       [F_MESSAGE_ID_SNAKE] = "message_id",
                                               [F_PUBLISH_TIME] = "publishTime",   [F_PUBLISH_TIME_SNAKE] = "publish_time",
                                               [F_ORDERING_KEY] = "orderingKey",   [F_ATTRIBUTES] = "attributes",
                                               [F_DATA] = "data"};

/* Reads the value at the scanner into slot f (or just validates it when f < 0). */
static int read_member(wrapped_t *w, int f)
{
    pw_jval_t v;
    if (pw_jscan_value(&w->sc, &v) != 0)
        return -1;
    if (f >= 0)
        w->f[f] = v;
    return 0;
}

/*
 * message.data is nearly all of a push: the scan that validates it as a JSON string and the
 * decoder that reads it as base64 can be one pass. At the string's opening quote, decodes whole
 * groups up to the first byte outside the alphabet; when that byte is the closing quote, or a
 * last padded group (pw_base64_decode's strict checks) is followed by it, the string held only
 * base64 characters, so it was valid JSON without escapes, and the scanner moves past it.
 * Returns 1 then. Anything else (an escape such as "\/", a bad character, an empty string)
 * returns 0 with the scanner where it was: the ordinary scan and read_data then say what is
 * wrong, in the same words as before.
 */
static int decode_data_while_scanning(wrapped_t *w)
{
    const char *s = w->sc.s;
    size_t start = w->sc.i + 1, len = w->sc.len;
    unsigned char *buf = PW_XMALLOC(pw_base64_decoded_max(len - start));
    size_t n, tail = 0;
    size_t q = start + pw_base64_decode_groups(s + start, len - start, buf, &n);
    if (q + 4 < len && s[q] != '"' && s[q + 4] == '"' && pw_base64_decode(s + q, 4, buf + n, &tail, NULL, 0) == 0)
        q += 4;
    if (q == start || q >= len || s[q] != '"') {
        free(buf);
        return 0;
    }
    free(w->decoded);
    w->decoded = buf;
    w->decoded_len = n + tail;
    w->f[F_DATA] = (pw_jval_t){PW_J_STRING, start, q, 0, 0};
    w->sc.i = q + 1;
    return 1;
}

static int scan_message(wrapped_t *w)
{
    int first = 1, rc;
    pw_jval_t key;
    while ((rc = pw_jscan_object_next(&w->sc, &first, &key)) == 1) {
        int f = -1;
        for (int k = F_MESSAGE_ID; k < F_COUNT; k++)
            if (pw_jscan_string_is(&w->sc, &key, message_members[k]))
                f = k;
        if (f == F_DATA) {
            if (pw_jscan_peek(&w->sc) == PW_J_STRING && decode_data_while_scanning(w))
                continue;
            free(w->decoded); /* an earlier data member no longer counts */
            w->decoded = NULL;
        }
        if (read_member(w, f) != 0)
            return -1;
    }
    return rc;
}

/* One pass over the document: syntax, nesting, and where each member we read is. */
static int scan_envelope(wrapped_t *w)
{
    if (pw_jscan_peek(&w->sc) != PW_J_OBJECT) {
        pw_jval_t v;
        return pw_jscan_value(&w->sc, &v);
    }
    int first = 1, rc;
    pw_jval_t key;
    while ((rc = pw_jscan_object_next(&w->sc, &first, &key)) == 1) {
        if (pw_jscan_string_is(&w->sc, &key, "message")) {
            w->f[F_MESSAGE] = (pw_jval_t){pw_jscan_peek(&w->sc), w->sc.i, 0, 0, 0};
            rc = w->f[F_MESSAGE].type == PW_J_OBJECT ? scan_message(w) : read_member(w, F_MESSAGE);
        } else if (pw_jscan_string_is(&w->sc, &key, "subscription")) {
            rc = read_member(w, F_SUBSCRIPTION);
        } else if (pw_jscan_string_is(&w->sc, &key, "deliveryAttempt")) {
            rc = read_member(w, F_DELIVERY_ATTEMPT);
        } else {
            rc = read_member(w, -1);
        }
        if (rc != 0)
            return -1;
    }
    return rc < 0 ? -1 : 0;
}

/* A string member as a slice of the body, or of w->copies when it had escapes. "" and null are absent. */
static int member_string(wrapped_t *w, int f, const char *path, pw_str_t *out, char *err, size_t errlen)
{
    static const char *const names[] = {[F_SUBSCRIPTION] = "subscription", [F_MESSAGE_ID] = "messageId",
                                        [F_MESSAGE_ID_SNAKE] = "message_id", [F_PUBLISH_TIME] = "publishTime",
                                        [F_PUBLISH_TIME_SNAKE] = "publish_time", [F_ORDERING_KEY] = "orderingKey",
                                        [F_DATA] = "data"};
    const pw_jval_t *v = &w->f[f];
    *out = PW_STR_NULL;
    if (v->type == PW_J_NONE || v->type == PW_J_NULL)
        return 0;
    if (v->type != PW_J_STRING)
        return pw_set_err(err, errlen, PW_EINVAL, "%s%s: not a string", path, names[f]);
    if (v->end == v->start)
        return 0;
    if (!v->escaped) {
        *out = pw_str(w->sc.s + v->start, v->end - v->start);
        return 0;
    }
    char *dst = w->copies + w->copies_used;
    size_t n = pw_jscan_unescape(&w->sc, v, dst);
    w->copies_used += n;
    *out = n > 0 ? pw_str(dst, n) : PW_STR_NULL;
    return 0;
}

/* Pub/Sub sends messageId and publishTime twice (camelCase and snake_case); a reader trusting one
   spelling must not silently ignore the other, so they have to agree. */
static int read_message_id(wrapped_t *w, pw_str_t *out, char *err, size_t errlen)
{
    pw_str_t camel, snake;
    int rc;

    if ((rc = member_string(w, F_MESSAGE_ID, "message.", &camel, err, errlen)) != 0 ||
        (rc = member_string(w, F_MESSAGE_ID_SNAKE, "message.", &snake, err, errlen)) != 0)
        return rc;
    if (camel.base != NULL && snake.base != NULL && (camel.len != snake.len || memcmp(camel.base, snake.base, camel.len) != 0))
        return pw_set_err(err, errlen, PW_EINVAL, "message.messageId and message.message_id differ");
    *out = camel.base != NULL ? camel : snake;
    return 0;
}

static int parse_time_member(wrapped_t *w, int f, const char *key, pw_time_us_t *out, char *err, size_t errlen)
{
    pw_str_t s;
    char why[128];
    int rc;

    *out = 0;
    if ((rc = member_string(w, f, "message.", &s, err, errlen)) != 0 || s.base == NULL)
        return rc;
    if ((rc = pw_time_parse_rfc3339(s.base, s.len, out, why, sizeof(why))) != 0)
        return pw_set_err(err, errlen, rc, "message.%s: %s", key, why);
    return 0;
}

/* The two spellings are compared as instants: "...55.749Z" and "...55.749000Z" agree. */
static int read_publish_time(wrapped_t *w, pw_time_us_t *out, char *err, size_t errlen)
{
    pw_time_us_t camel, snake;
    int rc;

    if ((rc = parse_time_member(w, F_PUBLISH_TIME, "publishTime", &camel, err, errlen)) != 0 ||
        (rc = parse_time_member(w, F_PUBLISH_TIME_SNAKE, "publish_time", &snake, err, errlen)) != 0)
        return rc;
    if (camel != 0 && snake != 0 && camel != snake)
        return pw_set_err(err, errlen, PW_EINVAL, "message.publishTime and message.publish_time differ");
    *out = camel != 0 ? camel : snake;
    return 0;
}

/* A JSON integer (no fraction, no exponent) from 0 to INT_MAX. */
static int read_delivery_attempt(wrapped_t *w, int *out, char *err, size_t errlen)
{
    const pw_jval_t *v = &w->f[F_DELIVERY_ATTEMPT];
    const char *p = w->sc.s + v->start;
    size_t n = v->end - v->start;

    *out = 0;
    if (v->type == PW_J_NONE || v->type == PW_J_NULL)
        return 0;
    if (v->type != PW_J_NUMBER || memchr(p, '.', n) != NULL || memchr(p, 'e', n) != NULL || memchr(p, 'E', n) != NULL)
        return pw_set_err(err, errlen, PW_EINVAL, "deliveryAttempt: not an integer");
    long long value = 0;
    int negative = p[0] == '-', big = 0;
    for (size_t k = (size_t)negative; k < n; k++) {
        value = value * 10 + (p[k] - '0');
        if (value > INT_MAX) {
            big = 1;
            break;
        }
    }
    if (negative || big)
        return pw_set_err(err, errlen, PW_ERANGE, "deliveryAttempt: %.*s out of range", (int)(n > 24 ? 24 : n), p);
    *out = (int)value;
    return 0;
}

/* attributes is a string-to-string map: a number here means a producer we do not understand.
   Kept as its JSON text (nothing reads it yet). */
static int read_attributes(wrapped_t *w, pw_str_t *out, char *err, size_t errlen)
{
    const pw_jval_t *a = &w->f[F_ATTRIBUTES];
    *out = PW_STR_NULL;
    if (a->type == PW_J_NONE || a->type == PW_J_NULL)
        return 0;
    if (a->type != PW_J_OBJECT)
        return pw_set_err(err, errlen, PW_EINVAL, "message.attributes: not an object");
    pw_jscan_t sc;
    pw_jscan_init(&sc, w->sc.s + a->start, a->end - a->start, PW_JSON_MAX_DEPTH);
    int first = 1;
    pw_jval_t key, v;
    while (pw_jscan_object_next(&sc, &first, &key) == 1) {
        pw_jscan_value(&sc, &v); /* already validated */
        if (v.type != PW_J_STRING) {
            char name[64], quoted[100];
            size_t kn = key.end - key.start <= sizeof name ? pw_jscan_unescape(&sc, &key, name) : 0;
            return pw_set_err(err, errlen, PW_EINVAL, "message.attributes.%s: not a string",
                              pw_str_quote(quoted, sizeof quoted, pw_str(name, kn), sizeof name));
        }
    }
    *out = pw_str(w->sc.s + a->start, a->end - a->start);
    return 0;
}

static int read_data(wrapped_t *w, unsigned char **data, size_t *data_len, char *err, size_t errlen)
{
    pw_str_t b64;
    char why[128];
    int rc;

    *data = NULL;
    *data_len = 0;
    if (w->decoded != NULL) {
        *data = w->decoded; /* decoded while scanning */
        *data_len = w->decoded_len;
        w->decoded = NULL;
        return 0;
    }
    if ((rc = member_string(w, F_DATA, "message.", &b64, err, errlen)) != 0 || b64.base == NULL)
        return rc; /* a message may carry only attributes */
    unsigned char *buf = PW_XMALLOC(pw_base64_decoded_max(b64.len));
    if ((rc = pw_base64_decode(b64.base, b64.len, buf, data_len, why, sizeof(why))) != 0) {
        free(buf);
        *data_len = 0;
        return pw_set_err(err, errlen, rc, "message.data: %s", why);
    }
    *data = buf;
    return 0;
}

static int parse_wrapped(wrapped_t *w, const char *body, size_t len, pw_envelope_t *env, char *err, size_t errlen);

int pw_envelope_parse_wrapped(const char *body, size_t len, pw_envelope_t *env, char *err, size_t errlen)
{
    wrapped_t w;
    memset(&w, 0, sizeof w);
    int rc = parse_wrapped(&w, body, len, env, err, errlen);
    free(w.decoded); /* NULL once the envelope took it */
    return rc;
}

static int parse_wrapped(wrapped_t *w, const char *body, size_t len, pw_envelope_t *env, char *err, size_t errlen)
{
    size_t bad;
    int rc;

    memset(env, 0, sizeof(*env));
    if (len > INT_MAX)
        return pw_set_err(err, errlen, PW_ETOOBIG, "JSON input of %zu bytes is over the parser's limit", len);
    if ((bad = pw_json_utf8_invalid_at(body, len)) != len)
        return pw_set_err(err, errlen, PW_EINVAL, "invalid JSON at offset %zu: invalid UTF-8", bad);
    pw_jscan_init(&w->sc, body, len, PW_JSON_MAX_DEPTH);
    pw_jtype_t root = pw_jscan_peek(&w->sc);
    if (root == PW_J_NONE)
        return pw_set_err(err, errlen, PW_EINVAL, "empty JSON input");
    if (scan_envelope(w) != 0 || pw_jscan_end(&w->sc) != 0) {
        if (w->sc.why != NULL && strcmp(w->sc.why, "nesting too deep") == 0)
            return pw_set_err(err, errlen, PW_EINVAL, "nesting too deep (over %d levels)", PW_JSON_MAX_DEPTH);
        return pw_set_err(err, errlen, PW_EINVAL, "invalid JSON at offset %zu: %s", w->sc.at,
                          w->sc.why != NULL ? w->sc.why : "unexpected character");
    }
    if (root != PW_J_OBJECT)
        return pw_set_err(err, errlen, PW_EINVAL, "envelope: not a JSON object");
    if (w->f[F_MESSAGE].type != PW_J_OBJECT)
        return pw_set_err(err, errlen, PW_EINVAL, "message: missing or not an object");

    /* Unescaped strings never grow: room for all of them is at most the body's size. */
    size_t escaped = 0;
    for (int f = 0; f < F_COUNT; f++)
        if (w->f[f].type == PW_J_STRING && w->f[f].escaped)
            escaped += w->f[f].end - w->f[f].start;
    if (escaped > 0)
        w->copies = env->copies = PW_XMALLOC(escaped);
    env->wrapped = 1;
    if ((rc = member_string(w, F_SUBSCRIPTION, "", &env->subscription, err, errlen)) != 0 ||
        (rc = read_delivery_attempt(w, &env->delivery_attempt, err, errlen)) != 0 ||
        (rc = read_message_id(w, &env->message_id, err, errlen)) != 0 ||
        (rc = read_publish_time(w, &env->publish_time, err, errlen)) != 0 ||
        (rc = member_string(w, F_ORDERING_KEY, "message.", &env->ordering_key, err, errlen)) != 0 ||
        (rc = read_attributes(w, &env->attributes, err, errlen)) != 0 ||
        (rc = read_data(w, &env->data, &env->data_len, err, errlen)) != 0)
        goto fail;
    return 0;

fail:
    pw_envelope_dispose(env);
    return rc;
}

/* ---- ids of a wrapped body that failed ---- */

enum { SV_SUBSCRIPTION, SV_MESSAGE_ID, SV_MESSAGE_ID_SNAKE, SV_PUBLISH_TIME, SV_PUBLISH_TIME_SNAKE, SV_COUNT };

static pw_str_t salvaged_string(const pw_jscan_t *sc, const pw_jval_t *v, char **copies)
{
    if (v->type != PW_J_STRING)
        return PW_STR_NULL;
    if (!v->escaped)
        return pw_str(sc->s + v->start, v->end - v->start);
    size_t n = pw_jscan_unescape(sc, v, *copies);
    *copies += n;
    return pw_str(*copies - n, n);
}

int pw_envelope_salvage_ids(const char *body, size_t len, pw_salvaged_ids_t *ids)
{
    static const char *const MESSAGE_KEYS[] = {[SV_MESSAGE_ID] = "messageId", [SV_MESSAGE_ID_SNAKE] = "message_id",
                                               [SV_PUBLISH_TIME] = "publishTime", [SV_PUBLISH_TIME_SNAKE] = "publish_time"};
    pw_jval_t f[SV_COUNT], key, v;
    pw_jscan_t sc;
    int first = 1, rc, message = 0;

    memset(ids, 0, sizeof *ids);
    memset(f, 0, sizeof f);
    pw_jscan_init(&sc, body, len, PW_JSON_MAX_DEPTH);
    sc.lone_surrogates_ok = 1;
    if (pw_jscan_peek(&sc) != PW_J_OBJECT)
        return PW_EINVAL;
    /* Read as far as the syntax allows: the body failed, perhaps for a quote or a comma after
       the members that matter (json-c, which this replaced, read such bodies leniently). */
    while (pw_jscan_object_next(&sc, &first, &key) == 1) {
        if (pw_jscan_string_is(&sc, &key, "message")) {
            /* The last "message" counts, whole: forget what an earlier one said. */
            for (int k = SV_MESSAGE_ID; k < SV_COUNT; k++)
                f[k] = (pw_jval_t){0};
            if (!(message = pw_jscan_peek(&sc) == PW_J_OBJECT)) {
                if (pw_jscan_value(&sc, &v) != 0)
                    break;
                continue;
            }
            int mfirst = 1, slot = -1;
            pw_jval_t mkey;
            while ((rc = pw_jscan_object_next(&sc, &mfirst, &mkey)) == 1) {
                slot = -1;
                for (int k = SV_MESSAGE_ID; k < SV_COUNT; k++)
                    if (pw_jscan_string_is(&sc, &mkey, MESSAGE_KEYS[k]))
                        slot = k;
                if (pw_jscan_value(&sc, &v) != 0)
                    break;
                if (slot >= 0)
                    f[slot] = v;
            }
            if (rc != 0)
                break;
        } else {
            if (pw_jscan_value(&sc, &v) != 0)
                break;
            if (pw_jscan_string_is(&sc, &key, "subscription"))
                f[SV_SUBSCRIPTION] = v;
        }
    }
    /* A body cut short or nested too deep may have lost members after the cut: no ids at all
       (json-c, lenient about quotes, commas, NaN and comments, refused these two as well). */
    if (!message || (sc.why != NULL && (strcmp(sc.why, "unexpected end of data") == 0 || strcmp(sc.why, "nesting too deep") == 0)))
        return PW_EINVAL;

    size_t escaped = 0;
    for (int k = 0; k < SV_COUNT; k++)
        if (f[k].type == PW_J_STRING && f[k].escaped)
            escaped += f[k].end - f[k].start;
    char *p = ids->copies = escaped > 0 ? PW_XMALLOC(escaped) : NULL;
    ids->subscription = salvaged_string(&sc, &f[SV_SUBSCRIPTION], &p);
    ids->message_id = salvaged_string(&sc, &f[SV_MESSAGE_ID], &p);
    if (ids->message_id.base == NULL)
        ids->message_id = salvaged_string(&sc, &f[SV_MESSAGE_ID_SNAKE], &p);
    ids->publish_time = salvaged_string(&sc, &f[SV_PUBLISH_TIME], &p);
    if (ids->publish_time.base == NULL)
        ids->publish_time = salvaged_string(&sc, &f[SV_PUBLISH_TIME_SNAKE], &p);
    return 0;
}

/* ---- the unwrapped form ---- */

/* Copies s into the block at *p (NUL-terminated for convenience); "" stays absent. */
static pw_str_t copy_into(char **p, pw_str_t s)
{
    if (s.base == NULL || s.len == 0)
        return PW_STR_NULL;
    pw_str_t copy = pw_str(*p, s.len);
    memcpy(*p, s.base, s.len);
    (*p)[s.len] = '\0';
    *p += s.len + 1;
    return copy;
}

static size_t copy_size(pw_str_t s)
{
    return s.base != NULL && s.len > 0 ? s.len + 1 : 0;
}

int pw_envelope_from_unwrapped(const char *body, size_t len, const pw_unwrapped_meta_t *meta, pw_envelope_t *env, char *err,
                               size_t errlen)
{
    static const pw_unwrapped_meta_t none = {{NULL, 0}, {NULL, 0}, {NULL, 0}, {NULL, 0}};
    char why[128];
    int rc;

    memset(env, 0, sizeof(*env));
    if (meta == NULL)
        meta = &none;
    /* Parse before allocating anything, so a failure leaves nothing to release. */
    if (meta->publish_time.base != NULL && meta->publish_time.len > 0 &&
        (rc = pw_time_parse_rfc3339(meta->publish_time.base, meta->publish_time.len, &env->publish_time, why, sizeof(why))) != 0)
        return pw_set_err(err, errlen, rc, "x-goog-pubsub-publish-time: %s", why);

    size_t total = copy_size(meta->message_id) + copy_size(meta->subscription) + copy_size(meta->ordering_key);
    if (total > 0) {
        char *p = env->copies = PW_XMALLOC(total);
        env->message_id = copy_into(&p, meta->message_id);
        env->subscription = copy_into(&p, meta->subscription);
        env->ordering_key = copy_into(&p, meta->ordering_key);
    }
    if (len > 0) {
        env->data = PW_XMALLOC(len);
        memcpy(env->data, body, len);
        env->data_len = len;
    }
    return 0;
}

void pw_envelope_dispose(pw_envelope_t *env)
{
    free(env->data);
    free(env->copies);
    memset(env, 0, sizeof(*env));
}

int pw_envelope_id_usable(pw_str_t id)
{
    return id.base != NULL && id.len > 0 && memchr(id.base, '\0', id.len) == NULL && pw_json_utf8_invalid_at(id.base, id.len) == id.len;
}
