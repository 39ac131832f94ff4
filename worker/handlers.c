/* The statement a group of pushes is written with, assembled from the handlers' sections. */
#include "worker/handlers.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/util.h"

/*
 * ONE statement writes a whole group (one round trip, one plan, one executor start). Its WITH
 * list holds every section: receipts first (the others read "rc" and "rr"), then statuses,
 * inbound messages, contacts, dead letters and the redriven marks. The final SELECT returns two
 * columns: the key (pw_handlers_receipt_key) of each receipt inserted, with a NULL beside it,
 * and, with the inbound section, a row with a NULL key per inbound message inserted, beside
 * its announcement's payload, which the executor gives to PW_HANDLERS_AFTER_SQL once the group
 * has committed.
 *
 * Each section is a part of the statement for the executor (pw_db_stmt_t): a group with no rows
 * for a section runs the variant without it (pw_handlers_variant_sql). An empty section is not
 * free: its writing CTEs are started, open their tables' indexes and fire their statement
 * triggers (message_logs' roll-up triggers run on empty transition tables). Measured with
 * pgbench, one push of one status per transaction: 0.80 ms with every section, 0.60 ms with
 * receipts and statuses only (BENCHMARKS.md). The receipts section is always kept: the others
 * read its CTEs.
 */
static const pw_section_t *const sections[] = {&pw_receipts_section, &pw_status_section, &pw_inbound_section,
                                               &pw_contacts_section, &pw_dead_letters_section, &pw_redriven_section};
#define N_SECTIONS (sizeof sections / sizeof sections[0])

#define STATUS_PART 1
#define INBOUND_PART 2 /* sections[2]: "ins", which the announcements' branch reads */
#define CONTACTS_PART 3

static const unsigned warm_variants[] = {1u << STATUS_PART, 1u << INBOUND_PART | 1u << CONTACTS_PART,
                                         1u << STATUS_PART | 1u << INBOUND_PART | 1u << CONTACTS_PART,
                                         1u << STATUS_PART | 1u << CONTACTS_PART, 0};

static const char final_select[] =
    " SELECT octet_length(subscription) || ':' || subscription || message_id, NULL::text FROM rc"
    " UNION ALL"
    " SELECT octet_length(subscription) || ':' || subscription || message_id, NULL FROM rr";
/* A payload of 8000 bytes or more (NOTIFY refuses it, and with it the other payloads of its
   announcement) is not announced: only an absurd message id or type makes one. */
static const char announce_branch[] =
    " UNION ALL"
    " SELECT NULL, a.p FROM (SELECT json_build_object('wa_msg_id', wa_msg_id, 'phone_number_id', phone_number_id,"
    " 'msg_type', msg_type, 'sent_at', to_char(sent_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))::text AS p"
    " FROM ins) AS a WHERE octet_length(a.p) < 8000";

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

/* The statement with the sections in parts (bit i: sections[i]), parameters numbered in order. */
static char *build(unsigned parts, int *ncols)
{
    pw_buf_t b = {0};
    int base = 0;
    pw_buf_append(&b, "WITH ", 5);
    for (size_t i = 0; i < N_SECTIONS; i++) {
        if (!(parts & (1u << i)))
            continue;
        if (base > 0)
            pw_buf_append(&b, ", ", 2);
        append_renumbered(&b, sections[i]->ctes, base);
        base += sections[i]->ncols;
    }
    pw_buf_append(&b, final_select, sizeof final_select - 1);
    if (parts & (1u << INBOUND_PART))
        pw_buf_append(&b, announce_branch, sizeof announce_branch - 1);
    assert(base <= PW_COLS_MAX);
    *ncols = base;
    return b.base;
}

#define ALL_PARTS ((1u << N_SECTIONS) - 1u)

static pthread_mutex_t variants_lock = PTHREAD_MUTEX_INITIALIZER;
static char *variants[1u << N_SECTIONS]; /* built on first use, kept for the life of the process */
static int full_ncols;
static int part_ends[N_SECTIONS];
static uint32_t full_types[PW_COLS_MAX];

static const char *variant(unsigned parts)
{
    assert(parts <= ALL_PARTS && (parts & PW_HANDLERS_KEEP) == PW_HANDLERS_KEEP);
    pthread_mutex_lock(&variants_lock);
    if (variants[parts] == NULL) {
        int ncols;
        variants[parts] = build(parts, &ncols);
    }
    const char *sql = variants[parts];
    pthread_mutex_unlock(&variants_lock);
    return sql;
}

/* The element type that sql's first cast of $k names: "$k::name[]" (one of those cols.c writes). */
static uint32_t cast_type(const char *sql, int k)
{
    static const struct {
        const char *name;
        uint32_t oid;
    } known[] = {{"text", PW_OID_TEXT},   {"timestamptz", PW_OID_TIMESTAMPTZ}, {"jsonb", PW_OID_JSONB},
                 {"bigint", PW_OID_INT8}, {"bytea", PW_OID_BYTEA}};
    char cast[24];
    int n = snprintf(cast, sizeof cast, "$%d::", k);
    const char *q = strstr(sql, cast); /* "$1::" is not in "$11::" */
    assert(q != NULL && "every parameter is cast");
    const char *name = q + n, *end = strstr(name, "[]");
    assert(end != NULL);
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if ((size_t)(end - name) == strlen(known[i].name) && memcmp(name, known[i].name, (size_t)(end - name)) == 0)
            return known[i].oid;
    assert(!"every parameter is cast to a type cols.c writes");
    return 0;
}

static void build_full(void)
{
    int end = 0;
    for (size_t i = 0; i < N_SECTIONS; i++) {
        for (int k = 0; k < sections[i]->ncols; k++)
            full_types[end + k] = cast_type(sections[i]->ctes, k + 1);
        end += sections[i]->ncols;
        part_ends[i] = end;
    }
    variants[ALL_PARTS] = build(ALL_PARTS, &full_ncols);
}

/* Builds the full statement and the sections' column ends, once, from any thread. */
static void built(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, build_full);
}

const char *pw_handlers_sql(int *ncols)
{
    built();
    *ncols = full_ncols;
    return variants[ALL_PARTS];
}

const uint32_t *pw_handlers_types(void)
{
    built();
    return full_types;
}

int pw_handlers_sections(const int **column_ends)
{
    built();
    *column_ends = part_ends;
    return (int)N_SECTIONS;
}

const char *pw_handlers_variant_sql(unsigned parts)
{
    built();
    return variant(parts);
}

const unsigned *pw_handlers_warm_variants(void)
{
    return warm_variants;
}

const char *pw_handlers_section_name(unsigned i)
{
    return i < N_SECTIONS ? sections[i]->name : NULL;
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
    pw_buf_append_u64(out, sub.len);
    pw_buf_appendc(out, ':');
    pw_buf_append(out, sub.base, sub.len);
    pw_buf_append(out, v->message_id.base, v->message_id.len);
    return 0;
}
