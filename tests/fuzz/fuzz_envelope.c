/*
 * libFuzzer target: proto/pubsub.c (pw_envelope_is_wrapped, pw_envelope_parse_wrapped,
 * pw_envelope_from_unwrapped), and behind a wrapped push the payload parser, as the worker
 * (worker/dispatch.c) chains them.
 *
 * Invariants (abort() on a violation):
 *   - on success every slice is non-empty and lies inside the body or inside env.copies (ASan
 *     checks each byte is readable: every slice is summed), data_len fits the base64 bound,
 *     data == NULL exactly when data_len == 0, attributes (if any) is a JSON object of strings;
 *   - on failure err is a NUL-terminated reason and env is all zero (nothing to release);
 *   - pw_envelope_parse_wrapped succeeds => pw_envelope_is_wrapped said 1 (the worker picks the
 *     parser with it), except when a top-level key is written with escapes ("mess\u0061ge"):
 *     the cheap sniffer compares raw bytes (a known limitation, reported, not a crash);
 *   - message.data (decoded while it is scanned when it holds only base64 characters) is the
 *     bytes json-c's reading of the same member gives through pw_base64_decode (unless the body
 *     has an escaped NUL, where json-c cuts keys);
 *   - dispose is idempotent; pw_envelope_salvage_ids gives readable slices, or nothing;
 *   - the unwrapped form copies the body exactly and owns copies of the header values.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "proto/base64.h"
#include "proto/jscan.h"
#include "proto/pubsub.h"
#include "proto/webhook.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #cond);        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static volatile unsigned sink;

/* Touches every byte (ASan reports a slice that points outside live memory). */
static void touch(pw_str_t s)
{
    unsigned h = 0;
    for (size_t i = 0; i < s.len; i++)
        h = h * 31 + (unsigned char)s.base[i];
    sink += h;
}

static int inside(pw_str_t s, const char *base, size_t len)
{
    return base != NULL && s.base >= base && s.base + s.len <= base + len;
}

/* A present slice must be non-empty and point into the body or the envelope's copies. */
static void check_slice(pw_str_t s, const pw_envelope_t *env, const char *body, size_t len)
{
    if (s.base == NULL) {
        CHECK(s.len == 0);
        return;
    }
    CHECK(s.len > 0);
    CHECK(inside(s, body, len) || env->copies != NULL);
    touch(s);
}

static int all_zero(const void *p, size_t n)
{
    const unsigned char *u = p;
    for (size_t i = 0; i < n; i++)
        if (u[i] != 0)
            return 0;
    return 1;
}

static void check_err(const char *err, size_t errlen)
{
    CHECK(memchr(err, '\0', errlen) != NULL && err[0] != '\0');
}

static void payload(const unsigned char *data, size_t len)
{
    pw_webhook_t wh;
    char err[256];
    if (pw_webhook_parse((const char *)data, len, &wh, err, sizeof err) == 0) {
        for (size_t i = 0; i < wh.n_statuses; i++)
            touch(wh.statuses[i].id);
        for (size_t i = 0; i < wh.n_inbound; i++)
            touch(wh.inbound[i].id);
        pw_webhook_dispose(&wh);
    }
}

/*
 * message.data as json-c reads it (an independent parser; duplicates: the last counts), decoded.
 * Not for a body with an escaped NUL: json-c cuts an object key there ("data\u0000" is its key
 * "data", README's known differences), where proto/ reads the key whole and finds no data.
 */
static void check_data(const char *body, size_t len, const pw_envelope_t *env)
{
    if (memmem(body, len, "\\u0000", 6) != NULL)
        return;
    struct json_tokener *tok = json_tokener_new_ex(PW_JSON_MAX_DEPTH + 1);
    CHECK(tok != NULL);
    struct json_object *root = json_tokener_parse_ex(tok, body, (int)len), *message, *data;
    if (root != NULL && json_object_object_get_ex(root, "message", &message) &&
        json_object_object_get_ex(message, "data", &data) && json_object_is_type(data, json_type_string)) {
        const char *b64 = json_object_get_string(data);
        size_t n = (size_t)json_object_get_string_len(data);
        unsigned char *want = malloc(pw_base64_decoded_max(n) + 1);
        size_t want_len = 0;
        CHECK(want != NULL);
        CHECK(pw_base64_decode(b64, n, want, &want_len, NULL, 0) == 0);
        CHECK(want_len == env->data_len && (want_len == 0 || memcmp(want, env->data, want_len) == 0));
        free(want);
    }
    json_object_put(root);
    json_tokener_free(tok);
}

static void wrapped(const char *body, size_t len)
{
    pw_envelope_t env;
    char err[256];
    int sniffed = pw_envelope_is_wrapped(body, len);
    CHECK(sniffed == 0 || sniffed == 1);

    /* What the worker recovers from a body that failed: slices of the body or of ids.copies. */
    pw_salvaged_ids_t ids;
    if (pw_envelope_salvage_ids(body, len, &ids) == 0) {
        CHECK(inside(ids.subscription, body, len) || ids.copies != NULL || ids.subscription.base == NULL);
        touch(ids.subscription);
        touch(ids.message_id);
        touch(ids.publish_time);
        free(ids.copies);
    } else {
        CHECK(all_zero(&ids, sizeof ids));
    }

    memset(err, 0, sizeof err);
    int rc = pw_envelope_parse_wrapped(body, len, &env, err, sizeof err);
    if (rc != 0) {
        CHECK(rc < 0);
        check_err(err, sizeof err);
        CHECK(all_zero(&env, sizeof env));
        pw_envelope_dispose(&env);
        /* A tiny err buffer is truncated, never overrun. */
        char tiny[3];
        CHECK(pw_envelope_parse_wrapped(body, len, &env, tiny, sizeof tiny) == rc && tiny[2] == '\0');
        CHECK(pw_envelope_parse_wrapped(body, len, &env, NULL, 0) == rc);
        return;
    }
    if (!sniffed && memchr(body, '\\', len) == NULL) {
        fprintf(stderr, "MISMATCH: pw_envelope_parse_wrapped accepts a body pw_envelope_is_wrapped calls unwrapped\n");
        abort();
    }
    CHECK(env.wrapped == 1);
    check_slice(env.subscription, &env, body, len);
    check_slice(env.message_id, &env, body, len);
    check_slice(env.ordering_key, &env, body, len);
    CHECK(env.delivery_attempt >= 0);
    CHECK(env.publish_time >= 0 && env.publish_time <= PW_TIME_MAX_SECONDS * 1000000LL + 999999);
    CHECK((env.data == NULL) == (env.data_len == 0));
    CHECK(env.data_len <= pw_base64_decoded_max(len));
    check_data(body, len, &env);
    if (env.data != NULL) {
        touch(pw_str((const char *)env.data, env.data_len));
        payload(env.data, env.data_len);
    }
    if (env.attributes.base != NULL) { /* a slice of the body: an object of strings */
        check_slice(env.attributes, &env, body, len);
        pw_jscan_t sc;
        pw_jval_t key, v;
        int first = 1, rc;
        pw_jscan_init(&sc, env.attributes.base, env.attributes.len, PW_JSON_MAX_DEPTH);
        while ((rc = pw_jscan_object_next(&sc, &first, &key)) == 1) {
            CHECK(pw_jscan_value(&sc, &v) == 0);
            CHECK(v.type == PW_J_STRING);
        }
        CHECK(rc == 0 && pw_jscan_end(&sc) == 0);
    }
    pw_envelope_dispose(&env);
    CHECK(all_zero(&env, sizeof env));
    pw_envelope_dispose(&env);
}

/* The unwrapped form: the headers come from the input too (its first line is the publish time,
   the second the message id, the rest the body), so that the time parser sees fuzzed text. */
static void unwrapped(const char *data, size_t size)
{
    pw_unwrapped_meta_t meta = {PW_STR_NULL, PW_STR_NULL, PW_STR_LIT("projects/p/subscriptions/s"), PW_STR_NULL};
    const char *p = data, *end = data + size, *nl;
    pw_str_t *fields[] = {&meta.publish_time, &meta.message_id};
    for (size_t k = 0; k < 2 && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL && nl - p <= 64; k++) {
        *fields[k] = pw_str(p, (size_t)(nl - p));
        p = nl + 1;
    }
    const char *body = p;
    size_t len = (size_t)(end - p);

    pw_envelope_t env;
    char err[256];
    int rc = pw_envelope_from_unwrapped(body, len, &meta, &env, err, sizeof err);
    if (rc != 0) {
        CHECK(meta.publish_time.len > 0);
        check_err(err, sizeof err);
        CHECK(all_zero(&env, sizeof env));
        return;
    }
    CHECK(env.wrapped == 0);
    CHECK(env.data_len == len && (len == 0 ? env.data == NULL : memcmp(env.data, body, len) == 0));
    CHECK((env.message_id.base == NULL) == (meta.message_id.len == 0));
    if (env.message_id.base != NULL) {
        CHECK(!inside(env.message_id, data, size)); /* a copy, not a slice of the request */
        CHECK(env.message_id.len == meta.message_id.len && memcmp(env.message_id.base, meta.message_id.base, meta.message_id.len) == 0);
        CHECK(env.message_id.base[env.message_id.len] == '\0');
    }
    CHECK(pw_str_eq(env.subscription, "projects/p/subscriptions/s"));
    CHECK(env.ordering_key.base == NULL);
    CHECK((env.publish_time != 0) == (meta.publish_time.len > 0));
    pw_envelope_dispose(&env);

    /* No headers at all. */
    CHECK(pw_envelope_from_unwrapped(body, len, NULL, &env, err, sizeof err) == 0);
    pw_envelope_dispose(&env);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The body in a buffer of exactly its size, so that reading one byte past it is caught. */
    char *body = malloc(size > 0 ? size : 1);
    CHECK(body != NULL);
    memcpy(body, data, size);
    wrapped(body, size);
    unwrapped(body, size);
    free(body);
    return 0;
}
