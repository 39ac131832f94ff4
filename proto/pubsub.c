/* The Pub/Sub push envelope: the wrapped JSON form and the unwrapped body-plus-headers form, into one pw_envelope_t. */
#include "pubsub.h"

#include "base64.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#define xmalloc(n) xmalloc_at((n), __FILE__, __LINE__)

/* Out of memory is fatal (STYLE.md rule 5): no caller handles it. */
static void *xmalloc_at(size_t n, const char *file, int line)
{
    void *p = malloc(n > 0 ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "%s:%d: out of memory (%zu bytes)\n", file, line, n);
        abort();
    }
    return p;
}

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

/* ---- the wrapped form ---- */

/* An optional string member; "" counts as absent (Pub/Sub omits unset fields, nothing means ""). */
static int read_string(json_object *o, const char *key, const char *path, pw_str_t *out, char *err, size_t errlen)
{
    json_object *v = pw_json_member(o, key);
    *out = PW_STR_NULL;
    if (v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_string))
        return pw_set_err(err, errlen, PW_EINVAL, "%s%s: not a string", path, key);
    if (json_object_get_string_len(v) > 0)
        *out = pw_json_str(v);
    return 0;
}

/* Pub/Sub sends messageId and publishTime twice (camelCase and snake_case); a reader trusting one
   spelling must not silently ignore the other, so they have to agree. */
static int read_message_id(json_object *msg, pw_str_t *out, char *err, size_t errlen)
{
    pw_str_t camel, snake;
    int rc;

    if ((rc = read_string(msg, "messageId", "message.", &camel, err, errlen)) != 0 ||
        (rc = read_string(msg, "message_id", "message.", &snake, err, errlen)) != 0)
        return rc;
    if (camel.base != NULL && snake.base != NULL && (camel.len != snake.len || memcmp(camel.base, snake.base, camel.len) != 0))
        return pw_set_err(err, errlen, PW_EINVAL, "message.messageId and message.message_id differ");
    *out = camel.base != NULL ? camel : snake;
    return 0;
}

static int parse_time_member(json_object *msg, const char *key, pw_time_us_t *out, char *err, size_t errlen)
{
    pw_str_t s;
    char why[128];
    int rc;

    *out = 0;
    if ((rc = read_string(msg, key, "message.", &s, err, errlen)) != 0 || s.base == NULL)
        return rc;
    if ((rc = pw_time_parse_rfc3339(s.base, s.len, out, why, sizeof(why))) != 0)
        return pw_set_err(err, errlen, rc, "message.%s: %s", key, why);
    return 0;
}

/* The two spellings are compared as instants: "...55.749Z" and "...55.749000Z" agree. */
static int read_publish_time(json_object *msg, pw_time_us_t *out, char *err, size_t errlen)
{
    pw_time_us_t camel, snake;
    int rc;

    if ((rc = parse_time_member(msg, "publishTime", &camel, err, errlen)) != 0 ||
        (rc = parse_time_member(msg, "publish_time", &snake, err, errlen)) != 0)
        return rc;
    if (camel != 0 && snake != 0 && camel != snake)
        return pw_set_err(err, errlen, PW_EINVAL, "message.publishTime and message.publish_time differ");
    *out = camel != 0 ? camel : snake;
    return 0;
}

static int read_delivery_attempt(json_object *root, int *out, char *err, size_t errlen)
{
    json_object *v = pw_json_member(root, "deliveryAttempt");
    int64_t n;

    *out = 0;
    if (v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_int))
        return pw_set_err(err, errlen, PW_EINVAL, "deliveryAttempt: not an integer");
    n = json_object_get_int64(v);
    if (n < 0 || n > INT_MAX)
        return pw_set_err(err, errlen, PW_ERANGE, "deliveryAttempt: %lld out of range", (long long)n);
    *out = (int)n;
    return 0;
}

/* attributes is a string-to-string map: a number here means a producer we do not understand. */
static int read_attributes(json_object *msg, json_object **out, char *err, size_t errlen)
{
    json_object *attrs = pw_json_member(msg, "attributes");

    *out = NULL;
    if (attrs == NULL)
        return 0;
    if (!json_object_is_type(attrs, json_type_object))
        return pw_set_err(err, errlen, PW_EINVAL, "message.attributes: not an object");
    json_object_object_foreach(attrs, key, val)
    {
        if (!json_object_is_type(val, json_type_string))
            return pw_set_err(err, errlen, PW_EINVAL, "message.attributes.%s: not a string", key);
    }
    *out = attrs;
    return 0;
}

static int read_data(json_object *msg, unsigned char **data, size_t *data_len, char *err, size_t errlen)
{
    pw_str_t b64;
    char why[128];
    int rc;

    *data = NULL;
    *data_len = 0;
    if ((rc = read_string(msg, "data", "message.", &b64, err, errlen)) != 0 || b64.base == NULL)
        return rc; /* a message may carry only attributes */
    unsigned char *buf = xmalloc(pw_base64_decoded_max(b64.len));
    if ((rc = pw_base64_decode(b64.base, b64.len, buf, data_len, why, sizeof(why))) != 0) {
        free(buf);
        *data_len = 0;
        return pw_set_err(err, errlen, rc, "message.data: %s", why);
    }
    *data = buf;
    return 0;
}

int pw_envelope_parse_wrapped(const char *body, size_t len, pw_envelope_t *env, char *err, size_t errlen)
{
    json_object *root, *msg;
    int rc;

    memset(env, 0, sizeof(*env));
    if ((rc = pw_json_parse_strict(body, len, &root, err, errlen)) != 0)
        return rc;
    env->root = root;
    env->wrapped = 1;
    if (!json_object_is_type(root, json_type_object)) {
        rc = pw_set_err(err, errlen, PW_EINVAL, "envelope: not a JSON object");
        goto fail;
    }
    if (!json_object_is_type(msg = pw_json_member(root, "message"), json_type_object)) {
        rc = pw_set_err(err, errlen, PW_EINVAL, "message: missing or not an object");
        goto fail;
    }
    if ((rc = read_string(root, "subscription", "", &env->subscription, err, errlen)) != 0 ||
        (rc = read_delivery_attempt(root, &env->delivery_attempt, err, errlen)) != 0 ||
        (rc = read_message_id(msg, &env->message_id, err, errlen)) != 0 ||
        (rc = read_publish_time(msg, &env->publish_time, err, errlen)) != 0 ||
        (rc = read_string(msg, "orderingKey", "message.", &env->ordering_key, err, errlen)) != 0 ||
        (rc = read_attributes(msg, &env->attributes, err, errlen)) != 0 ||
        (rc = read_data(msg, &env->data, &env->data_len, err, errlen)) != 0)
        goto fail;
    return 0;

fail:
    pw_envelope_dispose(env);
    return rc;
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
        char *p = env->copies = xmalloc(total);
        env->message_id = copy_into(&p, meta->message_id);
        env->subscription = copy_into(&p, meta->subscription);
        env->ordering_key = copy_into(&p, meta->ordering_key);
    }
    if (len > 0) {
        env->data = xmalloc(len);
        memcpy(env->data, body, len);
        env->data_len = len;
    }
    return 0;
}

void pw_envelope_dispose(pw_envelope_t *env)
{
    free(env->data);
    free(env->copies);
    json_object_put(env->root);
    memset(env, 0, sizeof(*env));
}
