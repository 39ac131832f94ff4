/* The decoded WhatsApp event model shared by the Meta Cloud API and AiSensy parsers, and the format sniffer. */
#ifndef PW_WEBHOOK_H
#define PW_WEBHOOK_H

#include "jscan.h"
#include "pw_str.h"
#include "time.h"

/* At most this many items (messages + statuses + contacts + errors) in one webhook body. */
#define PW_WEBHOOK_MAX_ITEMS 100000
/* Containers of a payload whose ends the validating pass keeps for the reading pass (webhook.c). */
#define PW_WEBHOOK_SPANS 256

/*
 * One outbound-message status event. Slices borrow from the payload text (pw_webhook_t.text) or
 * from memory the webhook owns (strings with escapes, unescaped; built values). A "JSON text"
 * slice is the value exactly as received (PostgreSQL's jsonb reads it: numbers stay exact), or a
 * copy of it with each \u0000 and half surrogate pair replaced by \ufffd, which jsonb refuses.
 */
typedef struct {
    pw_str_t id;                       /* the wamid; never empty */
    pw_str_t status;                   /* "sent" "delivered" "read" "failed" "played" (static literals, lower
                                          case) or any other value exactly as received (AiSensy: lower-cased) */
    pw_time_us_t occurred_at;          /* when it happened, UTC */
    pw_str_t recipient_id;             /* the user's number as received (digits, maybe '+'); NULL when absent
                                          or empty (a message sent to a business-scoped user id) */
    pw_str_t recipient_user_id;        /* the user's business-scoped user id (BSUID, "US.1349...", opaque) when
                                          the message was sent to it; NULL when absent or empty */
    pw_str_t phone_number_id;          /* metadata.phone_number_id of the change; NULL when absent */
    pw_str_t conversation;             /* JSON text of an object; NULL when absent */
    pw_str_t pricing;                  /* JSON text of an object; NULL when absent */
    pw_str_t errors;                   /* JSON text of a non-empty array; NULL when absent or empty */
    pw_str_t biz_opaque_callback_data; /* NULL when absent */
} pw_status_t;

/* One inbound (user to business) message. */
typedef struct {
    pw_str_t id;              /* wamid; never empty */
    pw_str_t phone_number_id; /* NULL when absent */
    pw_str_t from;            /* the user's number as received; NULL for username-only users */
    pw_str_t from_user_id;    /* BSUID ("US.1349..."); NULL when absent */
    pw_str_t contact_name;    /* profile name of the matching contacts[] entry; NULL when absent */
    pw_str_t type;            /* "text", "image", ... as received (AiSensy types mapped to Meta's) */
    pw_str_t body;            /* what a person would read (docs/rows.md "body"); NULL when none */
    pw_str_t context_id;      /* context.id of the message replied to; NULL when absent */
    pw_time_us_t sent_at;
    pw_str_t payload;         /* JSON text of the message object as received */
} pw_inbound_t;

/* One WhatsApp user seen in value.contacts[] (or an AiSensy sender): known by a phone number, a
   business-scoped user id, or both (entries with neither are not listed). */
typedef struct {
    pw_str_t wa_id;             /* the phone number as received; NULL when absent or empty (username users) */
    pw_str_t user_id;           /* the business-scoped user id (BSUID); NULL when absent or empty */
    pw_str_t profile_name;      /* profile.name; NULL when absent */
    pw_str_t username;          /* profile.username ("@pablomorales"); NULL when absent */
    pw_str_t country_code;      /* profile.country_code ("US"); NULL when absent */
    pw_time_us_t seen_at;       /* the latest message/status time in the same change */
    pw_time_us_t first_seen_at; /* the earliest one (docs/rows.md first_seen_at); <= seen_at */
} pw_contact_t;

typedef enum {
    PW_FORMAT_META = 1,    /* Meta Cloud API: {"object":"whatsapp_business_account","entry":[...]} */
    PW_FORMAT_AISENSY = 2, /* AiSensy project webhook: {"topic":"message...","data":{"message":{...}}} */
} pw_format_t;

typedef struct {
    pw_format_t format;
    pw_status_t *statuses;
    size_t n_statuses;
    pw_inbound_t *inbound;
    size_t n_inbound;
    pw_contact_t *contacts;
    size_t n_contacts;
    size_t n_ignored;        /* recognised but not stored: other change fields, value.errors[],
                                other AiSensy topics */
    size_t n_rejected;       /* items skipped as malformed (a status without id or time...); the
                                rest are kept: the caller stores them AND dead-letters the push */
    char reject_reason[256]; /* the first rejected item's path and reason (valid UTF-8); "" when none */
    size_t n_lossy;          /* strings (or keys) in the payload holding \u0000 or half a surrogate
                                pair: PostgreSQL cannot store them, so they read as U+FFFD */
    pw_str_t text;           /* the payload, borrowed from the caller: most slices point into it */
    const pw_jspan_t *spans; /* where its first containers end, from the validating pass (in arena) */
    size_t n_spans;
    struct pw__arena *arena; /* owns what the parser had to make (unescaped strings, an AiSensy
                                number with its country code, a lower-cased type, an errors array,
                                sanitized JSON text); NULL when nothing */
} pw_webhook_t;

/**
 * Parses a decoded push payload without building a tree (proto/jscan.c): one validating pass,
 * then a reading pass that looks only at the members we store, checking the item limit per
 * change before its items are read. Detects the format by shape (Meta: top-level "entry" array or
 * object "whatsapp_business_account"; AiSensy: string "topic" and object "data"). Strict JSON
 * (no trailing garbage, depth <= PW_JSON_MAX_DEPTH, valid UTF-8). A body in neither format is
 * PW_EUNSUPP; a body in one of them with a broken item (message without id, status without a
 * valid timestamp...) is still a success: that item is left out, counted in n_rejected, and the
 * first one described in reject_reason with its JSON path ("entry[0].changes[1].value.statuses[3].
 * timestamp: not a Unix time"). A body in a known format whose skeleton is wrong (entry not an
 * array, data.message not an object) is PW_EINVAL; more than PW_WEBHOOK_MAX_ITEMS items is
 * PW_ETOOBIG. body is borrowed: it must stay unchanged until wh is disposed. On success release
 * wh with pw_webhook_dispose. Memory: what is stored, never a node per value of the payload.
 */
int pw_webhook_parse(const char *body, size_t len, pw_webhook_t *wh, char *err, size_t errlen);

/* Releases what wh owns; idempotent, and safe on a zeroed struct. */
void pw_webhook_dispose(pw_webhook_t *wh);

/* Internal to proto/: the two format parsers behind pw_webhook_parse, given the root value (of
   wh->text, already validated). They fill wh and may leave partial results on failure: the
   caller disposes. */
int pw__whatsapp_parse(pw_webhook_t *wh, const pw_jval_t *root, char *err, size_t errlen);
int pw__aisensy_parse(pw_webhook_t *wh, const pw_jval_t *root, char *err, size_t errlen);

/* Internal to proto/: building a pw_webhook_t (webhook.c). Out of memory aborts. */
pw_status_t *pw__webhook_add_status(pw_webhook_t *wh);   /* a zeroed slot appended to wh->statuses */
pw_inbound_t *pw__webhook_add_inbound(pw_webhook_t *wh); /* ... to wh->inbound */
pw_contact_t *pw__webhook_add_contact(pw_webhook_t *wh); /* ... to wh->contacts */
/* Counts one skipped item; the first reason (with its JSON path) goes to wh->reject_reason. */
void pw__webhook_reject(pw_webhook_t *wh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* n bytes owned by wh until dispose (never NULL, even for 0). */
char *pw__webhook_alloc(pw_webhook_t *wh, size_t n);
/* Owned strings living until dispose: a followed by b, and an ASCII lower-case copy of s. */
pw_str_t pw__webhook_keep_concat(pw_webhook_t *wh, pw_str_t a, pw_str_t b);
pw_str_t pw__webhook_keep_lower(pw_webhook_t *wh, pw_str_t s);
/* The static literal of a known status ("sent" "delivered" "read" "failed" "played") equal to s
   (ASCII case ignored when ignore_case), else PW_STR_NULL. */
pw_str_t pw__webhook_known_status(pw_str_t s, int ignore_case);

/*
 * Reading values of wh->text (webhook.c). A value is a pw_jval_t of wh->text; PW_J_NONE means
 * absent. As json-c did: a member whose value is null reads as absent, the last of duplicate
 * members counts, and keys compare up to their first NUL once unescaped.
 */
/* The members keys[0..n) of obj into out[0..n) (all PW_J_NONE when obj is not an object). */
void pw__webhook_members(const pw_webhook_t *wh, const pw_jval_t *obj, const char *const keys[], size_t n, pw_jval_t out[]);
pw_jval_t pw__webhook_member(const pw_webhook_t *wh, const pw_jval_t *obj, const char *key);
/* Iterating an array: pw__webhook_iter, then pw__webhook_next gives 1 and the next element until 0. */
typedef struct {
    pw_jscan_t sc;
    int first;
} pw__jiter_t;
void pw__webhook_iter(const pw_webhook_t *wh, const pw_jval_t *arr, pw__jiter_t *it);
int pw__webhook_next(pw__jiter_t *it, pw_jval_t *elem);
/* The number of elements of an array, or members of an object (duplicates counted once each
   time they appear); 0 for anything else. */
size_t pw__webhook_count(const pw_webhook_t *wh, const pw_jval_t *v);
/* A string value unescaped (into wh's memory when it has escapes); PW_STR_NULL when v is not a
   string; "" is a present, empty slice. */
pw_str_t pw__webhook_str(pw_webhook_t *wh, const pw_jval_t *v);
/* v's JSON text (see pw_status_t); PW_STR_NULL when absent. */
pw_str_t pw__webhook_json(pw_webhook_t *wh, const pw_jval_t *v);
/* A number as json-c typed it: 1 when written as an integer (*i saturated to int64), else 0 with
   *d (strtod); -1 when v is not a number. */
int pw__webhook_number(const pw_webhook_t *wh, const pw_jval_t *v, int64_t *i, double *d);
/* Field readers: NULL when fine, else why not ("missing", "empty", "not a string") for a reject
   reason. An empty string reads as absent (PW_STR_NULL). v is the member's value. */
const char *pw__webhook_opt_string(pw_webhook_t *wh, const pw_jval_t *v, pw_str_t *out);
const char *pw__webhook_req_string(pw_webhook_t *wh, const pw_jval_t *v, pw_str_t *out);
/* A non-empty string member key of obj, else PW_STR_NULL (what a person would read). */
pw_str_t pw__webhook_text_at(pw_webhook_t *wh, const pw_jval_t *obj, const char *key);
/* Reads a Unix time given as a JSON string or number (see pw_time_from_unix_text/_double). */
int pw__webhook_unix_time(pw_webhook_t *wh, const pw_jval_t *v, pw_time_us_t *out, char *err, size_t errlen);

#endif
