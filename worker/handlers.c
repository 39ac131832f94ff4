/* The statement a group of pushes is written with, assembled from the handlers' sections. */
#include "worker/handlers.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "worker/util.h"

/*
 * ONE statement writes a whole group (one round trip, one plan, one executor start). Its WITH
 * list holds every section: receipts first (the others read "rc" and "rr"), then statuses,
 * inbound messages, contacts, dead letters and the redriven marks. Sections with no rows get empty arrays and cost next to
 * nothing. The final SELECT returns the key (pw_handlers_receipt_key) of each receipt inserted,
 * and one row with a NULL key that announces each inserted inbound message with NOTIFY
 * (delivered at COMMIT): a UNION ALL branch that always runs, so the NOTIFYs are sent whether or
 * not any receipt was inserted.
 */
static const pw_section_t *const sections[] = {&pw_receipts_section, &pw_status_section, &pw_inbound_section,
                                               &pw_contacts_section, &pw_dead_letters_section, &pw_redriven_section};
#define N_SECTIONS (sizeof sections / sizeof sections[0])

static const char final_select[] =
    " SELECT octet_length(subscription) || ':' || subscription || message_id FROM rc"
    " UNION ALL"
    " SELECT octet_length(subscription) || ':' || subscription || message_id FROM rr"
    " UNION ALL"
    " SELECT NULL FROM (SELECT count(pg_notify('" PW_INBOUND_CHANNEL "', json_build_object('wa_msg_id', wa_msg_id,"
    " 'phone_number_id', phone_number_id, 'msg_type', msg_type,"
    " 'sent_at', to_char(sent_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))::text)) FROM ins) AS notified";

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

static pw_buf_t sql;
static int sql_ncols;

static void build(void)
{
    int base = 0;
    pw_buf_append(&sql, "WITH ", 5);
    for (size_t i = 0; i < N_SECTIONS; i++) {
        if (i > 0)
            pw_buf_append(&sql, ", ", 2);
        append_renumbered(&sql, sections[i]->ctes, base);
        base += sections[i]->ncols;
    }
    pw_buf_append(&sql, final_select, sizeof final_select - 1);
    assert(base <= PW_COLS_MAX);
    sql_ncols = base;
}

const char *pw_handlers_sql(int *ncols)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, build);
    *ncols = sql_ncols;
    return sql.base;
}

void pw_handlers_encode(pw_cols_t *c, const pw_rows_t *v)
{
    int base = 0;
    for (size_t i = 0; i < N_SECTIONS; i++) {
        sections[i]->encode(c, base, v);
        base += sections[i]->ncols;
    }
}

int pw_handlers_receipt_key(pw_buf_t *out, const pw_rows_t *v)
{
    if (v->message_id.base == NULL)
        return -1;
    pw_str_t sub = pw_rows_receipt_sub(v);
    pw_buf_appendf(out, "%zu:", sub.len);
    pw_buf_append(out, sub.base, sub.len);
    pw_buf_append(out, v->message_id.base, v->message_id.len);
    return 0;
}
