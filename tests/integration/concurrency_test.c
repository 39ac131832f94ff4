/*
 * Concurrency: two worker processes on one database receive the same 1,000 status events,
 * shuffled and duplicated, and the tables end identical to a single ordered run.
 *
 * The events are generated here, deterministically (a fixed-seed PRNG): 346 outbound
 * messages, each following one of a set of status histories (sent/delivered/read/failed/played
 * mixes, read without delivered, failed then delivered, a status repeated with a later time and
 * other columns, an unknown status kept as is), with distinct timestamps in three encodings
 * (string seconds, number seconds, number milliseconds), recipients in two spellings, sometimes
 * absent. Events are grouped into Meta webhooks of 1 to 3 statuses (one phone_number_id each).
 *
 * Run 1 sends the webhooks in chronological order, one at a time, to one worker; its rows are
 * checked against an oracle computed here from docs/rows.md. Run 2 sends the same webhooks,
 * shuffled, about 30% of them twice (half as a Pub/Sub redelivery with the same messageId, half
 * as a duplicated webhook with a new messageId), split between two workers (WORKER_THREADS=2
 * each), 16 requests in flight per worker. The dumps of both runs must be byte-identical.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <libpq-fe.h>

#include "tests/integration/harness.h"
#include "tests/integration/httpc.h"
#include "tests/integration/util.h"

#define SUBSCRIPTION "projects/pw-test/subscriptions/concurrency"
#define N_EVENTS 1000
#define MAX_PER_WEBHOOK 3
#define IN_FLIGHT_PER_WORKER 16
#define BASE_TIME 1709251200LL /* 2024-03-01T00:00:00Z */

/* ---- small helpers ----------------------------------------------------------------------------- */

static double now_s(void)
{
    return (double)pwt_now_ms() / 1e3;
}

/* splitmix64: a small deterministic PRNG, so both runs and every machine see the same events. */
static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n). */
static int rng_below(int n)
{
    return (int)(rng_next() % (uint64_t)n);
}

/* A growable string. */
typedef struct {
    char *p;
    size_t len, cap;
} sbuf_t;

static void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        b->p = pwt_xrealloc(b->p, b->cap);
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static char *sb_take(sbuf_t *b)
{
    return b->p != NULL ? b->p : pwt_xstrdup("");
}

/* 'YYYY-MM-DDTHH:MM:SSZ' of a Unix time (seconds). */
static void iso_utc(long long t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* As PostgreSQL prints a timestamptz in UTC: '2024-03-01 00:00:00+00', or '...00:00:00.25+00'. */
static void pg_time(long long t, int ms, char out[48])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%d %H:%M:%S", &tm);
    if (ms == 0) {
        snprintf(out, 48, "%s+00", base);
    } else {
        char frac[8];
        snprintf(frac, sizeof frac, "%03d", ms);
        for (int i = 2; i > 0 && frac[i] == '0'; i--)
            frac[i] = '\0';
        snprintf(out, 48, "%s.%s+00", base, frac);
    }
}

/* ---- the generated events ---------------------------------------------------------------------- */

typedef struct {
    int msg;           /* message index */
    int seq;           /* index of the event inside its message's history */
    const char *status;
    long long t;       /* Unix seconds */
    int ms;            /* milliseconds part (only with the millisecond encoding) */
    int ts_format;     /* 0: "string seconds", 1: number seconds, 2: number milliseconds */
    int has_recipient;
    int variant;       /* 0: the first event of this status; 1: a later repeat with other columns */
} event_t;

typedef struct {
    char wamid[64];
    char digits[16];    /* recipient digits */
    char recipient[24]; /* as sent: the digits, or "+" and the digits */
    const char *pnid;
    int with_conversation, with_biz, with_contact;
} message_t;

typedef struct {
    int n;
    int ev[MAX_PER_WEBHOOK]; /* indexes into events[], chronological */
    char *payload;           /* the webhook JSON */
} webhook_t;

/* Status histories, each in chronological order. "sent+" is a repeated sent (later, other columns). */
static const char *const patterns[][6] = {
    {"sent", "delivered", "read", NULL},
    {"sent", "delivered", NULL},
    {"read", NULL},                          /* read, nothing else: implies delivered and sent */
    {"sent", "read", NULL},                  /* read without delivered */
    {"sent", "failed", NULL},
    {"failed", "delivered", NULL},           /* failed, then delivered after all */
    {"sent", "delivered", "read", "played", NULL},
    {"sent", "failed", "delivered", "read", NULL},
    {"delivered", "sent", NULL},             /* the real sent is later than the implied one */
    {"sent", "delivered", "played", NULL},
    {"sent", "delivered", "deleted", NULL},  /* a status outside the five, kept as is */
    {"failed", NULL},
    {"sent", "delivered", "read", "sent+", NULL},
    {"failed", "failed+", NULL},             /* two failures: the earliest one's errors win */
    {"deleted", NULL},                       /* only an unknown status: it is the current status */
    {"sent", "delivered", "read", "played", NULL},
    {"sent", "sent+", "delivered", "read", NULL},
    {"sent", "delivered", "read", "played", "sent+", NULL},
    {"failed", "sent", "delivered", "read", NULL},
    {"read", "delivered", "sent", NULL},     /* real delivered and sent later than the implied ones */
    {"sent", "delivered", "read", "delivered+", NULL},
    {"sent", "read", "played", "delivered", NULL},
};
#define N_PATTERNS ((int)(sizeof patterns / sizeof patterns[0]))

/* "sent+" -> "sent". */
static const char *status_name(const char *pattern_item)
{
    static const char *const names[] = {"sent", "delivered", "read", "failed", "played", "deleted"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strncmp(pattern_item, names[i], strlen(names[i])) == 0)
            return names[i];
    return pattern_item;
}

static message_t *messages;
static int n_messages;
static event_t events[N_EVENTS];
static webhook_t *webhooks;
static int n_webhooks;

static int cmp_event_time(const void *a, const void *b)
{
    const event_t *x = a, *y = b;
    long long ta = x->t * 1000 + x->ms, tb = y->t * 1000 + y->ms;
    return ta < tb ? -1 : ta > tb;
}

static json_object *status_json(const event_t *e)
{
    const message_t *m = &messages[e->msg];
    json_object *s = json_object_new_object();
    json_object_object_add(s, "id", json_object_new_string(m->wamid));
    json_object_object_add(s, "status", json_object_new_string(e->status));
    char ts[32];
    if (e->ts_format == 0) {
        snprintf(ts, sizeof ts, "%lld", e->t);
        json_object_object_add(s, "timestamp", json_object_new_string(ts));
    } else if (e->ts_format == 1) {
        json_object_object_add(s, "timestamp", json_object_new_int64(e->t));
    } else {
        json_object_object_add(s, "timestamp", json_object_new_int64(e->t * 1000 + e->ms));
    }
    if (e->has_recipient)
        json_object_object_add(s, "recipient_id", json_object_new_string(m->recipient));
    if (m->with_biz) {
        char biz[48];
        snprintf(biz, sizeof biz, "campaign=c%d%s", e->msg % 10, e->variant ? ";retry" : "");
        json_object_object_add(s, "biz_opaque_callback_data", json_object_new_string(biz));
    }
    if (m->with_conversation && strcmp(e->status, "failed") != 0 && strcmp(e->status, "deleted") != 0) {
        char id[48];
        snprintf(id, sizeof id, "conv-%04d%s", e->msg, e->variant ? "-b" : "");
        json_object *conv = json_object_new_object();
        json_object_object_add(conv, "id", json_object_new_string(id));
        json_object *origin = json_object_new_object();
        json_object_object_add(origin, "type", json_object_new_string(e->msg % 3 ? "utility" : "marketing"));
        json_object_object_add(conv, "origin", origin);
        json_object_object_add(s, "conversation", conv);
        json_object *pricing = json_object_new_object();
        json_object_object_add(pricing, "billable", json_object_new_boolean(!e->variant));
        json_object_object_add(pricing, "pricing_model", json_object_new_string("PMP"));
        json_object_object_add(pricing, "category", json_object_new_string(e->msg % 3 ? "utility" : "marketing"));
        json_object_object_add(s, "pricing", pricing);
    }
    if (strcmp(e->status, "failed") == 0) {
        json_object *err = json_object_new_object();
        json_object_object_add(err, "code", json_object_new_int(e->variant ? 131026 : 131049));
        json_object_object_add(err, "title", json_object_new_string(e->variant ? "Message undeliverable" : "Ecosystem engagement"));
        json_object *data = json_object_new_object();
        char details[64];
        snprintf(details, sizeof details, "failure %d.%d", e->msg, e->variant);
        json_object_object_add(data, "details", json_object_new_string(details));
        json_object_object_add(err, "error_data", data);
        json_object *errors = json_object_new_array();
        json_object_array_add(errors, err);
        json_object_object_add(s, "errors", errors);
    }
    return s;
}

/* The Meta webhook of one group of events (all of one phone_number_id). */
static char *webhook_json(const webhook_t *w)
{
    const message_t *first = &messages[events[w->ev[0]].msg];
    json_object *statuses = json_object_new_array();
    json_object *contacts = json_object_new_array();
    for (int i = 0; i < w->n; i++) {
        const event_t *e = &events[w->ev[i]];
        const message_t *m = &messages[e->msg];
        json_object_array_add(statuses, status_json(e));
        if (m->with_contact && e->has_recipient) {
            json_object *c = json_object_new_object();
            json_object *profile = json_object_new_object();
            char name[48];
            /* The profile name changes half-way through: the latest sighting must win. */
            snprintf(name, sizeof name, "Customer %d%s", e->msg, e->seq >= 1 ? " (new)" : "");
            json_object_object_add(profile, "name", json_object_new_string(name));
            json_object_object_add(c, "profile", profile);
            json_object_object_add(c, "wa_id", json_object_new_string(m->digits));
            json_object_array_add(contacts, c);
        }
    }
    json_object *metadata = json_object_new_object();
    json_object_object_add(metadata, "display_phone_number", json_object_new_string("15550783881"));
    json_object_object_add(metadata, "phone_number_id", json_object_new_string(first->pnid));
    json_object *value = json_object_new_object();
    json_object_object_add(value, "messaging_product", json_object_new_string("whatsapp"));
    json_object_object_add(value, "metadata", metadata);
    if (json_object_array_length(contacts) > 0)
        json_object_object_add(value, "contacts", contacts);
    else
        json_object_put(contacts);
    json_object_object_add(value, "statuses", statuses);
    json_object *change = json_object_new_object();
    json_object_object_add(change, "value", value);
    json_object_object_add(change, "field", json_object_new_string("messages"));
    json_object *changes = json_object_new_array();
    json_object_array_add(changes, change);
    json_object *entry = json_object_new_object();
    json_object_object_add(entry, "id", json_object_new_string("104996335712345"));
    json_object_object_add(entry, "changes", changes);
    json_object *entries = json_object_new_array();
    json_object_array_add(entries, entry);
    json_object *root = json_object_new_object();
    json_object_object_add(root, "object", json_object_new_string("whatsapp_business_account"));
    json_object_object_add(root, "entry", entries);
    char *out = pwt_xstrdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
    json_object_put(root);
    return out;
}

/*
 * Generates the messages, the 1,000 events (sorted chronologically) and the webhooks (in
 * chronological order). Deterministic: the same every time.
 */
static void generate(void)
{
    if (webhooks != NULL)
        return;
    rng_state = 20240301;
    messages = calloc(N_EVENTS, sizeof *messages);
    /* Every second in the window is used at most once: all event times are distinct. */
    enum { WINDOW = 200000 };
    unsigned char *used = calloc(WINDOW, 1);
    int n = 0;
    for (int i = 0; n < N_EVENTS; i++) {
        message_t *m = &messages[i];
        snprintf(m->wamid, sizeof m->wamid, "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQ09OQy%04dAA==", i);
        snprintf(m->digits, sizeof m->digits, "9198%08d", 20000000 + i * 7919);
        snprintf(m->recipient, sizeof m->recipient, "%s%s", i % 7 == 3 ? "+" : "", m->digits);
        m->pnid = i % 3 == 0 ? "106540352242922" : "106540352240001";
        m->with_conversation = i % 2 == 0;
        m->with_biz = i % 4 == 1;
        m->with_contact = i % 5 == 2;
        const char *const *p = patterns[i % N_PATTERNS];
        long long t = BASE_TIME + (long long)i * 17 + rng_below(900);
        for (int k = 0; p[k] != NULL && n < N_EVENTS; k++) {
            if (k > 0)
                t += 1 + rng_below(1800);
            while (used[t - BASE_TIME])
                t++;
            used[t - BASE_TIME] = 1;
            event_t *e = &events[n];
            e->msg = i;
            e->seq = k;
            e->variant = p[k][strlen(p[k]) - 1] == '+';
            e->status = e->variant ? status_name(p[k]) : p[k];
            e->t = t;
            e->ts_format = n % 5 == 1 ? 1 : n % 5 == 3 ? 2 : 0;
            e->ms = e->ts_format == 2 && n % 3 == 0 ? 250 : 0;
            /* Some events lack the recipient; message 29k+2 never has one. */
            e->has_recipient = !(i % 29 == 2 || (i % 11 == 5 && k == 1));
            n++;
        }
        n_messages = i + 1;
    }
    free(used);
    qsort(events, N_EVENTS, sizeof events[0], cmp_event_time);

    /* Webhooks: mostly one status; some carry the next 2-3 chronological events of the same number. */
    webhooks = calloc(N_EVENTS, sizeof *webhooks);
    for (int j = 0; j < N_EVENTS;) {
        webhook_t *w = &webhooks[n_webhooks++];
        int want = rng_below(100) < 20 ? 2 + rng_below(MAX_PER_WEBHOOK - 1) : 1;
        const char *pnid = messages[events[j].msg].pnid;
        w->ev[w->n++] = j++;
        while (w->n < want && j < N_EVENTS && messages[events[j].msg].pnid == pnid)
            w->ev[w->n++] = j++;
        w->payload = webhook_json(w);
    }
}

/* ---- the oracle: what docs/rows.md says the rows must be --------------------------------------- */

typedef struct {
    const char *status;
    long long t;
    int ms;
    const event_t *e; /* the earliest event of this status */
} first_event_t;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int rank(const char *status)
{
    static const char *const order[] = {"played", "read", "delivered", "failed", "sent"};
    for (int i = 0; i < 5; i++)
        if (strcmp(status, order[i]) == 0)
            return i;
    return 5;
}

/*
 * The expected rows, as lines sorted like the oracle queries below sort theirs:
 *   message_logs:  bsp_msg_id|to_phone|keys|sent|delivered|read|failed|played|other|current_status|error code|created_at
 *   status_events: bsp_msg_id|status|occurred_at|recipient_id|phone_number_id|conversation id|errors code|biz
 */
static void oracle(char **logs_out, char **events_out)
{
    char **log_lines = calloc((size_t)n_messages, sizeof *log_lines);
    char **ev_lines = calloc(N_EVENTS, sizeof *ev_lines);
    int n_ev_lines = 0;
    for (int i = 0; i < n_messages; i++) {
        const message_t *m = &messages[i];
        /* The earliest real event per status. */
        first_event_t real[8];
        int n_real = 0;
        int has_recipient = 0;
        long long first_t = 0;
        int first_ms = 0;
        for (int j = 0; j < N_EVENTS; j++) {
            const event_t *e = &events[j];
            if (e->msg != i)
                continue;
            has_recipient |= e->has_recipient;
            if (first_t == 0 || e->t * 1000 + e->ms < first_t * 1000 + first_ms) {
                first_t = e->t;
                first_ms = e->ms;
            }
            int k = 0;
            while (k < n_real && strcmp(real[k].status, e->status) != 0)
                k++;
            if (k == n_real) {
                real[n_real++] = (first_event_t){e->status, e->t, e->ms, e};
            } else if (e->t * 1000 + e->ms < real[k].t * 1000 + real[k].ms) {
                real[k] = (first_event_t){e->status, e->t, e->ms, e};
            }
        }
        /* whatsapp_status: real and implied keys, earliest (whole seconds) per key. */
        const char *names[8];
        long long at[8];
        int n_keys = 0;
        for (int k = 0; k < n_real; k++) {
            const char *implied[4] = {real[k].status, NULL, NULL, NULL};
            if (strcmp(real[k].status, "read") == 0 || strcmp(real[k].status, "played") == 0) {
                implied[1] = "delivered";
                implied[2] = "sent";
            } else if (strcmp(real[k].status, "delivered") == 0) {
                implied[1] = "sent";
            }
            for (int x = 0; implied[x] != NULL; x++) {
                int y = 0;
                while (y < n_keys && strcmp(names[y], implied[x]) != 0)
                    y++;
                if (y == n_keys) {
                    names[n_keys] = implied[x];
                    at[n_keys++] = real[k].t;
                } else if (real[k].t < at[y]) {
                    at[y] = real[k].t;
                }
            }
        }
        const char *current = NULL;
        for (int y = 0; y < n_keys; y++)
            if (current == NULL || rank(names[y]) < rank(current) ||
                (rank(names[y]) == 5 && rank(current) == 5 && strcmp(names[y], current) < 0))
                current = names[y];
        const char *key_sorted[8];
        for (int y = 0; y < n_keys; y++)
            key_sorted[y] = names[y];
        qsort(key_sorted, (size_t)n_keys, sizeof key_sorted[0], cmp_str);

        sbuf_t b = {0};
        sb_printf(&b, "%s|%s%s|", m->wamid, has_recipient ? "+" : "NULL", has_recipient ? m->digits : "");
        for (int y = 0; y < n_keys; y++)
            sb_printf(&b, "%s%s", y ? "," : "", key_sorted[y]);
        static const char *const five[] = {"sent", "delivered", "read", "failed", "played"};
        for (int f = 0; f < 5; f++) {
            int y = 0;
            while (y < n_keys && strcmp(names[y], five[f]) != 0)
                y++;
            char iso[32] = "NULL";
            if (y < n_keys)
                iso_utc(at[y], iso);
            sb_printf(&b, "|%s", iso);
        }
        const char *other = "NULL";
        char other_buf[64];
        for (int y = 0; y < n_keys; y++)
            if (rank(names[y]) == 5) {
                iso_utc(at[y], other_buf);
                other = other_buf;
            }
        const char *err_code = "NULL";
        for (int k = 0; k < n_real; k++)
            if (strcmp(real[k].status, "failed") == 0)
                err_code = real[k].e->variant ? "131026" : "131049";
        char created[48];
        pg_time(first_t, first_ms, created);
        sb_printf(&b, "|%s|%s|%s|%s", other, current, err_code, created);
        log_lines[i] = sb_take(&b);

        for (int k = 0; k < n_real; k++) {
            const event_t *e = real[k].e;
            sbuf_t s = {0};
            char occurred[48], conv[48] = "NULL", biz[48] = "NULL";
            pg_time(e->t, e->ms, occurred);
            if (m->with_conversation && strcmp(e->status, "failed") != 0 && strcmp(e->status, "deleted") != 0)
                snprintf(conv, sizeof conv, "conv-%04d%s", e->msg, e->variant ? "-b" : "");
            if (m->with_biz)
                snprintf(biz, sizeof biz, "campaign=c%d%s", e->msg % 10, e->variant ? ";retry" : "");
            sb_printf(&s, "%s|%s|%s|%s|%s|%s|%s|%s", m->wamid, e->status, occurred,
                      e->has_recipient ? m->recipient : "NULL", m->pnid, conv,
                      strcmp(e->status, "failed") == 0 ? (e->variant ? "131026" : "131049") : "NULL", biz);
            ev_lines[n_ev_lines++] = sb_take(&s);
        }
    }
    qsort(log_lines, (size_t)n_messages, sizeof *log_lines, cmp_str);
    qsort(ev_lines, (size_t)n_ev_lines, sizeof *ev_lines, cmp_str);
    sbuf_t a = {0}, b = {0};
    for (int i = 0; i < n_messages; i++) {
        sb_printf(&a, "%s%s", i ? "\n" : "", log_lines[i]);
        free(log_lines[i]);
    }
    for (int i = 0; i < n_ev_lines; i++) {
        sb_printf(&b, "%s%s", i ? "\n" : "", ev_lines[i]);
        free(ev_lines[i]);
    }
    free(log_lines);
    free(ev_lines);
    *logs_out = sb_take(&a);
    *events_out = sb_take(&b);
}

/* The same shape as the oracle's lines, read from the tables. '|' sorts like the oracle's lines. */
static const char oracle_logs_sql[] =
    "SELECT line FROM (SELECT bsp_msg_id || '|' || coalesce(to_phone, 'NULL') || '|' ||"
    "       (SELECT coalesce(string_agg(k, ',' ORDER BY k COLLATE \"C\"), '') FROM jsonb_object_keys(whatsapp_status) k)"
    "       || '|' || coalesce(whatsapp_status->>'sent', 'NULL') || '|' || coalesce(whatsapp_status->>'delivered', 'NULL')"
    "       || '|' || coalesce(whatsapp_status->>'read', 'NULL') || '|' || coalesce(whatsapp_status->>'failed', 'NULL')"
    "       || '|' || coalesce(whatsapp_status->>'played', 'NULL')"
    "       || '|' || coalesce(whatsapp_status->>'deleted', 'NULL')"
    "       || '|' || coalesce(current_status, 'NULL') || '|' || coalesce(last_error->0->>'code', 'NULL')"
    "       || '|' || created_at::text AS line "
    "FROM message_logs) x ORDER BY line COLLATE \"C\"";

static const char oracle_events_sql[] =
    "SELECT line FROM (SELECT bsp_msg_id || '|' || status || '|' || occurred_at::text || '|' || coalesce(recipient_id, 'NULL')"
    "       || '|' || coalesce(phone_number_id, 'NULL') || '|' || coalesce(conversation->>'id', 'NULL')"
    "       || '|' || coalesce(errors->0->>'code', 'NULL') || '|' || coalesce(biz_opaque_callback_data, 'NULL') AS line "
    "FROM status_events) x ORDER BY line COLLATE \"C\"";

/* ---- the dumps compared between runs ------------------------------------------------------------ */

typedef struct {
    char *message_logs, *status_events, *contacts;
    long long receipts, receipts_stored;
} dump_t;

static dump_t dump_now(void)
{
    dump_t d;
    d.message_logs = pwt_rows("SELECT bsp_msg_id, to_phone, whatsapp_status, current_status, last_error, created_at"
                              " FROM message_logs ORDER BY bsp_msg_id COLLATE \"C\"");
    d.status_events = pwt_rows("SELECT bsp_msg_id, status, occurred_at, recipient_id, phone_number_id, conversation,"
                               " pricing, errors, biz_opaque_callback_data"
                               " FROM status_events ORDER BY bsp_msg_id COLLATE \"C\", status COLLATE \"C\"");
    d.contacts = pwt_rows("SELECT wa_id, profile_name, first_seen_at, last_seen_at FROM contacts ORDER BY wa_id COLLATE \"C\"");
    d.receipts = pwt_scalar_int("SELECT count(*) FROM pubsub_receipts");
    d.receipts_stored = pwt_scalar_int("SELECT count(*) FROM pubsub_receipts WHERE outcome = 'stored'"
                                       " AND subscription = '" SUBSCRIPTION "'");
    return d;
}

static void dump_free(dump_t *d)
{
    free(d->message_logs);
    free(d->status_events);
    free(d->contacts);
    memset(d, 0, sizeof *d);
}

/* Prints the first differing line of two dumps, with its neighbourhood, then fails. */
static void assert_same_text(const char *what, const char *expected, const char *actual, const char *file, int line)
{
    if (strcmp(expected, actual) == 0)
        return;
    const char *a = expected, *b = actual;
    int lineno = 1;
    const char *la = a, *lb = b;
    while (*a && *a == *b) {
        if (*a == '\n') {
            lineno++;
            la = a + 1;
            lb = b + 1;
        }
        a++;
        b++;
    }
    fprintf(stderr, "\n%s differ at line %d:\n  expected: %.*s\n  actual:   %.*s\n", what, lineno,
            (int)strcspn(la, "\n"), la, (int)strcspn(lb, "\n"), lb);
    pwt_fail(file, line, "%s differ (expected %zu bytes, actual %zu bytes)", what, strlen(expected), strlen(actual));
}
#define ASSERT_SAME_TEXT(what, expected, actual) assert_same_text((what), (expected), (actual), __FILE__, __LINE__)

/* ---- sending many pushes at once (libcurl multi) ----------------------------------------------- */

typedef struct {
    int worker;     /* index into the workers array */
    char *body;     /* the wrapped push */
    long status;    /* the answer, filled by send_all */
    char *answer;   /* response body (for failure messages) */
    size_t answer_len;
} push_t;

static size_t collect_answer(char *data, size_t size, size_t nmemb, void *userdata)
{
    push_t *p = userdata;
    size_t n = size * nmemb;
    char *q = pwt_xrealloc(p->answer, p->answer_len + n + 1);
    memcpy(q + p->answer_len, data, n);
    p->answer_len += n;
    q[p->answer_len] = '\0';
    p->answer = q;
    return n;
}

static CURL *push_handle(const pwt_worker_t *w, push_t *p, struct curl_slist *headers)
{
    char url[128];
    snprintf(url, sizeof url, "%s/", w->base_url);
    CURL *c = pwt_http_easy(url, 30000L, headers);
    pwt_http_set_post(c, p->body, strlen(p->body));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect_answer);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, p);
    curl_easy_setopt(c, CURLOPT_PRIVATE, p);
    return c;
}

/*
 * Sends every push to its worker, in list order per worker, with at most per_worker requests
 * in flight at each worker (each on its own connection). Fills status (-1: transport error).
 */
static void send_all(const pwt_worker_t *workers, int n_workers, push_t *pushes, int n, int per_worker)
{
    struct curl_slist *headers = pwt_http_headers(NULL);
    CURLM *multi = curl_multi_init();
    int next[8] = {0}, in_flight[8] = {0}, running = 0;
    for (;;) {
        /* Top every worker up to per_worker requests, taking its pushes in list order. */
        for (int w = 0; w < n_workers; w++) {
            while (in_flight[w] < per_worker) {
                while (next[w] < n && pushes[next[w]].worker != w)
                    next[w]++;
                if (next[w] >= n)
                    break;
                push_t *p = &pushes[next[w]++];
                curl_multi_add_handle(multi, push_handle(&workers[w], p, headers));
                in_flight[w]++;
                running++;
            }
        }
        if (running == 0)
            break;
        int still;
        curl_multi_perform(multi, &still);
        CURL *e;
        CURLcode rc;
        long status;
        while ((e = pwt_http_multi_done(multi, &status, &rc)) != NULL) {
            push_t *p = pwt_http_private(e);
            p->status = status;
            if (rc != CURLE_OK)
                fprintf(stderr, "push to worker %d: %s\n", p->worker, curl_easy_strerror(rc));
            curl_easy_cleanup(e);
            in_flight[p->worker]--;
            running--;
        }
        curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    curl_multi_cleanup(multi);
    curl_slist_free_all(headers);
}

/* Fails unless every push was answered 204, naming the first few that were not. */
static void assert_all_204(const push_t *pushes, int n, const char *file, int line)
{
    int bad = 0;
    for (int i = 0; i < n; i++) {
        if (pushes[i].status == 204)
            continue;
        if (++bad <= 5)
            fprintf(stderr, "push %d (worker %d) answered %ld: %s\n", i, pushes[i].worker, pushes[i].status,
                    pushes[i].answer ? pushes[i].answer : "");
    }
    if (bad > 0)
        pwt_fail(file, line, "%d of %d pushes were not answered 204", bad, n);
}
#define ASSERT_ALL_204(pushes, n) assert_all_204((pushes), (n), __FILE__, __LINE__)

static void pushes_free(push_t *pushes, int n)
{
    for (int i = 0; i < n; i++) {
        free(pushes[i].body);
        free(pushes[i].answer);
    }
    free(pushes);
}

static char *wrap_webhook(const webhook_t *w, const char *message_id)
{
    return pwt_wrap(w->payload, strlen(w->payload), message_id, SUBSCRIPTION, "2024-03-05T10:00:00.123Z");
}

static void start_worker(pwt_worker_t *w)
{
    static const char *const env[] = {"WORKER_THREADS=2", "LOG_LEVEL=info", NULL};
    if (pwt_worker_start(w, env) != 0)
        fail_msg("worker did not start");
}

/* ---- run 1: the reference ----------------------------------------------------------------------- */

static dump_t reference;
static int have_reference;

/* One worker, the webhooks in chronological order, one push at a time. Leaves the tables filled. */
static void ordered_run(void)
{
    generate();
    pwt_truncate_all();
    pwt_worker_t w;
    start_worker(&w);
    double t0 = now_s();
    for (int i = 0; i < n_webhooks; i++) {
        char id[32];
        snprintf(id, sizeof id, "ordered-%05d", i);
        char *body = wrap_webhook(&webhooks[i], id);
        long status = pwt_post(&w, "/", body, strlen(body), NULL, NULL);
        free(body);
        if (status != 204)
            pwt_fail(__FILE__, __LINE__, "ordered push %d answered %ld, expected 204", i, status);
    }
    printf("# run 1: %d events in %d webhooks for %d messages, one worker, in order: %.2f s\n", N_EVENTS, n_webhooks,
           n_messages, now_s() - t0);
    pwt_worker_stop(&w);
}

static void take_reference(void)
{
    if (have_reference)
        return;
    ordered_run();
    reference = dump_now();
    have_reference = 1;
}

/* ---- tests -------------------------------------------------------------------------------------- */

/* Run 1 alone: the rows of one worker fed in order are what docs/rows.md says (the reference is sound). */
static void test_one_worker_in_order_writes_the_rows_the_contract_describes(void **state)
{
    (void)state;
    have_reference = 0;
    dump_free(&reference);
    ordered_run();

    char *want_logs, *want_events;
    oracle(&want_logs, &want_events);
    char *got_logs = pwt_rows(oracle_logs_sql);
    char *got_events = pwt_rows(oracle_events_sql);
    ASSERT_SAME_TEXT("message_logs (oracle)", want_logs, got_logs);
    ASSERT_SAME_TEXT("status_events (oracle)", want_events, got_events);
    assert_int_equal(pwt_scalar_int("SELECT count(*) FROM message_logs"), n_messages);
    assert_int_equal(pwt_scalar_int("SELECT count(*) FROM pubsub_receipts WHERE outcome = 'stored'"), n_webhooks);
    assert_int_equal(pwt_scalar_int("SELECT count(*) FROM dead_letters"), 0);
    printf("# run 1: %lld message_logs, %lld status_events, %lld contacts, %lld receipts\n",
           pwt_scalar_int("SELECT count(*) FROM message_logs"), pwt_scalar_int("SELECT count(*) FROM status_events"),
           pwt_scalar_int("SELECT count(*) FROM contacts"), pwt_scalar_int("SELECT count(*) FROM pubsub_receipts"));
    free(want_logs);
    free(want_events);
    free(got_logs);
    free(got_events);

    reference = dump_now();
    have_reference = 1;
}

/* Run 2: two workers, shuffled, duplicated, concurrent: the same tables as run 1. */
static void test_two_workers_shuffled_and_duplicated_end_identical_to_one_ordered_run(void **state)
{
    (void)state;
    take_reference();
    pwt_truncate_all();

    /* Each webhook once under its own messageId; ~30% again: half redelivered (same messageId), half
     * duplicated upstream (new messageId). Every copy goes to a worker chosen at random. */
    rng_state = 7;
    int cap = 2 * n_webhooks, n = 0, redelivered = 0, duplicated = 0;
    push_t *pushes = calloc((size_t)cap, sizeof *pushes);
    for (int i = 0; i < n_webhooks; i++) {
        char id[32];
        snprintf(id, sizeof id, "shuffled-%05d", i);
        pushes[n++] = (push_t){.worker = rng_below(2), .body = wrap_webhook(&webhooks[i], id)};
        if (rng_below(100) < 30) {
            if (rng_below(2) == 0) {
                redelivered++;
            } else {
                snprintf(id, sizeof id, "shuffled-%05d-dup", i);
                duplicated++;
            }
            pushes[n++] = (push_t){.worker = rng_below(2), .body = wrap_webhook(&webhooks[i], id)};
        }
    }
    for (int i = n - 1; i > 0; i--) { /* Fisher-Yates */
        int j = rng_below(i + 1);
        push_t tmp = pushes[i];
        pushes[i] = pushes[j];
        pushes[j] = tmp;
    }

    pwt_worker_t workers[2];
    start_worker(&workers[0]);
    start_worker(&workers[1]);
    double t0 = now_s();
    send_all(workers, 2, pushes, n, IN_FLIGHT_PER_WORKER);
    double elapsed = now_s() - t0;
    int to_first = 0;
    for (int i = 0; i < n; i++)
        to_first += pushes[i].worker == 0;
    printf("# run 2: %d pushes (%d webhooks, %d redelivered with the same messageId, %d duplicated with a new one),"
           " %d to worker A and %d to worker B, %d in flight each: %.2f s\n",
           n, n_webhooks, redelivered, duplicated, to_first, n - to_first, IN_FLIGHT_PER_WORKER, elapsed);
    ASSERT_ALL_204(pushes, n);
    pwt_worker_stop(&workers[0]);
    pwt_worker_stop(&workers[1]);

    dump_t got = dump_now();
    printf("# run 2: %lld receipts (expected %d distinct messageIds)\n", got.receipts, n_webhooks + duplicated);
    ASSERT_SAME_TEXT("message_logs", reference.message_logs, got.message_logs);
    ASSERT_SAME_TEXT("status_events", reference.status_events, got.status_events);
    ASSERT_SAME_TEXT("contacts", reference.contacts, got.contacts);
    assert_int_equal(got.receipts, n_webhooks + duplicated);
    assert_int_equal(got.receipts_stored, n_webhooks + duplicated);
    assert_int_equal(pwt_scalar_int("SELECT count(*) FROM dead_letters"), 0);
    /* both workers wrote the roll-ups at once (each its own slots): they still add up */
    pwt_assert_rollups_consistent();
    dump_free(&got);
    pushes_free(pushes, n);
}

/* The same (subscription, messageId) arriving at both workers at the same moment: one receipt, one set of rows. */
static void test_same_message_id_at_both_workers_at_once_gives_one_receipt(void **state)
{
    (void)state;
    generate();
    pwt_truncate_all();
    pwt_worker_t workers[2];
    start_worker(&workers[0]);
    start_worker(&workers[1]);

    /* 64 pushes, each sent to both workers in the same instant (both copies in flight together). */
    enum { N = 64 };
    push_t *pushes = calloc(2 * N, sizeof *pushes);
    for (int i = 0; i < N; i++) {
        char id[32];
        snprintf(id, sizeof id, "both-%03d", i);
        pushes[2 * i] = (push_t){.worker = 0, .body = wrap_webhook(&webhooks[i], id)};
        pushes[2 * i + 1] = (push_t){.worker = 1, .body = wrap_webhook(&webhooks[i], id)};
    }
    send_all(workers, 2, pushes, 2 * N, N);
    ASSERT_ALL_204(pushes, 2 * N);
    pwt_worker_stop(&workers[0]);
    pwt_worker_stop(&workers[1]);

    sbuf_t want = {0};
    int n_statuses = 0;
    for (int i = 0; i < N; i++) {
        sb_printf(&want, "%s" SUBSCRIPTION "|both-%03d|2024-03-05 10:00:00.123+00|stored", i ? "\n" : "", i);
        n_statuses += webhooks[i].n;
    }
    pwt_assert_rows("SELECT subscription, message_id, publish_time, outcome FROM pubsub_receipts"
                    " ORDER BY message_id COLLATE \"C\"",
                    want.p);
    /* Every (message, status) of those webhooks once. */
    const event_t *pairs[N * MAX_PER_WEBHOOK];
    long long distinct_pairs = 0;
    for (int i = 0; i < N; i++)
        for (int k = 0; k < webhooks[i].n; k++) {
            const event_t *e = &events[webhooks[i].ev[k]];
            int seen = 0;
            for (long long j = 0; j < distinct_pairs && !seen; j++)
                seen = pairs[j]->msg == e->msg && strcmp(pairs[j]->status, e->status) == 0;
            if (!seen)
                pairs[distinct_pairs++] = e;
        }
    assert_int_equal(pwt_scalar_int("SELECT count(*) FROM status_events"), distinct_pairs);
    assert_int_equal(pwt_scalar_int("SELECT count(*) FROM dead_letters"), 0);
    printf("# %d messageIds sent to both workers at once (%d statuses): %lld receipts, %lld status_events\n", N,
           n_statuses, pwt_scalar_int("SELECT count(*) FROM pubsub_receipts"),
           pwt_scalar_int("SELECT count(*) FROM status_events"));
    free(want.p);
    pushes_free(pushes, 2 * N);
}

/* Connections the workers of this test database hold (application_name pushworker). */
static long long worker_connections(void)
{
    return pwt_scalar_int("SELECT count(*) FROM pg_stat_activity"
                          " WHERE application_name = 'pushworker' AND datname = current_database()");
}

/*
 * Four event loops share DB_CONNECTIONS connections (not four sets): the other loops pass their
 * pushes to the first loop's queue and get the answers back. 256 pushes over 64 client
 * connections, spread over the loops by the kernel: all committed once, on that many connections.
 */
static void test_four_loops_share_the_database_connections(void **state)
{
    (void)state;
    generate();
    for (int conns = 1; conns <= 2; conns++) {
        pwt_truncate_all();
        char conns_env[32];
        snprintf(conns_env, sizeof conns_env, "DB_CONNECTIONS=%d", conns);
        const char *const env[] = {"WORKER_THREADS=4", conns_env, "LOG_LEVEL=info", NULL};
        pwt_worker_t w;
        if (pwt_worker_start(&w, env) != 0)
            fail_msg("worker did not start");
        /* /readyz answers once one connection is ready; the others may still be connecting. */
        for (int i = 0; i < 100 && getenv("PW_TEST_POOLER_URL") == NULL && worker_connections() < conns; i++)
            usleep(20000);
        enum { N = 256 };
        push_t *pushes = calloc(N, sizeof *pushes);
        for (int i = 0; i < N; i++) {
            char id[32];
            snprintf(id, sizeof id, "loops-%d-%03d", conns, i);
            pushes[i] = (push_t){.worker = 0, .body = wrap_webhook(&webhooks[i % n_webhooks], id)};
        }
        send_all(&w, 1, pushes, N, 64);
        ASSERT_ALL_204(pushes, N);
        const char *pooler = getenv("PW_TEST_POOLER_URL");
        if (pooler == NULL || *pooler == '\0')
            assert_int_equal(worker_connections(), conns);
        else /* PostgreSQL sees the pooler's connections, not the worker's */
            printf("# via PgBouncer: connections not counted\n");
        pwt_worker_stop(&w);
        assert_int_equal(pwt_scalar_int("SELECT count(*) FROM pubsub_receipts WHERE outcome = 'stored'"), N);
        assert_int_equal(pwt_scalar_int("SELECT count(DISTINCT message_id) FROM pubsub_receipts"), N);
        assert_int_equal(pwt_scalar_int("SELECT count(*) FROM dead_letters"), 0);
        printf("# WORKER_THREADS=4 DB_CONNECTIONS=%d: %d pushes over 64 client connections, all 204, %d receipts\n", conns,
               N, N);
        pushes_free(pushes, N);
    }
}

/* ---- group setup -------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    return pwt_suite_start("concurrency", NULL, NULL);
}

static int group_teardown(void **state)
{
    pwt_teardown_db(state);
    dump_free(&reference);
    for (int i = 0; i < n_webhooks; i++)
        free(webhooks[i].payload);
    free(webhooks);
    free(messages);
    return 0;
}

static void exec_on(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
}

/*
 * Two transactions writing message_logs at once from backends whose pids agree modulo 16 (the
 * roll-up slot 0008 gave a connection: two instances of five share one every other deployment):
 * the second must not wait for the first's commit on a roll-up row (0008's slots made it wait,
 * here until its lock_timeout). Of 17 connections two always agree modulo 16. Since 0014 a writer
 * only appends to message_rollup_pending, and the fold puts the rows into a slot.
 */
static void test_writers_whose_pids_agree_modulo_16_do_not_wait_on_each_other(void **state)
{
    (void)state;
    PGconn *c[17];
    int n = 0, a = -1, b = -1;
    while (n < 17 && b < 0) {
        c[n] = PQconnectdb(pwt_db_url());
        if (PQstatus(c[n]) != CONNECTION_OK)
            fail_msg("cannot connect: %s", PQerrorMessage(c[n]));
        for (int j = 0; j < n; j++)
            if (PQbackendPID(c[j]) % 16 == PQbackendPID(c[n]) % 16) {
                a = j;
                b = n;
            }
        n++;
    }
    assert_true(b >= 0);
    exec_on(c[a], "BEGIN");
    exec_on(c[a], "INSERT INTO message_logs (bsp_msg_id, whatsapp_status, created_at) VALUES ('wamid.SLOT.A',"
                  " '{\"sent\": \"2024-04-01T10:00:00Z\", \"delivered\": \"2024-04-01T10:00:03Z\"}', '2024-04-01 10:00:00+00')");
    exec_on(c[b], "BEGIN");
    exec_on(c[b], "SET LOCAL lock_timeout = '2s'");
    PGresult *r = PQexec(c[b], "INSERT INTO message_logs (bsp_msg_id, whatsapp_status, created_at) VALUES ('wamid.SLOT.B',"
                               " '{\"sent\": \"2024-04-01T11:00:00Z\", \"delivered\": \"2024-04-01T11:00:03Z\"}',"
                               " '2024-04-01 11:00:00+00')");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("the second writer (pids %d and %d) waited: %s", PQbackendPID(c[a]), PQbackendPID(c[b]),
                 PQresultErrorMessage(r));
    PQclear(r);
    exec_on(c[b], "COMMIT");
    exec_on(c[a], "COMMIT");
    for (int i = 0; i < n; i++)
        PQfinish(c[i]);
    /* Since 0014 neither wrote a roll-up row: both messages are pending (slot -1 of the views), then
       one fold adds them to one slot. */
    pwt_assert_rows("SELECT slot, messages, delivered FROM message_status_rollup WHERE day = '2024-04-01' AND messages > 0",
                    "-1|2|2");
    pwt_assert_rollups_consistent();
    pwt_assert_rows("SELECT pw_rollup_fold() >= 2", "t"); /* +1 for each insert, and other tests' rows still pending */
    pwt_assert_rows("SELECT count(*), sum(messages), sum(delivered) FROM message_status_rollup WHERE day = '2024-04-01' AND messages > 0",
                    "1|2|2");
    pwt_assert_rows("SELECT n, total FROM message_latency_rollup_folded WHERE day = '2024-04-01' AND kind = 1 AND n > 0",
                    "2|6.000000");
    pwt_assert_rows("SELECT count(*) FROM message_rollup_pending", "0");
    pwt_assert_rollups_consistent();
    pwt_exec("DELETE FROM message_logs WHERE bsp_msg_id LIKE 'wamid.SLOT.%'");
    pwt_assert_rows("SELECT count(*) FROM message_status_daily WHERE day = '2024-04-01'", "0");
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_worker_in_order_writes_the_rows_the_contract_describes),
        cmocka_unit_test(test_two_workers_shuffled_and_duplicated_end_identical_to_one_ordered_run),
        cmocka_unit_test(test_same_message_id_at_both_workers_at_once_gives_one_receipt),
        cmocka_unit_test(test_four_loops_share_the_database_connections),
        cmocka_unit_test(test_writers_whose_pids_agree_modulo_16_do_not_wait_on_each_other),
    };
    return cmocka_run_group_tests_name("concurrency", tests, group_setup, group_teardown);
}
