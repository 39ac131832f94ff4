/* Decodes a push (envelope -> base64 -> webhook) and routes it: rows for the handlers, or a dead letter. */
#include "worker/dispatch.h"

#include <assert.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/jscan.h"
#include "worker/handlers.h"
#include "worker/util.h"

static void pw_ladder_free(pw_push_t *p);

static void set_dead(pw_push_t *p, const char *step, const char *why)
{
    free(p->dead_reason);
    size_t n = strlen(step) + strlen(why) + 3;
    p->dead_reason = pw_xmalloc(n);
    snprintf(p->dead_reason, n, "%s: %s", step, why);
}

/* An id PostgreSQL can store as text and a person can read: valid UTF-8, no NUL, not empty. */
static int usable_id(pw_str_t s)
{
    return s.base != NULL && s.len > 0 && memchr(s.base, '\0', s.len) == NULL && pw_json_utf8_invalid_at(s.base, s.len) == s.len;
}

/*
 * An envelope that failed to decode (bad base64, a member of the wrong type...) may still name its
 * subscription and message id: recover them, so the dead letter is kept once and a redelivery
 * is recognised.
 */
static void salvage_ids(pw_push_t *p, const char *body, size_t len)
{
    pw_salvaged_ids_t ids;
    if (pw_envelope_salvage_ids(body, len, &ids) != 0)
        return;
    p->salvage = ids.copies;
    /* Recovered from a body that failed: keep only ids the database can store. */
    p->subscription = usable_id(ids.subscription) ? ids.subscription : PW_STR_NULL;
    p->message_id = usable_id(ids.message_id) ? ids.message_id : PW_STR_NULL;
    pw_str_t t = ids.publish_time;
    if (t.base != NULL && pw_time_parse_rfc3339(t.base, t.len, &p->publish_time, NULL, 0) != 0)
        p->publish_time = 0;
}

/* Keeps the unwrapped push's metadata headers (copied: the request does not outlive the push). */
static void salvage_headers(pw_push_t *p, const pw_unwrapped_meta_t *meta)
{
    if (meta == NULL)
        return;
    size_t n = (meta->subscription.base ? meta->subscription.len : 0) + (meta->message_id.base ? meta->message_id.len : 0);
    char *q = p->id_copies = pw_xmalloc(n + 1);
    if (usable_id(meta->subscription)) {
        memcpy(q, meta->subscription.base, meta->subscription.len);
        p->subscription = pw_str(q, meta->subscription.len);
        q += meta->subscription.len;
    }
    if (usable_id(meta->message_id)) {
        memcpy(q, meta->message_id.base, meta->message_id.len);
        p->message_id = pw_str(q, meta->message_id.len);
    }
}

void pw_push_decode(pw_push_t *p, const char *body, size_t len, const pw_unwrapped_meta_t *meta)
{
    char err[256] = "";
    p->raw = pw_xmalloc(len + 1);
    if (len > 0)
        memcpy(p->raw, body, len);
    p->raw_len = len;
    p->outcome = PW_OUTCOME_DEAD_LETTER;

    /* The envelope's strings point into p->raw, which lives as long as the push. */
    body = (const char *)p->raw;
    int rc;
    if (pw_envelope_is_wrapped(body, len))
        rc = pw_envelope_parse_wrapped(body, len, &p->env, err, sizeof err);
    else
        rc = pw_envelope_from_unwrapped(body, len, meta, &p->env, err, sizeof err);
    if (rc != 0) {
        int wrapped = pw_envelope_is_wrapped(body, len);
        memset(&p->env, 0, sizeof p->env);
        set_dead(p, "envelope", err[0] != '\0' ? err : pw_strerror(rc));
        if (wrapped)
            salvage_ids(p, body, len);
        else
            salvage_headers(p, meta);
        return;
    }
    p->subscription = p->env.subscription;
    p->message_id = p->env.message_id;
    p->publish_time = p->env.publish_time;
    /* An id that cannot be stored as text would make every write of this push fail, forever. */
    if ((p->subscription.base != NULL && !usable_id(p->subscription)) || (p->message_id.base != NULL && !usable_id(p->message_id))) {
        p->subscription = usable_id(p->subscription) ? p->subscription : PW_STR_NULL;
        p->message_id = usable_id(p->message_id) ? p->message_id : PW_STR_NULL;
        set_dead(p, "envelope", "subscription or message id is not valid UTF-8 text");
        return;
    }
    if (p->env.data == NULL || p->env.data_len == 0) {
        set_dead(p, "payload", "empty: the message has no data");
        return;
    }
    rc = pw_webhook_parse((const char *)p->env.data, p->env.data_len, &p->wh, err, sizeof err);
    if (rc != 0) {
        memset(&p->wh, 0, sizeof p->wh);
        set_dead(p, "payload", err[0] != '\0' ? err : pw_strerror(rc));
        return;
    }
    if (p->wh.n_rejected > 0) {
        /* Keep the good items and the whole push, so nothing is lost. */
        char step[48];
        snprintf(step, sizeof step, "rejected %zu item(s)", p->wh.n_rejected);
        set_dead(p, step, p->wh.reject_reason);
    } else if (p->wh.n_lossy > 0) {
        /* PostgreSQL text and jsonb cannot hold NUL or half a surrogate pair: the rows get U+FFFD
           in their place (proto/webhook.c, worker/cols.c), and the push as it came is kept too. */
        set_dead(p, "payload",
                 "\\u0000 (NUL) or an unpaired surrogate in a string: stored with U+FFFD in its place; the original is kept here");
    }
    p->outcome = p->wh.n_statuses + p->wh.n_inbound + p->wh.n_contacts > 0 ? PW_OUTCOME_STORED : PW_OUTCOME_IGNORED;
}

void pw_push_make_dead_letter(pw_push_t *p, const char *reason)
{
    pw_ladder_free(p);
    pw_webhook_dispose(&p->wh);
    memset(&p->wh, 0, sizeof p->wh);
    set_dead(p, "database", reason);
    p->outcome = PW_OUTCOME_DEAD_LETTER;
}

/* ---- the ladder for a push PostgreSQL refuses ---- */

/* Trials at most per push: a push whose every item is refused costs 2n - 1 of them, so beyond
   this the items not yet isolated are counted as refused (bounded time, bounded transactions). */
#define PW_LADDER_MAX_TRIALS 64
/* The most refused items a reason names one by one. */
#define PW_LADDER_NAMED_ITEMS 8

typedef enum { RUNG_SEARCH = 0, RUNG_WITHOUT_REFUSED, RUNG_FIXED_REASON, RUNG_RAW_ONLY } rung_t;

struct pw_ladder {
    rung_t rung;
    size_t n;               /* items */
    unsigned char *refused; /* per item: 1 once a trial of it alone was refused (or the trials ran out) */
    size_t *todo;           /* ranges [lo, hi) still to try, as pairs */
    size_t n_todo, cap_todo;
    size_t lo, hi;          /* the range being tried */
    int trials;
    char sqlstate[6];       /* the first refusal's (only [0-9A-Z]) */
    char message[200];      /* and its message (valid UTF-8) */
};

static void pw_ladder_free(pw_push_t *p)
{
    if (p->ladder != NULL) {
        free(p->ladder->refused);
        free(p->ladder->todo);
        free(p->ladder);
        p->ladder = NULL;
    }
    free(p->skip);
    p->skip = NULL;
    p->skip_dead_letter = 0;
    p->dry_run = 0;
}

static void todo_push(pw_ladder_t *l, size_t lo, size_t hi)
{
    if (l->n_todo + 2 > l->cap_todo) {
        l->cap_todo = l->cap_todo == 0 ? 16 : l->cap_todo * 2;
        l->todo = pw_xrealloc(l->todo, l->cap_todo * sizeof *l->todo);
    }
    l->todo[l->n_todo++] = lo;
    l->todo[l->n_todo++] = hi;
}

static const char *item_name(const pw_push_t *p, size_t at, size_t *index)
{
    if (at < p->wh.n_statuses) {
        *index = at;
        return "statuses";
    }
    at -= p->wh.n_statuses;
    if (at < p->wh.n_inbound) {
        *index = at;
        return "messages";
    }
    *index = at - p->wh.n_inbound;
    return "contacts";
}

/* The reason of rung 2: the error (SQLSTATE, the server's message, valid UTF-8) and which items it refused. */
static void set_refused_reason(pw_push_t *p, size_t n_refused)
{
    const pw_ladder_t *l = p->ladder;
    pw_buf_t b = {0};
    size_t named = 0;
    pw_buf_appendf(&b, "database: %s: %s (refused ", l->sqlstate, l->message);
    for (size_t i = 0; i < l->n && named < PW_LADDER_NAMED_ITEMS; i++) {
        if (!l->refused[i])
            continue;
        size_t index;
        const char *what = item_name(p, i, &index);
        pw_buf_appendf(&b, "%s%s[%zu]", named > 0 ? ", " : "", what, index);
        named++;
    }
    if (n_refused > named)
        pw_buf_appendf(&b, " and %zu more", n_refused - named);
    pw_buf_appendf(&b, " of %zu item(s)%s)", l->n, n_refused < l->n ? "; the others are stored" : "");
    if (p->dead_reason != NULL)
        pw_buf_appendf(&b, "; %s", p->dead_reason);
    free(p->dead_reason);
    p->dead_reason = pw_xstrndup(b.base, b.len);
    pw_buf_dispose(&b);
}

/* The reason of rungs 3 and 4: ASCII, fixed but for the SQLSTATE (which is [0-9A-Z]). */
static void set_fixed_reason(pw_push_t *p)
{
    char why[128];
    snprintf(why, sizeof why, "database refused this push (SQLSTATE %s); its raw body is kept", p->ladder->sqlstate);
    free(p->dead_reason);
    p->dead_reason = pw_xstrndup(why, strlen(why));
}

/* Sets skip to leave out every item outside [lo, hi), and those refused (when refused is not NULL). */
static void skip_all_but(pw_push_t *p, size_t lo, size_t hi, const unsigned char *refused)
{
    for (size_t i = 0; i < p->ladder->n; i++)
        p->skip[i] = i < lo || i >= hi || (refused != NULL && refused[i]);
}

/* Rung 1: the next trial, or rung 2 once every range is tried. */
static int next_trial(pw_push_t *p)
{
    pw_ladder_t *l = p->ladder;
    if (l->n_todo > 0 && l->trials >= PW_LADDER_MAX_TRIALS) {
        for (size_t k = 0; k < l->n_todo; k += 2)
            for (size_t i = l->todo[k]; i < l->todo[k + 1]; i++)
                l->refused[i] = 1;
        l->n_todo = 0;
    }
    if (l->n_todo > 0) {
        l->hi = l->todo[--l->n_todo];
        l->lo = l->todo[--l->n_todo];
        l->trials++;
        skip_all_but(p, l->lo, l->hi, NULL);
        p->skip_dead_letter = 1;
        p->dry_run = 1;
        return 1;
    }
    p->skip_dead_letter = 0;
    p->dry_run = 0;
    size_t n_refused = 0;
    for (size_t i = 0; i < l->n; i++)
        n_refused += l->refused[i];
    if (n_refused == 0) {
        /* Each item is accepted on its own: the dead letter, or items only together, were refused. */
        l->rung = RUNG_FIXED_REASON;
        skip_all_but(p, 0, l->n, NULL);
        set_fixed_reason(p);
        return 1;
    }
    l->rung = RUNG_WITHOUT_REFUSED;
    skip_all_but(p, 0, l->n, l->refused);
    set_refused_reason(p, n_refused);
    p->outcome = n_refused < l->n ? PW_OUTCOME_STORED : PW_OUTCOME_DEAD_LETTER;
    return 1;
}

int pw_push_next_rung(pw_push_t *p, int accepted, const char *sqlstate, const char *message)
{
    pw_ladder_t *l = p->ladder;
    if (l == NULL) {
        /* The push as it is was refused. */
        l = p->ladder = pw_xcalloc(1, sizeof *l);
        l->n = p->wh.n_statuses + p->wh.n_inbound + p->wh.n_contacts;
        l->refused = pw_xcalloc(l->n + 1, 1);
        p->skip = pw_xcalloc(l->n + 1, 1);
        size_t k = 0;
        for (const char *q = sqlstate != NULL ? sqlstate : ""; *q != '\0' && k < 5; q++)
            l->sqlstate[k++] = (*q >= '0' && *q <= '9') || (*q >= 'A' && *q <= 'Z') ? *q : '?';
        l->sqlstate[k] = '\0';
        pw_utf8_copy(l->message, sizeof l->message, message != NULL ? message : "");
        l->rung = RUNG_SEARCH;
        if (l->n > 0)
            todo_push(l, 0, l->n);
        return next_trial(p);
    }
    switch (l->rung) {
    case RUNG_SEARCH:
        if (!accepted) {
            if (l->hi - l->lo == 1) {
                l->refused[l->lo] = 1;
            } else {
                size_t mid = l->lo + (l->hi - l->lo) / 2;
                todo_push(l, mid, l->hi);
                todo_push(l, l->lo, mid);
            }
        }
        return next_trial(p);
    case RUNG_WITHOUT_REFUSED:
        if (accepted)
            return 0; /* not a trial: the executor answers it; never here */
        l->rung = RUNG_FIXED_REASON;
        set_fixed_reason(p);
        return 1;
    case RUNG_FIXED_REASON:
        if (accepted)
            return 0;
        l->rung = RUNG_RAW_ONLY;
        skip_all_but(p, 0, 0, NULL);
        p->outcome = PW_OUTCOME_DEAD_LETTER;
        return 1;
    default:
        return 0;
    }
}

void pw_push_dispose(pw_push_t *p)
{
    pw_ladder_free(p);
    pw_webhook_dispose(&p->wh);
    pw_envelope_dispose(&p->env);
    free(p->salvage);
    p->salvage = NULL;
    free(p->dead_reason);
    free(p->raw);
    p->dead_reason = NULL;
    p->raw = NULL;
    free(p->id_copies);
    p->id_copies = NULL;
}

static const char *const outcome_names[] = {"stored", "ignored", "dead_letter"};

/*
 * A group of pushes is written with ONE statement (one round trip, one plan, one executor
 * start), whose WITH list holds every section:
 *   rc   the receipts; RETURNING gives the pushes new to this transaction, and only their rows
 *        are written (PW_SQL_FROM_NEW_PUSH), so a redelivered push changes nothing;
 *   the status section (status_events, message_logs), the inbound section (inbound_messages),
 *   the contacts section, and dl, the dead letters (kept once per push);
 * and the final SELECT announces each inserted inbound message with NOTIFY, delivered at COMMIT,
 * and names the pushes whose receipts were inserted: one per receipt, the first in the group, so
 * two copies of one message in one group are one new push and one redelivery.
 * Sections with no rows get empty arrays and cost next to nothing.
 */
static const char receipts_ctes[] = "rc AS ("
                                    " INSERT INTO pubsub_receipts (subscription, message_id, publish_time, outcome)"
                                    " SELECT s, m, p, o FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[])"
                                    "   AS u(s, m, p, o)"
                                    " ON CONFLICT DO NOTHING"
                                    " RETURNING subscription, message_id)";

static void receipts_append(pw_cols_t *c, int base, const pw_push_t *p)
{
    if (p->message_id.base == NULL)
        return; /* an unwrapped push without metadata has no identity to record */
    pw_cols_str(c, base + 0, pw_push_receipt_sub(p));
    pw_cols_str(c, base + 1, p->message_id);
    pw_cols_time(c, base + 2, p->publish_time);
    pw_cols_cstr(c, base + 3, outcome_names[p->outcome]);
    char index[16];
    snprintf(index, sizeof index, "%d", p->batch_index);
    pw_cols_cstr(c, base + 4, index);
    pw_cols_end_row(c);
}

static const char dead_ctes[] = "dl AS ("
                                " INSERT INTO dead_letters (subscription, message_id, reason, body)"
                                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[])"
                                /* the key of migrations/0004: a push without a message id is known by its body */
                                " ON CONFLICT ((coalesce(subscription, '')), (coalesce(message_id, '')),"
                                "  (CASE WHEN message_id IS NULL THEN sha256(body) ELSE '\\x'::bytea END)) DO NOTHING"
                                " RETURNING 1)";

static void dead_append(pw_cols_t *c, int base, const pw_push_t *p)
{
    if (p->dead_reason == NULL || p->skip_dead_letter)
        return;
    pw_cols_str(c, base + 0, p->subscription);
    pw_cols_str(c, base + 1, p->message_id);
    pw_cols_cstr(c, base + 2, p->dead_reason);
    pw_cols_bytea(c, base + 3, p->raw, p->raw_len);
    pw_cols_end_row(c);
}

/* The fifth array ($5, read by the final SELECT) is each receipt's push's place in the group. */
static const pw_section_t receipts_section = {"receipts", receipts_ctes, 5, receipts_append};
static const pw_section_t dead_section = {"dead_letters", dead_ctes, 4, dead_append};

/* Receipts first: the others read "rc". */
static const pw_section_t *const sections[] = {&receipts_section, &pw_status_section, &pw_inbound_section,
                                               &pw_contacts_section, &dead_section};
#define N_SECTIONS (sizeof sections / sizeof sections[0])

static const char final_select[] =
    " SELECT (SELECT count(pg_notify('" PW_INBOUND_CHANNEL "', json_build_object('wa_msg_id', wa_msg_id,"
    " 'phone_number_id', phone_number_id, 'msg_type', msg_type,"
    " 'sent_at', to_char(sent_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))::text)) FROM ins),"
    " (SELECT string_agg(n.i::text, ',' ORDER BY n.i) FROM (SELECT min(r.i) AS i"
    "  FROM unnest($1::text[], $2::text[], $5::int[]) AS r(s, m, i)"
    "  JOIN rc ON rc.subscription = r.s AND rc.message_id = r.m GROUP BY r.s, r.m) AS n)";

/* Appends a section's SQL with its parameters $k renumbered to $(k + base). */
static void append_renumbered(pw_buf_t *b, const char *sql, int base)
{
    for (const char *q = sql; *q != '\0';) {
        if (q[0] == '$' && q[1] >= '0' && q[1] <= '9') {
            char *end;
            long k = strtol(q + 1, &end, 10);
            pw_buf_appendf(b, "$%ld", k + base);
            q = end;
        } else {
            pw_buf_appendc(b, *q++);
        }
    }
}

static void batch_append(pw_cols_t *c, const pw_push_t *p)
{
    int base = 0;
    for (size_t i = 0; i < N_SECTIONS; i++) {
        size_t before = c->nrows;
        sections[i]->append(c, base, p);
        c->nrows = before; /* rows are counted per push below, not per section */
        base += sections[i]->ncols;
    }
    c->nrows++;
}

static pw_stmt_t batch_stmt;
static pw_buf_t batch_sql;

static void build_batch_stmt(void)
{
    int base = 0;
    pw_buf_append(&batch_sql, "WITH ", 5);
    for (size_t i = 0; i < N_SECTIONS; i++) {
        if (i > 0)
            pw_buf_append(&batch_sql, ", ", 2);
        append_renumbered(&batch_sql, sections[i]->ctes, base);
        base += sections[i]->ncols;
    }
    pw_buf_append(&batch_sql, final_select, sizeof final_select - 1);
    assert(base <= PW_COLS_MAX);
    batch_stmt = (pw_stmt_t){"pw_batch", batch_sql.base, base, batch_append};
}

const pw_stmt_t *pw_dispatch_statement(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, build_batch_stmt);
    return &batch_stmt;
}
