/* The process's database: DB_CONNECTIONS pipelined async libpq connections in one h2o loop, fed by every loop; group commit, reconnect with backoff. */
#include "worker/db.h"

#include <assert.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "worker/log.h"
#include "worker/metrics.h"
#include "worker/util.h"

/* Reconnect attempts wait 1, 2, 4 then 8 ticks of this. */
#define PW_DB_RETRY_TICK_MS 250
#define PW_DB_MAX_BACKOFF_TICKS 8
/* A push that hits a serialization failure or deadlock alone is retried this many times, after
   PW_DB_CONFLICT_BACKOFF_MS, doubling, jittered (about 50 + 100 + 200 + 400 + 800 ms), then 503. */
#define PW_DB_MAX_CONFLICT_RETRIES 5
#define PW_DB_CONFLICT_BACKOFF_MS 50
#define PW_DB_BACKOFF_TICK_MS 10
/*
 * The watchdog (a timer, off the hot path): every tick it drops a connection whose request has
 * waited longer than its limit (a stopped server, a silent network partition: TCP alone would
 * take minutes), and sends a probe on a connection idle for PW_DB_PROBE_IDLE_MS, so an idle
 * process also notices, and /readyz says so. A group's limit is the statement timeout (the
 * server cancels it by then) plus PW_DB_ANSWER_GRACE_MS.
 */
#define PW_DB_WATCH_TICK_MS 250
#define PW_DB_PROBE_IDLE_MS 1000
#define PW_DB_PROBE_LIMIT_MS 2000
#define PW_DB_CONNECT_LIMIT_MS 5000
#define PW_DB_ANSWER_GRACE_MS 1000
/* The queries of a group's pipeline, before its Sync: the settings, the statement, and for a
   trial a query that fails, so that the implicit transaction is rolled back. */
#define PW_Q_SETUP 0
#define PW_Q_MAIN 1
#define PW_Q_ROLLBACK 2

typedef enum { DB_DOWN, DB_CONNECTING, DB_PREPARING, DB_IDLE, DB_BUSY } db_state_t;

/* One connection of a loop: it writes one group at a time. */
typedef struct {
    pw_db_t *db;
    PGconn *pg;
    h2o_socket_t *sock; /* wraps dup(PQsocket(pg)), so closing it never closes libpq's fd */
    int sock_fd;        /* the PQsocket() the wrapper was made for */
    ino_t sock_ino;     /* and its socket's inode: libpq may reuse the fd number for a new socket */
    int want_write;     /* a write notification is armed */
    db_state_t state;

    pw_db_job_t *b_head, *b_tail; /* the group in flight */
    size_t b_len;
    int syncs_pending;
    int query_at;                 /* the query of the pipeline whose results are being read (PW_Q_*) */
    int failed;                   /* the group (or the PREPAREs) got an error */
    int failed_query;             /* and in which query */
    double sent_ms;               /* when the group (or probe, or connection attempt) was sent */
    int limit_ms;                 /* how long it may wait for its answer (the watchdog) */
    double idle_since_ms;         /* when the connection last finished something */
    char sqlstate[6];
    char errmsg[256];             /* valid UTF-8: cut at a whole character */
    char server_encoding[32];     /* as the server reported it while preparing */

    h2o_timeout_entry_t retry_entry;
    int retry_ticks_left, backoff_ticks;
} pw_conn_t;

/*
 * The database: DB_CONNECTIONS connections sharing one queue, which every loop feeds. With more
 * than one, while a group waits for its COMMIT another can be sent; with one (the default),
 * groups are bigger, which on a busy 2-core machine gave more pushes per second (make bench:
 * 6357/s with one connection per loop against 4601/s with two). One queue for all loops rather
 * than one database per loop, for the same reason: groups of every loop's pushes (with two
 * loops about 29 pushes instead of 14, and a third less database CPU per push in make bench),
 * and fewer connections.
 */
struct pw_db {
    h2o_loop_t *loop; /* home */
    h2o_multithread_receiver_t inbox; /* jobs from the other loops */
    _Atomic int ready;                /* pw_db_ready(), for every loop */
    _Atomic long outstanding;         /* submitted, not yet answered */
    int closing;
    const pw_config_t *cfg;
    pw_metrics_t *metrics;
    const pw_stmt_t *stmt; /* the one statement a group is written with */
    pw_conn_t *conns;
    int n_conns;

    pw_db_job_t *q_head, *q_tail; /* waiting for a connection */
    size_t q_len;

    pw_db_job_t *d_head, *d_tail; /* answered from the loop, not from inside pw_db_submit */
    h2o_timeout_t zero;
    h2o_timeout_entry_t kick;
    h2o_timeout_t retry;

    pw_db_job_t *r_head, *r_tail; /* conflicts waiting for their backoff (due_ms), not in the queue */
    h2o_timeout_t backoff;
    h2o_timeout_entry_t backoff_entry;
    h2o_timeout_t watch;
    h2o_timeout_entry_t watch_entry;
    unsigned rng; /* for the jitter */

    /* Run at the start of every group's transaction: the timeouts and the plan cache mode, set
       LOCAL (set_config(..., true)), so they hold behind a transaction-mode pooler and cannot
       leak into the next client of a pooled server connection; also the probe. */
    char setup_sql[320];

    pw_cols_t cols; /* reused for every group (libpq copies the parameters when sending) */
};

/* A loop's way in; answers come back to it through its receiver. */
struct pw_db_port {
    pw_db_t *db;
    int home;
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t answers;
};

static void on_readable(h2o_socket_t *sock, const char *err);
static void on_connect_event(h2o_socket_t *sock, const char *err);
static void conn_lost(pw_conn_t *c, const char *why);
static void maybe_send_batches(pw_db_t *db);

/* ---- job lists ---- */

static void list_push(pw_db_job_t **head, pw_db_job_t **tail, pw_db_job_t *j)
{
    j->next = NULL;
    if (*tail != NULL)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

/* Answers a job: at once on the home loop, else by a message to its own loop. */
static void complete(pw_db_t *db, pw_db_job_t *j, int status)
{
    atomic_fetch_sub(&db->outstanding, 1);
    if (j->port == NULL) {
        j->on_done(j, status);
    } else {
        j->status = status;
        h2o_multithread_send_message(&j->port->answers, &j->msg);
    }
}

/* Answers every job of a list with status. */
static void complete_all(pw_db_t *db, pw_db_job_t **head, pw_db_job_t **tail, int status)
{
    pw_db_job_t *j = *head;
    *head = *tail = NULL;
    while (j != NULL) {
        pw_db_job_t *next = j->next;
        complete(db, j, status);
        j = next;
    }
}

/* Puts a connection's group back at the head of the queue, in order. */
static void requeue_batch(pw_conn_t *c)
{
    pw_db_t *db = c->db;
    if (c->b_head == NULL)
        return;
    c->b_tail->next = db->q_head;
    if (db->q_head == NULL)
        db->q_tail = c->b_tail;
    db->q_head = c->b_head;
    db->q_len += c->b_len;
    c->b_head = c->b_tail = NULL;
    c->b_len = 0;
}

static void on_kick(h2o_timeout_entry_t *entry)
{
    pw_db_t *db = H2O_STRUCT_FROM_MEMBER(pw_db_t, kick, entry);
    complete_all(db, &db->d_head, &db->d_tail, 503);
    maybe_send_batches(db);
}

static void schedule_kick(pw_db_t *db)
{
    if (!h2o_timeout_is_linked(&db->kick))
        h2o_timeout_link(db->loop, &db->zero, &db->kick);
}

static int any_conn_ready(const pw_db_t *db)
{
    for (int i = 0; i < db->n_conns; i++)
        if (db->conns[i].state == DB_IDLE || db->conns[i].state == DB_BUSY)
            return 1;
    return 0;
}

/* ---- the socket ---- */

static void close_socket(pw_conn_t *c)
{
    if (c->sock != NULL) {
        h2o_socket_close(c->sock); /* closes our dup only */
        c->sock = NULL;
    }
    c->sock_fd = -1;
    c->want_write = 0;
}

/* (Re)wraps PQsocket() when it changed (libpq may switch sockets while connecting). */
static int wrap_socket(pw_conn_t *c)
{
    int fd = PQsocket(c->pg);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        return -1;
    if (c->sock != NULL && fd == c->sock_fd && st.st_ino == c->sock_ino)
        return 0;
    close_socket(c);
    int dupfd = dup(fd);
    if (dupfd < 0)
        return -1;
    c->sock = h2o_evloop_socket_create(c->db->loop, dupfd, H2O_SOCKET_FLAG_DONT_READ);
    c->sock->data = c;
    c->sock_fd = fd;
    c->sock_ino = st.st_ino;
    return 0;
}

static void on_writable(h2o_socket_t *sock, const char *err)
{
    pw_conn_t *c = sock->data;
    (void)err;
    c->want_write = 0;
    int rc = PQflush(c->pg);
    if (rc < 0) {
        conn_lost(c, PQerrorMessage(c->pg));
    } else if (rc == 1) {
        c->want_write = 1;
        h2o_socket_notify_write(c->sock, on_writable);
    }
}

/* Sends what libpq buffered; waits for writability when the socket is full. */
static int flush_output(pw_conn_t *c)
{
    int rc = PQflush(c->pg);
    if (rc < 0)
        return -1;
    if (rc == 1 && !c->want_write) {
        c->want_write = 1;
        h2o_socket_notify_write(c->sock, on_writable);
    }
    return 0;
}

/* ---- connecting ---- */

static void schedule_reconnect(pw_conn_t *c)
{
    c->backoff_ticks = c->backoff_ticks == 0 ? 1 : c->backoff_ticks * 2;
    if (c->backoff_ticks > PW_DB_MAX_BACKOFF_TICKS)
        c->backoff_ticks = PW_DB_MAX_BACKOFF_TICKS;
    c->retry_ticks_left = c->backoff_ticks;
    if (!h2o_timeout_is_linked(&c->retry_entry))
        h2o_timeout_link(c->db->loop, &c->db->retry, &c->retry_entry);
}

/*
 * The connection keywords. Those before dbname are defaults DATABASE_URL may override: TCP
 * keepalives and tcp_user_timeout, so a peer that vanished is noticed in about 10 s rather than
 * after minutes of retransmissions (TCP only; ignored on a Unix socket). client_encoding comes
 * after dbname, so it always holds: what is stored is the UTF-8 that was sent, whatever the
 * server's default (it is a parameter PgBouncer understands, unlike `options`).
 */
static const char *const connect_keys[] = {"application_name", "connect_timeout", "keepalives", "keepalives_idle",
                                           "keepalives_interval", "keepalives_count", "tcp_user_timeout", "dbname",
                                           "client_encoding", NULL};

static void start_connect(pw_conn_t *c)
{
    const char *vals[] = {"pushworker", "5", "1", "5", "2", "3", "10000", c->db->cfg->database_url, "UTF8", NULL};
    c->pg = PQconnectStartParams(connect_keys, vals, 1);
    c->sent_ms = pw_now_ms();
    c->limit_ms = PW_DB_CONNECT_LIMIT_MS;
    c->server_encoding[0] = '\0';
    if (c->pg == NULL) {
        pw_log_error("database: out of memory starting a connection");
        abort();
    }
    if (PQstatus(c->pg) == CONNECTION_BAD || wrap_socket(c) != 0) {
        conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
    c->state = DB_CONNECTING;
    /* The first wait is for writability (libpq's documented connect protocol). */
    c->want_write = 1;
    h2o_socket_notify_write(c->sock, on_connect_event);
}

static void on_retry(h2o_timeout_entry_t *entry)
{
    pw_conn_t *c = H2O_STRUCT_FROM_MEMBER(pw_conn_t, retry_entry, entry);
    if (--c->retry_ticks_left > 0) {
        h2o_timeout_link(c->db->loop, &c->db->retry, &c->retry_entry);
        return;
    }
    start_connect(c);
}

#define PW_SETUP_STMT "pw_setup"

static void send_prepares(pw_conn_t *c)
{
    /* Behind a transaction-mode pooler a prepared statement would be gone (or another client's)
       by the next transaction; a plain query still checks that the schema is there. Otherwise
       the statements are prepared, and the group's planned once (plan_cache_mode, set in each
       transaction by the setup statement): a custom plan per group cost the server about 1 ms
       more per transaction than executing it (measured: 1.46 ms against 0.40 ms for 16
       pushes), and the statement's plan does not depend on how many rows a group has. The first
       query reads the server's encoding (checked in on_prepared). */
    int sent = PQsendQueryParams(c->pg, "SELECT current_setting('server_encoding')", 0, NULL, NULL, NULL, NULL, 0);
    if (c->db->cfg->pooler_transaction)
        sent = sent && PQsendQueryParams(c->pg, "SELECT 1 FROM pubsub_receipts LIMIT 0", 0, NULL, NULL, NULL, NULL, 0);
    else
        sent = sent && PQsendPrepare(c->pg, PW_SETUP_STMT, c->db->setup_sql, 0, NULL) &&
               PQsendPrepare(c->pg, c->db->stmt->name, c->db->stmt->sql, c->db->stmt->ncols, NULL);
    if (!sent || !PQpipelineSync(c->pg) || flush_output(c) != 0) {
        conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
    c->syncs_pending = 1;
    c->query_at = 0;
    c->failed = 0;
    c->state = DB_PREPARING;
}

static void on_connect_event(h2o_socket_t *sock, const char *err)
{
    pw_conn_t *c = sock->data;
    (void)err;
    c->want_write = 0;
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        if (wrap_socket(c) != 0)
            goto failed;
        h2o_socket_read_start(c->sock, on_connect_event);
        return;
    case PGRES_POLLING_WRITING:
        if (wrap_socket(c) != 0)
            goto failed;
        h2o_socket_read_stop(c->sock);
        c->want_write = 1;
        h2o_socket_notify_write(c->sock, on_connect_event);
        return;
    case PGRES_POLLING_OK:
        if (wrap_socket(c) != 0 || PQsetnonblocking(c->pg, 1) != 0 || PQenterPipelineMode(c->pg) != 1)
            goto failed;
        h2o_socket_read_start(c->sock, on_readable);
        send_prepares(c);
        return;
    default:
        goto failed;
    }
failed:
    conn_lost(c, PQerrorMessage(c->pg));
}

/* ---- results ---- */

static int sqlstate_class_is(const pw_conn_t *c, const char *cls)
{
    return c->sqlstate[0] == cls[0] && c->sqlstate[1] == cls[1];
}

static void on_prepared(pw_conn_t *c)
{
    /* The encoding first: it was read by the first query, whatever failed after it. */
    if (c->server_encoding[0] != '\0' && strcmp(c->server_encoding, "UTF8") != 0) {
        /* Text would be converted to the server's encoding (or refused): not what was sent. */
        char why[200];
        snprintf(why, sizeof why,
                 "the database's server encoding is %s, not UTF8: refusing to write to it (create the database with"
                 " ENCODING 'UTF8')",
                 c->server_encoding);
        conn_lost(c, why);
        return;
    }
    if (c->failed) {
        char why[400];
        snprintf(why, sizeof why, "preparing statements failed (%s: %s); has `worker migrate` been run?", c->sqlstate,
                 c->errmsg);
        conn_lost(c, why);
        return;
    }
    if (c->server_encoding[0] == '\0') {
        conn_lost(c, "the server did not say its encoding");
        return;
    }
    c->state = DB_IDLE;
    c->idle_since_ms = pw_now_ms();
    c->backoff_ticks = 0;
    atomic_store(&c->db->ready, 1);
    pw_log_info("database: connected and ready (server %d)", PQserverVersion(c->pg));
    maybe_send_batches(c->db);
}

/* Answers the group's jobs 503 after logging why (not about the data: Pub/Sub redelivers). */
static void fail_batch(pw_conn_t *c)
{
    char esc[300];
    pw_log_error("database: group of %zu pushes failed (%s: %s); answering 503", c->b_len, c->sqlstate,
                 pw_log_escape(c->errmsg, esc, sizeof esc));
    complete_all(c->db, &c->b_head, &c->b_tail, 503);
    c->b_len = 0;
}

/* Puts the group back at the head of the queue, each push to be written alone. */
static void split_batch(pw_conn_t *c)
{
    for (pw_db_job_t *j = c->b_head; j != NULL; j = j->next)
        j->solo = 1;
    requeue_batch(c);
}

static void arm_backoff(pw_db_t *db)
{
    if (!h2o_timeout_is_linked(&db->backoff_entry))
        h2o_timeout_link(db->loop, &db->backoff, &db->backoff_entry);
}

/*
 * A serialization failure or deadlock. Nothing was written. A group is split: its pushes are
 * written one by one at once (the others are not held back by one that keeps failing). A push
 * that fails alone waits out of the queue for a jittered, doubling backoff, a bounded number of
 * times, then is answered 503.
 */
static void on_conflict(pw_conn_t *c)
{
    pw_db_t *db = c->db;
    if (c->b_len > 1) {
        pw_log_warning("database: group of %zu pushes hit %s; writing them one by one", c->b_len, c->sqlstate);
        split_batch(c);
        return;
    }
    pw_db_job_t *j = c->b_head;
    c->b_head = c->b_tail = NULL;
    c->b_len = 0;
    if (++j->attempts > PW_DB_MAX_CONFLICT_RETRIES) {
        pw_log_warning("database: a push hit %s %d times; answering 503", c->sqlstate, j->attempts);
        complete(db, j, 503);
        return;
    }
    db->rng = db->rng * 1103515245u + 12345u;
    double delay = (double)(PW_DB_CONFLICT_BACKOFF_MS << (j->attempts - 1));
    j->due_ms = pw_now_ms() + delay / 2 + (double)((db->rng >> 8) % 1000) * delay / 1000.0;
    j->solo = 1;
    list_push(&db->r_head, &db->r_tail, j);
    arm_backoff(db);
}

/* 1 when the error is about the data of a push (PostgreSQL refuses it: class 22, 23 or 54). */
static int refused_data(const pw_conn_t *c)
{
    return sqlstate_class_is(c, "22") || sqlstate_class_is(c, "23") || sqlstate_class_is(c, "54");
}

/* A push written alone was refused (accepted = 0), or passed a trial: its next rung, or 503. */
static void climb_ladder(pw_conn_t *c, int accepted)
{
    pw_db_job_t *j = c->b_head;
    if (!accepted && !j->push->dry_run && j->push->ladder == NULL)
        pw_log_warning("database: a push's rows were refused (%s); looking for what can be kept", c->sqlstate);
    if (pw_push_next_rung(j->push, accepted, c->sqlstate, c->errmsg)) {
        j->solo = 1; /* a trial is rolled back: never with another push */
        requeue_batch(c);
        return;
    }
    pw_log_error("database: a push was refused even as a bare dead letter (%s); answering 503", c->sqlstate);
    complete_all(c->db, &c->b_head, &c->b_tail, 503);
    c->b_len = 0;
}

/* The group's transaction ended: answer it, or decide how to retry it. */
static void on_batch_done(pw_conn_t *c)
{
    c->state = DB_IDLE;
    c->idle_since_ms = pw_now_ms();
    if (c->b_len == 0) {
        /* A probe: the server answers. An error on it means the session is not usable. */
        if (c->failed) {
            char why[400];
            snprintf(why, sizeof why, "the probe failed (%s: %s)", c->sqlstate, c->errmsg);
            conn_lost(c, why);
        }
        return;
    }
    int trial = c->b_len == 1 && c->b_head->push->dry_run;
    if (c->failed && !(trial && c->failed_query == PW_Q_ROLLBACK))
        pw_metrics_inc(&c->db->metrics->db_errors, 1);
    if (trial && c->failed && c->failed_query == PW_Q_ROLLBACK) {
        climb_ladder(c, 1); /* the statement passed; the trial was rolled back as meant */
    } else if (!c->failed) {
        assert(!trial);
        pw_metrics_observe_seconds(&c->db->metrics->db_tx_seconds, (pw_now_ms() - c->sent_ms) / 1000.0);
        pw_metrics_observe_count(&c->db->metrics->batch_pushes, (double)c->b_len);
        complete_all(c->db, &c->b_head, &c->b_tail, 204);
        c->b_len = 0;
    } else if (sqlstate_class_is(c, "40")) {
        on_conflict(c);
    } else if (strcmp(c->sqlstate, "55P03") == 0 || strcmp(c->sqlstate, "57014") == 0) {
        /* A lock not granted within lock_timeout, or the statement cancelled by statement_timeout:
           write the pushes one by one, so the others commit and only the one that waits fails. */
        if (c->b_len > 1) {
            pw_log_warning("database: group of %zu pushes hit %s; writing them one by one", c->b_len, c->sqlstate);
            split_batch(c);
        } else {
            char esc[300];
            pw_log_warning("database: a push hit %s (%s); answering 503", c->sqlstate,
                           pw_log_escape(c->errmsg, esc, sizeof esc));
            complete_all(c->db, &c->b_head, &c->b_tail, 503);
            c->b_len = 0;
        }
    } else if (!refused_data(c) || c->failed_query != PW_Q_MAIN) {
        fail_batch(c); /* not about the data (missing table, server shutting down...) */
    } else if (c->b_len > 1) {
        /* Some push's data was refused: write each push alone, so one cannot fail its neighbours. */
        split_batch(c);
    } else {
        climb_ladder(c, 0);
    }
    maybe_send_batches(c->db);
}

/* The statement's second column lists the batch_index of every push whose receipt it inserted. */
static void note_new_receipts(pw_conn_t *c, const PGresult *r)
{
    if (PQntuples(r) != 1 || PQnfields(r) < 2 || PQgetisnull(r, 0, 1))
        return;
    const char *p = PQgetvalue(r, 0, 1);
    pw_db_job_t *j = c->b_head;
    int at = 0;
    while (*p != '\0') {
        char *end;
        long idx = strtol(p, &end, 10);
        if (end == p)
            break;
        for (; j != NULL && at < idx; j = j->next, at++)
            ;
        if (j != NULL && at == idx)
            j->push->new_receipt = 1;
        p = *end == ',' ? end + 1 : end;
    }
}

static void note_error(pw_conn_t *c, const PGresult *r)
{
    if (c->failed)
        return;
    c->failed = 1;
    c->failed_query = c->query_at;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(c->sqlstate, sizeof c->sqlstate, "%s", state != NULL ? state : "XX000");
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    /* The message may end up in a dead letter's reason: cut it at a whole character. */
    pw_utf8_copy(c->errmsg, sizeof c->errmsg, msg != NULL ? msg : PQresultErrorMessage(r));
}

/* Reads every result available without blocking. */
static void read_results(pw_conn_t *c)
{
    while (c->syncs_pending > 0 && !PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (r == NULL) {
            c->query_at++; /* the end of one query's results */
            continue;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_FATAL_ERROR)
            note_error(c, r);
        else if (st == PGRES_TUPLES_OK && c->state == DB_BUSY && c->query_at == PW_Q_MAIN && c->b_len > 0 &&
                 !c->b_head->push->dry_run)
            note_new_receipts(c, r);
        else if (st == PGRES_TUPLES_OK && c->state == DB_PREPARING && c->query_at == 0 && PQntuples(r) == 1)
            snprintf(c->server_encoding, sizeof c->server_encoding, "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
        if (st == PGRES_PIPELINE_SYNC) {
            c->syncs_pending--;
            if (c->state == DB_PREPARING)
                on_prepared(c);
            else
                on_batch_done(c);
            return; /* the callbacks may have sent more; the next event continues */
        }
    }
}

static void on_readable(h2o_socket_t *sock, const char *err)
{
    pw_conn_t *c = sock->data;
    (void)err;
    if (!PQconsumeInput(c->pg) || PQstatus(c->pg) == CONNECTION_BAD) {
        conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
    /* The server may have been waiting for us to read before taking more of our output. */
    if (flush_output(c) != 0) {
        conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
    read_results(c);
    /* Drain notices and stray NOTIFYs so they do not accumulate. */
    PGnotify *n;
    while ((n = PQnotifies(c->pg)) != NULL)
        PQfreemem(n);
}

static void conn_lost(pw_conn_t *c, const char *why)
{
    char esc[512];
    pw_log_warning("database: connection unavailable (%s); its %zu push(es) in flight answered 503",
                   pw_log_escape(why != NULL ? why : "unknown", esc, sizeof esc), c->b_len);
    close_socket(c);
    if (c->pg != NULL) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    if (c->state != DB_DOWN && c->state != DB_CONNECTING)
        pw_metrics_inc(&c->db->metrics->db_reconnects, 1);
    c->state = DB_DOWN;
    c->syncs_pending = 0;
    complete_all(c->db, &c->b_head, &c->b_tail, 503);
    c->b_len = 0;
    /* The queue waits for the other connections, if any is still up; else Pub/Sub retries. */
    atomic_store(&c->db->ready, any_conn_ready(c->db));
    if (!any_conn_ready(c->db)) {
        complete_all(c->db, &c->db->q_head, &c->db->q_tail, 503);
        c->db->q_len = 0;
    }
    schedule_reconnect(c);
}

/* ---- sending a group ---- */

/* Takes queued jobs for one transaction: up to batch_max pushes and batch_max_bytes, or one solo push. */
static void take_batch(pw_conn_t *c)
{
    size_t bytes = 0;
    while (c->db->q_head != NULL && c->b_len < (size_t)c->db->cfg->batch_max && bytes < c->db->cfg->batch_max_bytes) {
        pw_db_job_t *j = c->db->q_head;
        if (j->solo && c->b_len > 0)
            break;
        c->db->q_head = j->next;
        if (c->db->q_head == NULL)
            c->db->q_tail = NULL;
        c->db->q_len--;
        if (j->abandoned) {
            complete(c->db, j, 503); /* already answered by its deadline; Pub/Sub will redeliver */
            continue;
        }
        list_push(&c->b_head, &c->b_tail, j);
        c->b_len++;
        bytes += j->push->raw_len;
        if (j->solo)
            break;
    }
}

/* Queues the setup statement (see pw_db_t.setup_sql) in the pipeline. */
static int send_setup(pw_conn_t *c)
{
    if (c->db->cfg->pooler_transaction)
        return PQsendQueryParams(c->pg, c->db->setup_sql, 0, NULL, NULL, NULL, NULL, 0);
    return PQsendQueryPrepared(c->pg, PW_SETUP_STMT, 0, NULL, NULL, NULL, 0);
}

/* Sends the pipeline queued since the last Sync; BUSY until its Sync comes back, within limit_ms. */
static void send_sync(pw_conn_t *c, int sent, int limit_ms)
{
    if (!sent || !PQpipelineSync(c->pg) || flush_output(c) != 0) {
        conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
    c->syncs_pending = 1;
    c->query_at = 0;
    c->failed = 0;
    c->state = DB_BUSY;
    c->sent_ms = pw_now_ms();
    c->limit_ms = limit_ms;
}

static void send_batch(pw_conn_t *c)
{
    if (c->state != DB_IDLE || c->db->q_head == NULL)
        return;
    take_batch(c);
    if (c->b_len == 0)
        return;
    assert(c->b_head != NULL);
    const pw_stmt_t *s = c->db->stmt;
    pw_cols_begin(&c->db->cols, s->ncols);
    int index = 0;
    for (pw_db_job_t *j = c->b_head; j != NULL; j = j->next) {
        assert(!j->push->dry_run || c->b_len == 1); /* a trial is rolled back: alone */
        j->push->batch_index = index++;
        j->push->new_receipt = 0;
        s->append(&c->db->cols, j->push);
    }
    pw_cols_finish(&c->db->cols);
    const char *values[PW_COLS_MAX];
    for (int k = 0; k < s->ncols; k++)
        values[k] = c->db->cols.col[k].base;
    /* The settings, the statement, then Sync: the implicit transaction commits at the Sync (a
       trial's last query fails, which rolls it back). */
    int sent = send_setup(c) &&
               (c->db->cfg->pooler_transaction ? PQsendQueryParams(c->pg, s->sql, s->ncols, NULL, values, NULL, NULL, 0)
                                               : PQsendQueryPrepared(c->pg, s->name, s->ncols, values, NULL, NULL, 0));
    if (sent && c->b_head->push->dry_run)
        sent = PQsendQueryParams(c->pg, "SELECT 1 / 0 AS pushworker_trial_rolls_back", 0, NULL, NULL, NULL, NULL, 0);
    send_sync(c, sent, c->db->cfg->statement_timeout_ms + PW_DB_ANSWER_GRACE_MS);
}

/* Gives a group to every idle connection while pushes are waiting. */
static void maybe_send_batches(pw_db_t *db)
{
    for (int i = 0; i < db->n_conns && db->q_head != NULL; i++)
        send_batch(&db->conns[i]);
}

/* ---- timers: conflicts' backoff, the watchdog ---- */

static int all_down(const pw_db_t *db)
{
    for (int i = 0; i < db->n_conns; i++)
        if (db->conns[i].state != DB_DOWN)
            return 0;
    return 1;
}

/* Conflicts whose backoff is over go to the end of the queue (never ahead of the others). */
static void on_backoff(h2o_timeout_entry_t *entry)
{
    pw_db_t *db = H2O_STRUCT_FROM_MEMBER(pw_db_t, backoff_entry, entry);
    double now = pw_now_ms();
    pw_db_job_t *j = db->r_head, *keep_head = NULL, *keep_tail = NULL;
    db->r_head = db->r_tail = NULL;
    while (j != NULL) {
        pw_db_job_t *next = j->next;
        if (j->abandoned || all_down(db)) {
            complete(db, j, 503);
        } else if (j->due_ms <= now) {
            list_push(&db->q_head, &db->q_tail, j);
            db->q_len++;
        } else {
            list_push(&keep_head, &keep_tail, j);
        }
        j = next;
    }
    db->r_head = keep_head;
    db->r_tail = keep_tail;
    if (db->r_head != NULL)
        arm_backoff(db);
    maybe_send_batches(db);
}

/* Asks an idle connection's server to answer (the setup statement, which writes nothing). */
static void send_probe(pw_conn_t *c)
{
    send_sync(c, send_setup(c), PW_DB_PROBE_LIMIT_MS);
}

static void on_watch(h2o_timeout_entry_t *entry)
{
    pw_db_t *db = H2O_STRUCT_FROM_MEMBER(pw_db_t, watch_entry, entry);
    double now = pw_now_ms();
    for (int i = 0; i < db->n_conns; i++) {
        pw_conn_t *c = &db->conns[i];
        if ((c->state == DB_CONNECTING || c->state == DB_PREPARING || c->state == DB_BUSY) &&
            now - c->sent_ms > c->limit_ms) {
            char why[160];
            snprintf(why, sizeof why, "no answer from the server within %d ms%s", c->limit_ms,
                     c->state == DB_BUSY ? "" : " of connecting");
            conn_lost(c, why);
        } else if (c->state == DB_IDLE && now - c->idle_since_ms >= PW_DB_PROBE_IDLE_MS) {
            send_probe(c);
        }
    }
    h2o_timeout_link(db->loop, &db->watch, &db->watch_entry);
}

/* ---- public ---- */

/* Queues a job on the home loop (or answers it 503 from the loop when the database is down or full). */
static void submit_here(pw_db_t *db, pw_db_job_t *job)
{
    job->next = NULL;
    job->attempts = 0;
    job->solo = 0;
    int down = all_down(db);
    if (db->closing) {
        complete(db, job, 503); /* only jobs of other loops get here: the answer is a message */
        return;
    }
    if (down || db->q_len >= (size_t)db->cfg->queue_max) {
        list_push(&db->d_head, &db->d_tail, job); /* 503 from the loop, not from here */
    } else {
        list_push(&db->q_head, &db->q_tail, job);
        db->q_len++;
    }
    schedule_kick(db);
}

/* Jobs from the other loops. */
static void on_inbox(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    pw_db_t *db = H2O_STRUCT_FROM_MEMBER(pw_db_t, inbox, receiver);
    while (!h2o_linklist_is_empty(messages)) {
        h2o_linklist_t *node = messages->next;
        assert(node->next != NULL && node->prev == messages); /* a circular list: every node is linked both ways */
        h2o_linklist_unlink(node);
        submit_here(db, H2O_STRUCT_FROM_MEMBER(pw_db_job_t, msg.link, node));
    }
}

/* Answers, back on the loop the jobs came from. */
static void on_answers(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        pw_db_job_t *j = H2O_STRUCT_FROM_MEMBER(pw_db_job_t, msg.link, messages->next);
        h2o_linklist_unlink(&j->msg.link);
        j->on_done(j, j->status);
    }
}

pw_db_t *pw_db_new(h2o_context_t *ctx, const pw_config_t *cfg, pw_metrics_t *metrics)
{
    pw_db_t *db = pw_xcalloc(1, sizeof *db);
    h2o_loop_t *loop = ctx->loop;
    db->loop = loop;
    db->cfg = cfg;
    db->metrics = metrics;
    db->stmt = pw_dispatch_statement();
    db->n_conns = cfg->db_connections;
    db->conns = pw_xcalloc((size_t)db->n_conns, sizeof *db->conns);
    h2o_multithread_register_receiver(ctx->queue, &db->inbox, on_inbox);
    h2o_timeout_init(loop, &db->zero, 0);
    h2o_timeout_init(loop, &db->retry, PW_DB_RETRY_TICK_MS);
    h2o_timeout_init(loop, &db->backoff, PW_DB_BACKOFF_TICK_MS);
    h2o_timeout_init(loop, &db->watch, PW_DB_WATCH_TICK_MS);
    db->kick.cb = on_kick;
    db->backoff_entry.cb = on_backoff;
    db->watch_entry.cb = on_watch;
    db->rng = (unsigned)getpid() ^ (unsigned)pw_now_ms();
    /* plan_cache_mode only matters for the prepared statement, but is harmless for an unnamed one. */
    snprintf(db->setup_sql, sizeof db->setup_sql,
             "SELECT set_config('lock_timeout', '%d', true), set_config('statement_timeout', '%d', true),"
             " set_config('plan_cache_mode', 'force_generic_plan', true)",
             cfg->lock_timeout_ms, cfg->statement_timeout_ms);
    h2o_timeout_link(loop, &db->watch, &db->watch_entry);
    for (int i = 0; i < db->n_conns; i++) {
        pw_conn_t *c = &db->conns[i];
        c->db = db;
        c->sock_fd = -1;
        c->retry_entry.cb = on_retry;
        start_connect(c);
    }
    return db;
}

pw_db_port_t *pw_db_port_new(pw_db_t *db, h2o_context_t *ctx, int home)
{
    pw_db_port_t *port = pw_xcalloc(1, sizeof *port);
    port->db = db;
    port->home = home;
    port->queue = ctx->queue;
    if (!home)
        h2o_multithread_register_receiver(ctx->queue, &port->answers, on_answers);
    return port;
}

void pw_db_submit(pw_db_port_t *port, pw_db_job_t *job)
{
    atomic_fetch_add(&port->db->outstanding, 1);
    if (port->home) {
        job->port = NULL;
        submit_here(port->db, job);
    } else {
        job->port = port;
        h2o_multithread_send_message(&port->db->inbox, &job->msg);
    }
}

long pw_db_outstanding(const pw_db_t *db)
{
    return atomic_load(&((pw_db_t *)db)->outstanding);
}

int pw_db_ready(const pw_db_t *db)
{
    return atomic_load(&((pw_db_t *)db)->ready);
}

void pw_db_port_free(pw_db_port_t *port)
{
    if (port == NULL)
        return;
    if (!port->home)
        h2o_multithread_unregister_receiver(port->queue, &port->answers);
    free(port);
}

void pw_db_free(pw_db_t *db)
{
    if (db == NULL)
        return;
    db->closing = 1;
    h2o_timeout_unlink(&db->kick);
    h2o_timeout_unlink(&db->backoff_entry);
    h2o_timeout_unlink(&db->watch_entry);
    complete_all(db, &db->d_head, &db->d_tail, 503);
    complete_all(db, &db->q_head, &db->q_tail, 503);
    complete_all(db, &db->r_head, &db->r_tail, 503);
    for (int i = 0; i < db->n_conns; i++) {
        pw_conn_t *c = &db->conns[i];
        h2o_timeout_unlink(&c->retry_entry);
        complete_all(db, &c->b_head, &c->b_tail, 503);
        close_socket(c);
        if (c->pg != NULL)
            PQfinish(c->pg);
        c->pg = NULL;
        c->state = DB_DOWN;
    }
    atomic_store(&db->ready, 0);
    /* Jobs other loops sent before they stopped submitting may still be in the inbox: answer them. */
    for (int spins = 0; atomic_load(&db->outstanding) > 0 && spins < 1000; spins++)
        h2o_evloop_run(db->loop, 1);
    if (atomic_load(&db->outstanding) > 0)
        pw_log_error("database: %ld job(s) never came back to be answered", atomic_load(&db->outstanding));
    h2o_multithread_unregister_receiver(db->inbox.queue, &db->inbox);
    h2o_timeout_dispose(db->loop, &db->zero);
    h2o_timeout_dispose(db->loop, &db->retry);
    h2o_timeout_dispose(db->loop, &db->backoff);
    h2o_timeout_dispose(db->loop, &db->watch);
    pw_cols_dispose(&db->cols);
    free(db->conns);
    free(db);
}
