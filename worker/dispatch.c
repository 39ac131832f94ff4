/* Dispatch: decodes a push, has the handlers encode its rows on its own loop, submits them to the executor, and decides what became of it. */
#include "worker/dispatch.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/db.h"
#include "worker/handlers.h"
#include "worker/log.h"
#include "worker/util.h"

static void pw_ladder_free(pw_push_t *p);

static void set_dead(pw_push_t *p, const char *step, const char *why)
{
    free(p->dead_reason);
    size_t n = strlen(step) + strlen(why) + 3;
    p->dead_reason = pw_xmalloc(n);
    snprintf(p->dead_reason, n, "%s: %s", step, why);
}

/*
 * An envelope that failed to decode (bad base64, a member of the wrong type...) may still name its
 * subscription and message id: recover them (proto/pubsub.c), so the dead letter is kept once
 * and a redelivery is recognised.
 */
static void salvage_ids(pw_push_t *p, const char *body, size_t len)
{
    pw_salvaged_ids_t ids;
    if (pw_envelope_salvage_ids(body, len, &ids) != 0)
        return;
    p->id_copies = ids.copies;
    /* Recovered from a body that failed: keep only ids the database can store. */
    p->subscription = pw_envelope_id_usable(ids.subscription) ? ids.subscription : PW_STR_NULL;
    p->message_id = pw_envelope_id_usable(ids.message_id) ? ids.message_id : PW_STR_NULL;
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
    if (meta->subscription.base != NULL && pw_envelope_id_usable(meta->subscription)) {
        memcpy(q, meta->subscription.base, meta->subscription.len);
        p->subscription = pw_str(q, meta->subscription.len);
        q += meta->subscription.len;
    }
    if (meta->message_id.base != NULL && pw_envelope_id_usable(meta->message_id)) {
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
    if ((p->subscription.base != NULL && !pw_envelope_id_usable(p->subscription)) ||
        (p->message_id.base != NULL && !pw_envelope_id_usable(p->message_id))) {
        p->subscription = pw_envelope_id_usable(p->subscription) ? p->subscription : PW_STR_NULL;
        p->message_id = pw_envelope_id_usable(p->message_id) ? p->message_id : PW_STR_NULL;
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
    p->trial = 0;
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
        p->trial = 1;
        return 1;
    }
    p->skip_dead_letter = 0;
    p->trial = 0;
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
    free(p->dead_reason);
    p->dead_reason = NULL;
    free(p->raw);
    p->raw = NULL;
    free(p->id_copies);
    p->id_copies = NULL;
    free(p->write);
    p->write = NULL;
}

/* ---- writing: encode on the push's loop, submit, decide ---- */

struct pw_dispatch {
    pw_db_t *db;
};

struct pw_dispatch_loop {
    pw_dispatch_t *d;
    pw_db_port_t *port;
    pw_cols_t cols; /* reused for every push of the loop */
    pw_buf_t key;
};

/* A push's rows as the executor takes them: the job, then its fragments and its receipt key in one block. */
struct pw_push_write {
    pw_db_job_t job;
    pw_push_t *push;
    uint32_t ends[PW_DB_COLS_MAX];
    size_t cap; /* bytes of data[] */
    char data[];
};

static pw_db_stmt_t statement;

static void build_statement(void)
{
    int ncols;
    const char *sql = pw_handlers_sql(&ncols);
    const int *ends;
    int nparts = pw_handlers_sections(&ends);
    /* A group runs the statement without the sections it has no rows for (see worker/handlers.c). */
    statement = (pw_db_stmt_t){.name = PW_HANDLERS_STATEMENT,
                               .sql = sql,
                               .ncols = ncols,
                               .check_sql = PW_HANDLERS_CHECK_SQL,
                               .elem_types = pw_handlers_types(),
                               .nparts = nparts,
                               .part_end = ends,
                               .keep = PW_HANDLERS_KEEP,
                               .variant = pw_handlers_variant_sql,
                               .warm = pw_handlers_warm_variants(),
                               .after_sql = PW_HANDLERS_AFTER_SQL};
}

const struct pw_db_stmt *pw_dispatch_statement(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, build_statement);
    return &statement;
}

pw_dispatch_t *pw_dispatch_new(struct pw_db *db)
{
    pw_dispatch_t *d = pw_xcalloc(1, sizeof *d);
    d->db = db;
    return d;
}

void pw_dispatch_free(pw_dispatch_t *d)
{
    free(d);
}

pw_dispatch_loop_t *pw_dispatch_loop_new(pw_dispatch_t *d, h2o_context_t *ctx)
{
    pw_dispatch_loop_t *dl = pw_xcalloc(1, sizeof *dl);
    dl->d = d;
    dl->port = pw_db_port_new(d->db, ctx);
    return dl;
}

void pw_dispatch_loop_free(pw_dispatch_loop_t *dl)
{
    if (dl == NULL)
        return;
    pw_db_port_free(dl->port);
    pw_cols_dispose(&dl->cols);
    pw_buf_dispose(&dl->key);
    free(dl);
}

int pw_dispatch_ready(const pw_dispatch_t *d)
{
    return pw_db_ready(d->db);
}

void pw_dispatch_drain(pw_dispatch_t *d, double deadline_ms)
{
    pw_db_drain(d->db, deadline_ms);
}

static const char *const receipt_outcomes[] = {"stored", "ignored", "dead_letter", "duplicate"};

/*
 * The executor's shard of a push: a hash (FNV-1a) of the WhatsApp message its rows are about
 * (its first status's, else its first inbound message's), else of its Pub/Sub message id. So
 * every status of one message goes through one database connection, and two groups in flight
 * do not wait on each other's message_logs rows. A push about several messages is rare: it is
 * correct on any connection.
 */
static uint32_t shard_of(const pw_push_t *p)
{
    pw_str_t k = p->wh.n_statuses > 0 ? p->wh.statuses[0].id : p->wh.n_inbound > 0 ? p->wh.inbound[0].id : p->message_id;
    uint32_t h = 2166136261u;
    for (size_t i = 0; k.base != NULL && i < k.len; i++)
        h = (h ^ (unsigned char)k.base[i]) * 16777619u;
    return h;
}

static void on_written(pw_db_job_t *job);

/* Encodes p's rows as they are to be written now (the ladder may leave some out) and submits them. */
static void encode_and_submit(pw_push_t *p)
{
    pw_dispatch_loop_t *dl = p->loop;
    const pw_db_stmt_t *s = pw_dispatch_statement();
    pw_rows_t v = {
        .subscription = p->subscription,
        .message_id = p->message_id,
        .publish_time = p->publish_time,
        .outcome = receipt_outcomes[p->outcome],
        .wh = &p->wh,
        .skip = p->skip,
        .dead_reason = p->skip_dead_letter ? NULL : p->dead_reason,
        .raw = p->raw,
        .raw_len = p->raw_len,
        .redrive_id = p->redrive_id,
    };
    pw_cols_begin(&dl->cols, s->ncols, s->elem_types);
    pw_handlers_encode(&dl->cols, &v);
    pw_buf_reset(&dl->key);
    int keyed = pw_handlers_receipt_key(&dl->key, &v) == 0;
    size_t total = dl->key.len;
    for (int k = 0; k < s->ncols; k++)
        total += dl->cols.col[k].len;
    if (total > UINT32_MAX) {
        /* Never with MAX_BODY_BYTES at most 1 GiB: the encoding is a few times the body at most. */
        pw_log_error("dispatch: a push's rows take %zu bytes; answering unavailable", total);
        p->on_done(p, PW_EUNAVAIL);
        return;
    }
    pw_push_write_t *w = p->write;
    if (w == NULL || w->cap < total) {
        free(w);
        w = p->write = pw_xmalloc(sizeof *w + total);
        w->cap = total;
    }
    memset(&w->job, 0, sizeof w->job);
    w->push = p;
    size_t at = 0;
    for (int k = 0; k < s->ncols; k++) {
        if (dl->cols.col[k].len > 0)
            memcpy(w->data + at, dl->cols.col[k].base, dl->cols.col[k].len);
        at += dl->cols.col[k].len;
        w->ends[k] = (uint32_t)at;
    }
    if (dl->key.len > 0)
        memcpy(w->data + at, dl->key.base, dl->key.len);
    w->job.frags = w->data;
    w->job.ends = w->ends;
    w->job.key = keyed ? pw_str(w->data + at, dl->key.len) : PW_STR_NULL;
    w->job.flags = (p->ladder != NULL ? PW_DB_ALONE : 0) | (p->trial ? PW_DB_TRIAL : 0);
    w->job.shard = shard_of(p);
    w->job.on_done = on_written;
    pw_db_submit(dl->port, &w->job);
}

void pw_dispatch_submit(pw_dispatch_loop_t *dl, pw_push_t *p, pw_push_done_cb on_done)
{
    p->loop = dl;
    p->on_done = on_done;
    p->abandoned = 0;
    encode_and_submit(p);
}

void pw_dispatch_abandon(pw_push_t *p)
{
    p->abandoned = 1;
    if (p->write != NULL)
        atomic_store(&p->write->job.abandoned, 1);
}

/* The executor's answer, on the push's loop: done, or the ladder's next write. */
static void on_written(pw_db_job_t *job)
{
    pw_push_write_t *w = H2O_STRUCT_FROM_MEMBER(pw_push_write_t, job, job);
    pw_push_t *p = w->push;
    int rc = job->result;
    if (rc == PW_EREFUSED || (p->trial && rc == 0)) {
        /* PostgreSQL refused the push's data (it ran alone), or a trial of a part of it passed. */
        if (p->abandoned) {
            p->on_done(p, PW_ECANCELED); /* answered already; a redelivery starts over */
            return;
        }
        if (!p->trial && p->ladder == NULL)
            pw_log_warning("dispatch: a push's rows were refused (%s); looking for what can be kept", job->sqlstate);
        if (pw_push_next_rung(p, rc == 0, job->sqlstate, job->message)) {
            encode_and_submit(p);
            return;
        }
        pw_log_error("dispatch: a push was refused even as a bare dead letter (%s)", job->sqlstate);
        p->on_done(p, PW_EREFUSED);
        return;
    }
    if (rc == 0 && p->message_id.base != NULL && !job->got_row)
        p->outcome = PW_OUTCOME_DUPLICATE; /* its receipt was there already: nothing of it was written */
    p->on_done(p, rc);
}
