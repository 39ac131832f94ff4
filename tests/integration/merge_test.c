/* Merge tests: the worker's status merge (worker/status.c) equals the SQL functions of migrations/0001, exhaustively. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/integration/harness.h"

/*
 * The status merge exists twice: inline in the worker's group statement (worker/status.c, so that
 * PostgreSQL does not plan a SQL function again on every group) and as the functions users call,
 * pw_status_merge and pw_current_status. This test delivers every sequence of one to three status
 * events on one message, drawn from sent/delivered/read/failed/played and one unusual status
 * ("deleted"), failed with either of two errors or none, each at one of three times (so that
 * earlier, later and equal all occur), to the real worker, and compares message_logs with what
 * those functions give when folded over the same events in the same order from the empty map the
 * worker starts from; last_error and created_at are compared with docs/rows.md's rule. Each
 * sequence is delivered in several ways (one wamid per way and sequence), so that every path of
 * the statement is taken:
 *   apart     one event per push (across groups: the ON CONFLICT merge of two maps);
 *   together  all events in one push (one group: the per-message fold inside the statement);
 *   1+2, 2+1  (three events) the first event alone then the other two together, or the first two
 *             together then the third: both paths on one row;
 *   twice     (one or two events) every event twice in one push (duplicates inside a group).
 * Pushes carry many messages each (one wamid per sequence and way), a few rounds of pushes in all.
 * The oracle for an event's own map is the documented rule (docs/rows.md): read implies delivered
 * and sent, delivered implies sent, played implies delivered and sent, all at the event's time.
 * The whole run (two deliveries of about 170,000 statuses) takes some 15-20 s.
 */

/* clang-format off */

#define SUB "projects/acme-prod/subscriptions/whatsapp-events-push"
#define PUBLISH_TIME "2024-03-06T10:00:00.250Z"
#define PNID "106540352242922"
#define RECIPIENT "919876543299"
#define WAMID_PREFIX "wamid.merge."

/*
 * The kinds of event: a status, the letter naming it in a sequence's code, and its errors: none (0),
 * or one of two arrays (1, 2) that follow from the event's time, so that two failed events at one
 * time may carry different errors, and a failed event may carry none (as AiSensy's may).
 */
typedef struct {
    const char *status;
    char letter;
    int errors;
} kind_t;
#define N_KINDS 8
static const kind_t kinds[N_KINDS] = {{"sent", 's', 0},   {"delivered", 'd', 0}, {"read", 'r', 0},
                                      {"failed", 'f', 1}, {"failed", 'g', 2},    {"failed", 'n', 0},
                                      {"played", 'p', 0}, {"deleted", 'x', 0}};

/* 2024-03-05 20:00:00Z and two later times: the order between two events is earlier, equal or later. */
#define T0 1709668800L
#define N_TIMES 3
static const long offsets[N_TIMES] = {0, 5, 60};

#define MAX_EVENTS 3
typedef struct {
    int n;
    int kind[MAX_EVENTS];   /* index into kinds */
    int time[MAX_EVENTS];   /* index into offsets */
    char code[2 * MAX_EVENTS + 1]; /* e.g. "s0d1r2": kind letter + time index per event */
} seq_t;

enum { W_APART, W_TOGETHER, W_FIRST_THEN_REST, W_TWO_THEN_LAST, W_TWICE, N_WAYS };
static const char *const way_names[N_WAYS] = {"apart", "together", "1+2", "2+1", "twice"};
static const int way_min_len[N_WAYS] = {1, 1, 3, 3, 1};
static const int way_max_len[N_WAYS] = {3, 3, 3, 3, 2}; /* "twice" of three events would add more time than paths */
#define N_ROUNDS MAX_EVENTS

/* Statuses per push: many messages per push, so that the whole run is a few dozen pushes. */
#define PUSH_STATUSES 2500

/* clang-format on */

static pwt_worker_t worker;
static seq_t *seqs;
static size_t n_seqs;
static int delivered; /* 1 once every sequence has been delivered in every way (first test that needs it) */

/* ---- the sequences ----------------------------------------------------------------------------- */

static void enumerate_sequences(void)
{
    size_t cap = 0;
    for (int n = 1, combos = N_KINDS * N_TIMES; n <= MAX_EVENTS; n++, combos *= N_KINDS * N_TIMES)
        cap += (size_t)combos;
    seqs = calloc(cap, sizeof *seqs);
    if (seqs == NULL)
        abort();
    n_seqs = 0;
    for (int n = 1, combos = N_KINDS * N_TIMES; n <= MAX_EVENTS; n++, combos *= N_KINDS * N_TIMES) {
        for (int c = 0; c < combos; c++) {
            seq_t *s = &seqs[n_seqs++];
            s->n = n;
            char *p = s->code;
            for (int i = 0, rest = c; i < n; i++, rest /= N_KINDS * N_TIMES) {
                s->kind[i] = rest % (N_KINDS * N_TIMES) / N_TIMES;
                s->time[i] = rest % N_TIMES;
                p += sprintf(p, "%c%d", kinds[s->kind[i]].letter, s->time[i]);
            }
        }
    }
    assert_int_equal(n_seqs, cap);
}

/* The events of s that way w delivers in round r (0-based), appended to out; returns how many. */
static int events_of_round(const seq_t *s, int w, int r, int out[2 * MAX_EVENTS])
{
    int k = 0;
    switch (w) {
    case W_APART:
        if (r < s->n)
            out[k++] = r;
        break;
    case W_TOGETHER:
        for (int i = 0; r == 0 && i < s->n; i++)
            out[k++] = i;
        break;
    case W_FIRST_THEN_REST: /* {0} then {1, 2} */
        for (int i = 0; i < s->n; i++)
            if ((i == 0) == (r == 0) && r <= 1)
                out[k++] = i;
        break;
    case W_TWO_THEN_LAST: /* {0, 1} then {2} */
        for (int i = 0; i < s->n; i++)
            if ((i <= 1) == (r == 0) && r <= 1)
                out[k++] = i;
        break;
    case W_TWICE:
        for (int rep = 0; r == 0 && rep < 2; rep++)
            for (int i = 0; i < s->n; i++)
                out[k++] = i;
        break;
    }
    return k;
}

/* ---- pushes ------------------------------------------------------------------------------------ */

/* A Meta webhook being built: statuses appended one by one, posted when full. */
typedef struct {
    char *text;
    size_t len;
    FILE *f;
    int n;          /* statuses in it */
    char phase;     /* first letter of the push ids: 'a' for the first delivery, 'b' for the redelivery */
    int round;
    int chunk;      /* pushes posted so far in this round */
    long pushes;    /* pushes posted in all */
    long events;    /* statuses posted in all */
} batch_t;

static void batch_open(batch_t *b)
{
    b->f = open_memstream(&b->text, &b->len);
    if (b->f == NULL)
        abort();
    b->n = 0;
    fputs("{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"104996335712345\",\"changes\":[{"
          "\"field\":\"messages\",\"value\":{\"messaging_product\":\"whatsapp\",\"metadata\":{"
          "\"display_phone_number\":\"15550783881\",\"phone_number_id\":\"" PNID "\"},\"statuses\":[",
          b->f);
}

/* Posts the webhook (when it holds anything) as one wrapped push; 204 expected. */
static void batch_flush(batch_t *b)
{
    fputs("]}}]}]}", b->f);
    fclose(b->f);
    if (b->n > 0) {
        /* Push ids sort in posting order ('a' < 'b', fixed widths): a redelivery never has the smaller id. */
        char id[32];
        snprintf(id, sizeof id, "%c%d-%04d", b->phase, b->round, b->chunk++);
        char *body = pwt_wrap(b->text, b->len, id, SUB, PUBLISH_TIME);
        pwt_assert_status(pwt_post(&worker, "/", body, strlen(body), NULL, NULL), 204);
        free(body);
        b->pushes++;
        b->events += b->n;
    }
    free(b->text);
    b->text = NULL;
}

static void batch_add(batch_t *b, const char *way, const seq_t *s, int i)
{
    if (b->n > 0)
        fputc(',', b->f);
    long at = T0 + offsets[s->time[i]];
    fprintf(b->f, "{\"id\":\"" WAMID_PREFIX "%s.%s\",\"status\":\"%s\",\"timestamp\":\"%ld\",\"recipient_id\":\"" RECIPIENT "\"",
            way, s->code, kinds[s->kind[i]].status, at);
    int e = kinds[s->kind[i]].errors;
    if (e != 0)
        fprintf(b->f, ",\"errors\":[{\"code\":%d,\"title\":\"failure %d at t%d\"}]", 131000 + 10 * e + s->time[i], e,
                s->time[i]);
    fputc('}', b->f);
    if (++b->n == PUSH_STATUSES) {
        batch_flush(b);
        batch_open(b);
    }
}

/* Posts every round: round r carries, for every sequence and way, the events that way delivers in round r. */
static void deliver_all(char phase, long *pushes, long *events)
{
    batch_t b = {.phase = phase};
    for (int r = 0; r < N_ROUNDS; r++) {
        b.round = r;
        b.chunk = 0;
        batch_open(&b);
        for (size_t k = 0; k < n_seqs; k++) {
            for (int w = 0; w < N_WAYS; w++) {
                if (seqs[k].n < way_min_len[w] || seqs[k].n > way_max_len[w])
                    continue;
                int idx[2 * MAX_EVENTS];
                int n = events_of_round(&seqs[k], w, r, idx);
                for (int i = 0; i < n; i++)
                    batch_add(&b, way_names[w], &seqs[k], idx[i]);
            }
        }
        batch_flush(&b);
    }
    *pushes = b.pushes;
    *events = b.events;
}

/* ---- the cases in the database ------------------------------------------------------------------ */

/* Appends v to a PostgreSQL array literal being built in f ("{" written by the caller). */
static void array_add(FILE *f, int first, const char *v)
{
    fprintf(f, "%s%s", first ? "" : ",", v);
}

/*
 * merge_seq (one row per event of every sequence) and merge_way (the ways and the shortest
 * sequence each applies to), written through the checker connection: the oracle's input.
 */
static void store_cases(void)
{
    enum { N_ARRAYS = 7 }; /* code, idx, status, at (Unix seconds), time index, errors (0, 1, 2), event (letter + time) */
    char *a[N_ARRAYS];
    size_t alen[N_ARRAYS];
    FILE *f[N_ARRAYS];
    for (int j = 0; j < N_ARRAYS; j++) {
        f[j] = open_memstream(&a[j], &alen[j]);
        if (f[j] == NULL)
            abort();
        fputc('{', f[j]);
    }
    int first = 1;
    for (size_t k = 0; k < n_seqs; k++) {
        for (int i = 0; i < seqs[k].n; i++, first = 0) {
            char idx[16], at[32], ti[16], e[16], ev[8];
            snprintf(idx, sizeof idx, "%d", i);
            snprintf(at, sizeof at, "%ld", T0 + offsets[seqs[k].time[i]]);
            snprintf(ti, sizeof ti, "%d", seqs[k].time[i]);
            snprintf(e, sizeof e, "%d", kinds[seqs[k].kind[i]].errors);
            snprintf(ev, sizeof ev, "%c%d", kinds[seqs[k].kind[i]].letter, seqs[k].time[i]);
            array_add(f[0], first, seqs[k].code);
            array_add(f[1], first, idx);
            array_add(f[2], first, kinds[seqs[k].kind[i]].status);
            array_add(f[3], first, at);
            array_add(f[4], first, ti);
            array_add(f[5], first, e);
            array_add(f[6], first, ev);
        }
    }
    for (int j = 0; j < N_ARRAYS; j++) {
        fputc('}', f[j]);
        fclose(f[j]);
    }
    pwt_exec("CREATE TABLE merge_seq (code text, idx int, status text, at timestamptz, errors jsonb, ev text)");
    /* The errors as batch_add sends them. */
    free(pwt_rows_p("INSERT INTO merge_seq SELECT c, i, s, to_timestamp(t), CASE WHEN e <> 0 THEN jsonb_build_array("
                    "  jsonb_build_object('code', 131000 + 10 * e + ti, 'title', 'failure ' || e || ' at t' || ti)) END, ev"
                    " FROM unnest($1::text[], $2::int[], $3::text[], $4::bigint[], $5::int[], $6::int[], $7::text[])"
                    "   AS u(c, i, s, t, ti, e, ev)",
                    (const char *const[]){a[0], a[1], a[2], a[3], a[4], a[5], a[6], NULL}));
    for (int j = 0; j < N_ARRAYS; j++)
        free(a[j]);
    pwt_exec("CREATE TABLE merge_way (way text, min_len int, max_len int)");
    for (int w = 0; w < N_WAYS; w++) {
        char lo[16], hi[16];
        snprintf(lo, sizeof lo, "%d", way_min_len[w]);
        snprintf(hi, sizeof hi, "%d", way_max_len[w]);
        free(pwt_rows_p("INSERT INTO merge_way VALUES ($1, $2::int, $3::int)", PWT_LIST(way_names[w], lo, hi)));
    }
    /* The fold of pw_status_merge over a message's event maps, in order, from the worker's empty map. */
    pwt_exec("CREATE OR REPLACE AGGREGATE merge_fold(jsonb) (SFUNC = pw_status_merge, STYPE = jsonb, INITCOND = '{}')");
}

/* Each event of every sequence with its own map: the documented rule of implied statuses. */
#define Q_EVENT_MAPS                                                                                                   \
    "SELECT code, idx, status, at, errors, ev,"                                                                        \
    "       CASE status WHEN 'read' THEN jsonb_build_object('read', t, 'delivered', t, 'sent', t)"                       \
    "                   WHEN 'played' THEN jsonb_build_object('played', t, 'delivered', t, 'sent', t)"                   \
    "                   WHEN 'delivered' THEN jsonb_build_object('delivered', t, 'sent', t)"                            \
    "                   ELSE jsonb_build_object(status, t) END AS map"                                                   \
    " FROM merge_seq, LATERAL (SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS t) f"

/*
 * Computed once, after the first delivery, into tables the tests query. merge_want, per sequence,
 * what the SQL functions say: ws = pw_status_merge folded over the events' own maps in order, and
 * what docs/rows.md says of the columns no function computes: err = the errors of the earliest
 * failed event (NULL when it has none; of failed events at one time, the one with errors, then the
 * smallest errors in jsonb order, so that the choice does not depend on arrival), first_at = the
 * earliest event time; bag names the multiset of events (all permutations of a sequence share it).
 * merge_twice: the fold with every event repeated. merge_cmp: per case (way, sequence) the wanted
 * columns (current status = pw_current_status of ws) beside the worker's row.
 */
static void compute_wanted(void)
{
    pwt_exec("CREATE TABLE merge_want AS WITH e AS (" Q_EVENT_MAPS ")"
             " SELECT code, count(*) AS n, merge_fold(map ORDER BY idx) AS ws, min(at) AS first_at,"
             "        (array_agg(errors ORDER BY at, errors NULLS LAST) FILTER (WHERE status = 'failed'))[1] AS err,"
             "        string_agg(ev, ',' ORDER BY ev) AS bag"
             " FROM e GROUP BY code");
    pwt_exec("CREATE TABLE merge_twice AS WITH e AS (" Q_EVENT_MAPS ")"
             " SELECT code, merge_fold(map ORDER BY idx, rep) AS ws FROM e CROSS JOIN generate_series(1, 2) rep GROUP BY code");
    pwt_exec("CREATE TABLE merge_cmp AS"
             " SELECT w.way, c.code, c.bag, c.ws AS want_ws, pw_current_status(c.ws) AS want_cs, c.err AS want_err,"
             "        c.first_at AS want_first, l.whatsapp_status AS got_ws, l.current_status AS got_cs,"
             "        l.last_error AS got_err, l.created_at AS got_first"
             " FROM merge_want c JOIN merge_way w ON c.n BETWEEN w.min_len AND w.max_len"
             " LEFT JOIN message_logs l ON l.bsp_msg_id = '" WAMID_PREFIX "' || w.way || '.' || c.code");
}

#define MISMATCH "(want_ws, want_cs, want_err, want_first) IS DISTINCT FROM (got_ws, got_cs, got_err, got_first)"

static void ensure_delivered(void)
{
    if (delivered)
        return;
    store_cases();
    long pushes, events;
    deliver_all('a', &pushes, &events);
    print_message("merge: %zu sequences delivered in %d ways: %ld statuses in %ld pushes\n", n_seqs, N_WAYS, events,
                  pushes);
    compute_wanted();
    delivered = 1;
}

/* ---- the tests ------------------------------------------------------------------------------------ */

/* Every sequence, every way: the worker's row equals the SQL functions folded over the same events. */
static void every_status_sequence_is_merged_as_the_sql_functions_merge_it(void **state)
{
    (void)state;
    ensure_delivered();
    long long cases = pwt_scalar_int("SELECT count(*) FROM merge_cmp");
    long long rows = pwt_scalar_int("SELECT count(*) FROM message_logs WHERE bsp_msg_id LIKE '" WAMID_PREFIX "%'");
    long long differ = pwt_scalar_int("SELECT count(*) FROM merge_cmp WHERE " MISMATCH);
    print_message("merge: %lld cases compared (%zu sequences x ways), %lld differ\n", cases, n_seqs, differ);
    /* The first differences, each as: way, sequence (kind letter + time index per event: s=sent
       d=delivered r=read f, g=failed with errors 1 or 2, n=failed without errors, p=played
       x=deleted; times 0, +5 s, +60 s), then the functions' map|current|error|created_at and the
       worker's. */
    pwt_assert_rows("SELECT way, code, want_ws, want_cs, want_err, want_first, got_ws, got_cs, got_err,"
                    " got_first FROM merge_cmp WHERE " MISMATCH " ORDER BY length(code), code, way LIMIT 20",
                    "");
    assert_int_equal(rows, cases); /* a row per case, none missing (a mismatch above) and none extra */
    /* last_error is the errors of the failed event status_events keeps, whose time is the map's "failed". */
    pwt_assert_rows("SELECT l.bsp_msg_id, l.whatsapp_status->>'failed', l.last_error, e.occurred_at, e.errors"
                    " FROM message_logs l LEFT JOIN status_events e ON e.bsp_msg_id = l.bsp_msg_id AND e.status = 'failed'"
                    " WHERE l.last_error IS DISTINCT FROM e.errors OR l.whatsapp_status->>'failed' IS DISTINCT FROM"
                    "   to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
                    " ORDER BY 1 LIMIT 20",
                    "");
}

/*
 * Commutativity and idempotence of the worker, without the oracle: every permutation of a multiset
 * of events, delivered in any of the ways (including every event twice), gives one row.
 */
static void order_grouping_and_duplicates_do_not_change_the_row(void **state)
{
    (void)state;
    ensure_delivered();
    long long bags = pwt_scalar_int("SELECT count(DISTINCT bag) FROM merge_cmp");
    print_message("merge: %lld multisets of events, each in every order and way\n", bags);
    pwt_assert_rows("SELECT bag, count(DISTINCT (got_ws, got_cs, got_err, got_first)),"
                    " string_agg(DISTINCT got_ws::text || ' ' || coalesce(got_cs, 'NULL'), ' / ')"
                    " FROM merge_cmp GROUP BY bag HAVING count(DISTINCT (got_ws, got_cs, got_err, got_first)) <> 1"
                    "   OR count(*) <> count(got_ws) ORDER BY bag LIMIT 20",
                    "");
}

/* The same of the SQL functions: the fold does not depend on the order, and merging a map again changes nothing. */
static void the_sql_functions_are_commutative_and_idempotent(void **state)
{
    (void)state;
    ensure_delivered();
    pwt_assert_rows("SELECT bag, count(DISTINCT ws) FROM merge_want GROUP BY bag HAVING count(DISTINCT ws) <> 1"
                    " ORDER BY bag LIMIT 20",
                    "");
    pwt_assert_rows("SELECT w.code, w.ws, t.ws FROM merge_want w JOIN merge_twice t USING (code)"
                    " WHERE t.ws IS DISTINCT FROM w.ws OR pw_status_merge(w.ws, w.ws) IS DISTINCT FROM w.ws"
                    "    OR pw_status_merge('{}', w.ws) IS DISTINCT FROM w.ws ORDER BY w.code LIMIT 20",
                    "");
}

/* Every event delivered again in new pushes: no row changes, not even updated_at or status_events. */
static void redelivering_every_event_changes_no_row(void **state)
{
    (void)state;
    ensure_delivered();
    const char *q_logs = "SELECT t::text FROM message_logs t ORDER BY bsp_msg_id COLLATE \"C\"";
    const char *q_events = "SELECT t::text FROM status_events t ORDER BY bsp_msg_id COLLATE \"C\", status COLLATE \"C\"";
    char *logs = pwt_rows(q_logs);
    char *events = pwt_rows(q_events);
    long pushes, n;
    deliver_all('b', &pushes, &n);
    print_message("merge: %ld statuses delivered again in %ld pushes\n", n, pushes);
    char *logs_after = pwt_rows(q_logs);
    char *events_after = pwt_rows(q_events);
    /* Print only whether they differ (they are large); the first differing line is enough to see why. */
    int same_logs = strcmp(logs, logs_after) == 0, same_events = strcmp(events, events_after) == 0;
    if (!same_logs || !same_events) {
        const char *x = same_logs ? events : logs, *y = same_logs ? events_after : logs_after;
        size_t i = 0;
        while (x[i] != '\0' && x[i] == y[i])
            i++;
        while (i > 0 && x[i - 1] != '\n')
            i--;
        fprintf(stderr, "%s changed by the redelivery; first difference:\n  before: %.300s\n  after:  %.300s\n",
                same_logs ? "status_events" : "message_logs", x + i, y + i);
    }
    free(logs);
    free(events);
    free(logs_after);
    free(events_after);
    assert_true(same_logs);
    assert_true(same_events);
}

/*
 * Migration 0008's roll-ups, kept by statement triggers through every group, order, duplicate and
 * redelivery above, are the sum of what message_status_times says of each message.
 */
static void the_rollups_add_up_to_the_rows(void **state)
{
    (void)state;
    ensure_delivered();
    print_message("merge: %lld roll-up rows\n",
                  pwt_scalar_int("SELECT (SELECT count(*) FROM message_status_rollup) + (SELECT count(*) FROM message_latency_rollup)"
                                 " + (SELECT count(*) FROM message_failure_rollup)"));
    pwt_assert_rollups_consistent();
}

/* ---- fixtures ------------------------------------------------------------------------------------- */

static int start_everything(void **state)
{
    (void)state;
    enumerate_sequences();
    if (pwt_db_create("merge") != 0)
        return -1;
    if (pwt_migrate() != 0)
        return -1;
    return pwt_worker_start(&worker, NULL);
}

static int stop_everything(void **state)
{
    (void)state;
    int code = pwt_worker_stop(&worker);
    pwt_db_drop();
    free(seqs);
    return code == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_status_sequence_is_merged_as_the_sql_functions_merge_it),
        cmocka_unit_test(order_grouping_and_duplicates_do_not_change_the_row),
        cmocka_unit_test(the_sql_functions_are_commutative_and_idempotent),
        cmocka_unit_test(redelivering_every_event_changes_no_row),
        cmocka_unit_test(the_rollups_add_up_to_the_rows),
    };
    return cmocka_run_group_tests_name("merge", tests, start_everything, stop_everything);
}
