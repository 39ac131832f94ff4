/* The Pub/Sub push envelope: wrapped JSON ({"message":{...},"subscription":...}) or unwrapped (body + headers). */
#ifndef PW_PUBSUB_H
#define PW_PUBSUB_H

#include "jscan.h" /* PW_JSON_MAX_DEPTH */
#include "pw_str.h"
#include "time.h"

typedef struct {
    pw_str_t subscription;     /* "projects/p/subscriptions/s"; base == NULL when absent */
    pw_str_t message_id;       /* messageId | message_id | x-goog-pubsub-message-id; NULL when absent */
    pw_time_us_t publish_time; /* 0 when absent */
    int delivery_attempt;      /* 0 when absent */
    pw_str_t ordering_key;     /* NULL when absent */
    pw_str_t attributes;       /* JSON text of the attributes (a string-to-string object), a slice of
                                  the body; NULL when absent */
    unsigned char *data;       /* the decoded payload, owned; NULL when absent or empty */
    size_t data_len;
    int wrapped;       /* 1 for the JSON envelope, 0 for an unwrapped push */
    char *copies;      /* owns the strings above that are not slices of the wrapped body: unescaped
                          ones (wrapped form), the copied headers (unwrapped form) */
} pw_envelope_t;

/* The x-goog-pubsub-* headers of an unwrapped push (slices borrowed from the request). */
typedef struct {
    pw_str_t message_id;
    pw_str_t publish_time;
    pw_str_t subscription;
    pw_str_t ordering_key;
} pw_unwrapped_meta_t;

/**
 * Tells whether body looks like a wrapped envelope: a JSON object whose top level has a "message"
 * member that is an object. Cheap (does not parse fully); used to pick the parser.
 */
int pw_envelope_is_wrapped(const char *body, size_t len);

/**
 * Parses a wrapped push body. Accepts messageId|message_id and publishTime|publish_time (when
 * both spellings are present and differ: PW_EINVAL), optional attributes (string map),
 * orderingKey, deliveryAttempt, data (strict standard base64; missing or "" gives data == NULL).
 * Rejects: invalid JSON (strict RFC 8259, valid UTF-8), trailing garbage, nesting over
 * PW_JSON_MAX_DEPTH, non-object message, wrong member types. The string slices in env point
 * into body (or env->copies): body must outlive env. On success env must be released with
 * pw_envelope_dispose; on failure nothing needs releasing and err says why
 * ("message.data: invalid base64 character '!' at 3").
 */
int pw_envelope_parse_wrapped(const char *body, size_t len, pw_envelope_t *env, char *err, size_t errlen);

/**
 * Builds an envelope for an unwrapped push: data is a copy of body; metadata from the headers.
 * A present but unparseable publish time is PW_EINVAL. Release with pw_envelope_dispose.
 * The slices in meta are copied, so env does not borrow from the request.
 */
int pw_envelope_from_unwrapped(const char *body, size_t len, const pw_unwrapped_meta_t *meta, pw_envelope_t *env, char *err,
                               size_t errlen);

/* What can be recovered from a wrapped push body that failed to parse (bad base64, a member of the
   wrong type...): enough to keep its dead letter once and to recognise a redelivery. */
typedef struct {
    pw_str_t subscription;     /* NULL when absent or not a string */
    pw_str_t message_id;       /* messageId, else message_id (when messageId is not a string); NULL when neither */
    pw_str_t publish_time;     /* publishTime, else publish_time, as text; NULL when neither */
    char *copies;              /* owns the strings above that had escapes (free()); NULL when none */
} pw_salvaged_ids_t;

/**
 * Reads the ids of body without building a tree: a JSON object (strict syntax up to the end of
 * the object; UTF-8 unchecked: the caller judges each id) whose last "message" member is an
 * object. Returns 0 with ids filled (slices of body or of ids->copies: release with free(copies)),
 * or PW_EINVAL with ids zeroed when body is not such an object.
 */
int pw_envelope_salvage_ids(const char *body, size_t len, pw_salvaged_ids_t *ids);

/* 1 when an id (subscription, message id) can be stored as text and read by a person: not
   empty, valid UTF-8, no NUL. An id that is not would make every write of its push fail. */
int pw_envelope_id_usable(pw_str_t id);

/* Releases what env owns; idempotent, and safe on a zeroed struct. */
void pw_envelope_dispose(pw_envelope_t *env);

#endif
