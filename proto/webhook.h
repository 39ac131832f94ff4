/* The decoded WhatsApp event model shared by the Meta Cloud API and AiSensy parsers, and the format sniffer. */
#ifndef PW_WEBHOOK_H
#define PW_WEBHOOK_H

#include <json-c/json.h>

#include "pw_str.h"
#include "time.h"

/* At most this many items (messages + statuses + contacts + errors) in one webhook body. */
#define PW_WEBHOOK_MAX_ITEMS 100000

/* One outbound-message status event. All slices borrow from pw_webhook_t.root unless noted. */
typedef struct {
    pw_str_t id;                       /* the wamid; never empty */
    pw_str_t status;                   /* "sent" "delivered" "read" "failed" "played" (static literals, lower
                                          case) or any other value exactly as received (AiSensy: lower-cased) */
    pw_time_us_t occurred_at;          /* when it happened, UTC */
    pw_str_t recipient_id;             /* the user's number as received (digits, maybe '+'); NULL when absent */
    pw_str_t phone_number_id;          /* metadata.phone_number_id of the change; NULL when absent */
    json_object *conversation;         /* borrowed; NULL when absent */
    json_object *pricing;              /* borrowed; NULL when absent */
    json_object *errors;               /* borrowed array; NULL when absent or empty */
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
    json_object *payload; /* borrowed: the message object as received */
} pw_inbound_t;

/* One WhatsApp user seen in value.contacts[] (or an AiSensy sender). */
typedef struct {
    pw_str_t wa_id;             /* never empty (entries without wa_id are not listed) */
    pw_str_t profile_name;      /* NULL when absent */
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
    char reject_reason[256]; /* the first rejected item's path and reason; "" when none */
    json_object *root;       /* owns every borrowed slice and object above... */
    json_object *scratch;    /* ...except values the parser had to build (an AiSensy number with its
                                country code, a lower-cased type, an errors array): this array owns
                                them. NULL when none. */
} pw_webhook_t;

/**
 * Parses a decoded push payload, detecting the format by shape (Meta: top-level "entry" array or
 * object "whatsapp_business_account"; AiSensy: string "topic" and object "data"). Strict JSON
 * (no trailing garbage, depth <= PW_JSON_MAX_DEPTH, valid UTF-8). A body in neither format is
 * PW_EUNSUPP; a body in one of them with a broken item (message without id, status without a
 * valid timestamp...) is still a success: that item is left out, counted in n_rejected, and the
 * first one described in reject_reason with its JSON path ("entry[0].changes[1].value.statuses[3].
 * timestamp: not a Unix time"). A body in a known format whose skeleton is wrong (entry not an
 * array, data.message not an object) is PW_EINVAL. On success release wh with pw_webhook_dispose.
 */
int pw_webhook_parse(const char *body, size_t len, pw_webhook_t *wh, char *err, size_t errlen);

/* Releases what wh owns; idempotent, and safe on a zeroed struct. */
void pw_webhook_dispose(pw_webhook_t *wh);

/* Internal to proto/: the two format parsers behind pw_webhook_parse, given the parsed root. They
   fill wh (whose root is already set) and may leave partial results on failure: the caller disposes. */
int pw__whatsapp_parse(json_object *root, pw_webhook_t *wh, char *err, size_t errlen);
int pw__aisensy_parse(json_object *root, pw_webhook_t *wh, char *err, size_t errlen);

/* Internal to proto/: building a pw_webhook_t (webhook.c). Out of memory aborts. */
pw_status_t *pw__webhook_add_status(pw_webhook_t *wh);   /* a zeroed slot appended to wh->statuses */
pw_inbound_t *pw__webhook_add_inbound(pw_webhook_t *wh); /* ... to wh->inbound */
pw_contact_t *pw__webhook_add_contact(pw_webhook_t *wh); /* ... to wh->contacts */
/* Counts one skipped item; the first reason (with its JSON path) goes to wh->reject_reason. */
void pw__webhook_reject(pw_webhook_t *wh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hands o (a reference the caller owns) to wh->scratch; returns it, borrowed until dispose. */
json_object *pw__webhook_keep(pw_webhook_t *wh, json_object *o);
/* Owned strings living until dispose: a followed by b, and an ASCII lower-case copy of s. */
pw_str_t pw__webhook_keep_concat(pw_webhook_t *wh, pw_str_t a, pw_str_t b);
pw_str_t pw__webhook_keep_lower(pw_webhook_t *wh, pw_str_t s);
/* The static literal of a known status ("sent" "delivered" "read" "failed" "played") equal to s
   (ASCII case ignored when ignore_case), else PW_STR_NULL. */
pw_str_t pw__webhook_known_status(pw_str_t s, int ignore_case);
/* Item field readers: NULL when fine, else why not ("missing", "empty", "not a string") for a
   reject reason. An empty string reads as absent (PW_STR_NULL). */
const char *pw__webhook_opt_string(json_object *o, const char *key, pw_str_t *out);
const char *pw__webhook_req_string(json_object *o, const char *key, pw_str_t *out);
/* Reads a Unix time given as a JSON string or number (see pw_time_from_unix_text/_double). */
int pw__webhook_unix_time(json_object *v, pw_time_us_t *out, char *err, size_t errlen);

#endif
