/* Async libpq inside an h2o event loop: one pipelined connection per loop, group commit, reconnect with backoff. */
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
/* A group that deadlocks is retried as it is this many times, then push by push. */
#define PW_DB_MAX_CONFLICT_RETRIES 3

typedef enum { DB_DOWN, DB_CONNECTING, DB_PREPARING, DB_IDLE, DB_BUSY } db_state_t;

struct pw_db {
    h2o_loop_t *loop;
    const pw_config_t *cfg;
    pw_metrics_t *metrics;
    const pw_stmt_t *stmt; /* the one statement a group is written with */

    PGconn *pg;
    h2o_socket_t *sock; /* wraps dup(PQsocket(pg)), so closing it never closes libpq's fd */
    int sock_fd;        /* the PQsocket() the wrapper was made for */
    ino_t sock_ino;     /* and its socket's inode: libpq may reuse the fd number for a new socket */
    int want_write;     /* a write notification is armed */
    db_state_t state;

    pw_db_job_t *q_head, *q_tail; /* waiting for the connection */
    size_t q_len;
    pw_db_job_t *b_head, *b_tail; /* the group in flight */
    size_t b_len;
    int syncs_pending;
    int failed;                   /* the group (or the PREPAREs) got an error */
    double sent_ms;               /* when the group was sent */
    char sqlstate[6];
    char errmsg[256];

    pw_db_job_t *d_head, *d_tail; /* answered from the loop, not from inside pw_db_submit */
    h2o_timeout_t zero;
    h2o_timeout_entry_t kick;
    h2o_timeout_t retry;
    h2o_timeout_entry_t retry_entry;
    int retry_ticks_left, backoff_ticks;

    pw_cols_t cols;
};

static void on_readable(h2o_socket_t *sock, const char *err);
static void on_connect_event(h2o_socket_t *sock, const char *err);
static void conn_lost(pw_db_t *db, const char *why);
static void maybe_send_batch(pw_db_t *db);

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

static void complete(pw_db_job_t *j, int status)
{
    j->on_done(j, status);
}

/* Answers every job of a list with status. */
static void complete_all(pw_db_job_t **head, pw_db_job_t **tail, int status)
{
    pw_db_job_t *j = *head;
    *head = *tail = NULL;
    while (j != NULL) {
        pw_db_job_t *next = j->next;
        complete(j, status);
        j = next;
    }
}

/* Puts the in-flight group back at the head of the queue, in order. */
static void requeue_batch(pw_db_t *db)
{
    if (db->b_head == NULL)
        return;
    db->b_tail->next = db->q_head;
    if (db->q_head == NULL)
        db->q_tail = db->b_tail;
    db->q_head = db->b_head;
    db->q_len += db->b_len;
    db->b_head = db->b_tail = NULL;
    db->b_len = 0;
}

static void on_kick(h2o_timeout_entry_t *entry)
{
    pw_db_t *db = H2O_STRUCT_FROM_MEMBER(pw_db_t, kick, entry);
    complete_all(&db->d_head, &db->d_tail, 503);
    maybe_send_batch(db);
}

static void schedule_kick(pw_db_t *db)
{
    if (!h2o_timeout_is_linked(&db->kick))
        h2o_timeout_link(db->loop, &db->zero, &db->kick);
}

/* ---- the socket ---- */

static void close_socket(pw_db_t *db)
{
    if (db->sock != NULL) {
        h2o_socket_close(db->sock); /* closes our dup only */
        db->sock = NULL;
    }
    db->sock_fd = -1;
    db->want_write = 0;
}

/* (Re)wraps PQsocket() when it changed (libpq may switch sockets while connecting). */
static int wrap_socket(pw_db_t *db)
{
    int fd = PQsocket(db->pg);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        return -1;
    if (db->sock != NULL && fd == db->sock_fd && st.st_ino == db->sock_ino)
        return 0;
    close_socket(db);
    int dupfd = dup(fd);
    if (dupfd < 0)
        return -1;
    db->sock = h2o_evloop_socket_create(db->loop, dupfd, H2O_SOCKET_FLAG_DONT_READ);
    db->sock->data = db;
    db->sock_fd = fd;
    db->sock_ino = st.st_ino;
    return 0;
}

static void on_writable(h2o_socket_t *sock, const char *err)
{
    pw_db_t *db = sock->data;
    (void)err;
    db->want_write = 0;
    int rc = PQflush(db->pg);
    if (rc < 0) {
        conn_lost(db, PQerrorMessage(db->pg));
    } else if (rc == 1) {
        db->want_write = 1;
        h2o_socket_notify_write(db->sock, on_writable);
    }
}

/* Sends what libpq buffered; waits for writability when the socket is full. */
static int flush_output(pw_db_t *db)
{
    int rc = PQflush(db->pg);
    if (rc < 0)
        return -1;
    if (rc == 1 && !db->want_write) {
        db->want_write = 1;
        h2o_socket_notify_write(db->sock, on_writable);
    }
    return 0;
}

/* ---- connecting ---- */

static void schedule_reconnect(pw_db_t *db)
{
    db->backoff_ticks = db->backoff_ticks == 0 ? 1 : db->backoff_ticks * 2;
    if (db->backoff_ticks > PW_DB_MAX_BACKOFF_TICKS)
        db->backoff_ticks = PW_DB_MAX_BACKOFF_TICKS;
    db->retry_ticks_left = db->backoff_ticks;
    if (!h2o_timeout_is_linked(&db->retry_entry))
        h2o_timeout_link(db->loop, &db->retry, &db->retry_entry);
}

static void start_connect(pw_db_t *db)
{
    const char *keys[] = {"application_name", "dbname", NULL};
    const char *vals[] = {"pushworker", db->cfg->database_url, NULL};
    db->pg = PQconnectStartParams(keys, vals, 1);
    if (db->pg == NULL) {
        pw_log_error("database: out of memory starting a connection");
        abort();
    }
    if (PQstatus(db->pg) == CONNECTION_BAD || wrap_socket(db) != 0) {
        conn_lost(db, PQerrorMessage(db->pg));
        return;
    }
    db->state = DB_CONNECTING;
    /* The first wait is for writability (libpq's documented connect protocol). */
    db->want_write = 1;
    h2o_socket_notify_write(db->sock, on_connect_event);
}

static void on_retry(h2o_timeout_entry_t *entry)
{
    pw_db_t *db = H2O_STRUCT_FROM_MEMBER(pw_db_t, retry_entry, entry);
    if (--db->retry_ticks_left > 0) {
        h2o_timeout_link(db->loop, &db->retry, &db->retry_entry);
        return;
    }
    start_connect(db);
}

static void send_prepares(pw_db_t *db)
{
    /* Behind a transaction-mode pooler a prepared statement would be gone (or another client's)
       by the next transaction; a plain query still checks that the schema is there. */
    int sent = db->cfg->pooler_transaction ? PQsendQueryParams(db->pg, "SELECT 1 FROM pubsub_receipts LIMIT 0", 0, NULL, NULL,
                                                               NULL, NULL, 0)
                                           : PQsendPrepare(db->pg, db->stmt->name, db->stmt->sql, db->stmt->ncols, NULL);
    if (!sent || !PQpipelineSync(db->pg) || flush_output(db) != 0) {
        conn_lost(db, PQerrorMessage(db->pg));
        return;
    }
    db->syncs_pending = 1;
    db->failed = 0;
    db->state = DB_PREPARING;
}

static void on_connect_event(h2o_socket_t *sock, const char *err)
{
    pw_db_t *db = sock->data;
    (void)err;
    db->want_write = 0;
    switch (PQconnectPoll(db->pg)) {
    case PGRES_POLLING_READING:
        if (wrap_socket(db) != 0)
            goto failed;
        h2o_socket_read_start(db->sock, on_connect_event);
        return;
    case PGRES_POLLING_WRITING:
        if (wrap_socket(db) != 0)
            goto failed;
        h2o_socket_read_stop(db->sock);
        db->want_write = 1;
        h2o_socket_notify_write(db->sock, on_connect_event);
        return;
    case PGRES_POLLING_OK:
        if (wrap_socket(db) != 0 || PQsetnonblocking(db->pg, 1) != 0 || PQenterPipelineMode(db->pg) != 1)
            goto failed;
        h2o_socket_read_start(db->sock, on_readable);
        send_prepares(db);
        return;
    default:
        goto failed;
    }
failed:
    conn_lost(db, PQerrorMessage(db->pg));
}

/* ---- results ---- */

static int sqlstate_class_is(const pw_db_t *db, const char *cls)
{
    return db->sqlstate[0] == cls[0] && db->sqlstate[1] == cls[1];
}

static void on_prepared(pw_db_t *db)
{
    if (db->failed) {
        char why[400];
        snprintf(why, sizeof why, "preparing statements failed (%s: %s); has `worker migrate` been run?", db->sqlstate,
                 db->errmsg);
        conn_lost(db, why);
        return;
    }
    db->state = DB_IDLE;
    db->backoff_ticks = 0;
    pw_log_info("database: connected and ready (server %d)", PQserverVersion(db->pg));
    maybe_send_batch(db);
}

/* The group's transaction ended: answer it, or decide how to retry it. */
static void on_batch_done(pw_db_t *db)
{
    db->state = DB_IDLE;
    if (db->failed)
        pw_metrics_inc(&db->metrics->db_errors, 1);
    if (!db->failed) {
        pw_metrics_observe_seconds(&db->metrics->db_tx_seconds, (pw_now_ms() - db->sent_ms) / 1000.0);
        pw_metrics_observe_count(&db->metrics->batch_pushes, (double)db->b_len);
        complete_all(&db->b_head, &db->b_tail, 204);
        db->b_len = 0;
    } else if (sqlstate_class_is(db, "40")) {
        /* Deadlock or serialization failure between concurrent groups: nothing was written; retry. */
        for (pw_db_job_t *j = db->b_head; j != NULL; j = j->next)
            if (++j->attempts > PW_DB_MAX_CONFLICT_RETRIES)
                j->solo = 1;
        pw_log_warning("database: group of %zu pushes hit %s, retrying", db->b_len, db->sqlstate);
        requeue_batch(db);
    } else if (!sqlstate_class_is(db, "22") && !sqlstate_class_is(db, "23") && !sqlstate_class_is(db, "54")) {
        /* Not about the data (missing table, server shutting down...): let Pub/Sub redeliver. */
        char esc[300];
        pw_log_error("database: group of %zu pushes failed (%s: %s); answering 503", db->b_len, db->sqlstate,
                     pw_log_escape(db->errmsg, esc, sizeof esc));
        complete_all(&db->b_head, &db->b_tail, 503);
        db->b_len = 0;
    } else if (db->b_len > 1) {
        /* Some push's data was refused: write each push alone, so one cannot fail its neighbours. */
        for (pw_db_job_t *j = db->b_head; j != NULL; j = j->next)
            j->solo = 1;
        requeue_batch(db);
    } else {
        pw_db_job_t *j = db->b_head;
        if (j->push->outcome == PW_OUTCOME_DEAD_LETTER && j->attempts >= 100) {
            complete_all(&db->b_head, &db->b_tail, 503); /* even the dead letter was refused */
            db->b_len = 0;
        } else {
            char why[300];
            snprintf(why, sizeof why, "%s: %s", db->sqlstate, db->errmsg);
            pw_log_warning("database: a push's rows were refused (%s); keeping it as a dead letter", db->sqlstate);
            pw_push_make_dead_letter(j->push, why);
            j->attempts = 100;
            requeue_batch(db);
        }
    }
    maybe_send_batch(db);
}

/* The statement's second column lists the batch_index of every push whose receipt it inserted. */
static void note_new_receipts(pw_db_t *db, const PGresult *r)
{
    if (PQntuples(r) != 1 || PQnfields(r) < 2 || PQgetisnull(r, 0, 1))
        return;
    const char *p = PQgetvalue(r, 0, 1);
    pw_db_job_t *j = db->b_head;
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

static void note_error(pw_db_t *db, const PGresult *r)
{
    if (db->failed)
        return;
    db->failed = 1;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(db->sqlstate, sizeof db->sqlstate, "%s", state != NULL ? state : "XX000");
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    snprintf(db->errmsg, sizeof db->errmsg, "%s", msg != NULL ? msg : PQresultErrorMessage(r));
}

/* Reads every result available without blocking. */
static void read_results(pw_db_t *db)
{
    while (db->syncs_pending > 0 && !PQisBusy(db->pg)) {
        PGresult *r = PQgetResult(db->pg);
        if (r == NULL)
            continue; /* the end of one statement's results */
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_FATAL_ERROR)
            note_error(db, r);
        else if (st == PGRES_TUPLES_OK && db->state == DB_BUSY)
            note_new_receipts(db, r);
        PQclear(r);
        if (st == PGRES_PIPELINE_SYNC) {
            db->syncs_pending--;
            if (db->state == DB_PREPARING)
                on_prepared(db);
            else
                on_batch_done(db);
            return; /* the callbacks may have sent more; the next event continues */
        }
    }
}

static void on_readable(h2o_socket_t *sock, const char *err)
{
    pw_db_t *db = sock->data;
    (void)err;
    if (!PQconsumeInput(db->pg) || PQstatus(db->pg) == CONNECTION_BAD) {
        conn_lost(db, PQerrorMessage(db->pg));
        return;
    }
    /* The server may have been waiting for us to read before taking more of our output. */
    if (flush_output(db) != 0) {
        conn_lost(db, PQerrorMessage(db->pg));
        return;
    }
    read_results(db);
    /* Drain notices and stray NOTIFYs so they do not accumulate. */
    PGnotify *n;
    while ((n = PQnotifies(db->pg)) != NULL)
        PQfreemem(n);
}

static void conn_lost(pw_db_t *db, const char *why)
{
    char esc[512];
    pw_log_warning("database: connection unavailable (%s); %zu in flight and %zu queued answered 503",
                   pw_log_escape(why != NULL ? why : "unknown", esc, sizeof esc), db->b_len, db->q_len);
    close_socket(db);
    if (db->pg != NULL) {
        PQfinish(db->pg);
        db->pg = NULL;
    }
    if (db->state != DB_DOWN && db->state != DB_CONNECTING)
        pw_metrics_inc(&db->metrics->db_reconnects, 1);
    db->state = DB_DOWN;
    db->syncs_pending = 0;
    complete_all(&db->b_head, &db->b_tail, 503);
    db->b_len = 0;
    complete_all(&db->q_head, &db->q_tail, 503);
    db->q_len = 0;
    schedule_reconnect(db);
}

/* ---- sending a group ---- */

/* Takes queued jobs for one transaction: up to batch_max pushes and batch_max_bytes, or one solo push. */
static void take_batch(pw_db_t *db)
{
    size_t bytes = 0;
    while (db->q_head != NULL && db->b_len < (size_t)db->cfg->batch_max && bytes < db->cfg->batch_max_bytes) {
        pw_db_job_t *j = db->q_head;
        if (j->solo && db->b_len > 0)
            break;
        db->q_head = j->next;
        if (db->q_head == NULL)
            db->q_tail = NULL;
        db->q_len--;
        if (j->abandoned) {
            complete(j, 503); /* already answered by its deadline; Pub/Sub will redeliver */
            continue;
        }
        list_push(&db->b_head, &db->b_tail, j);
        db->b_len++;
        bytes += j->push->raw_len;
        if (j->solo)
            break;
    }
}

static void maybe_send_batch(pw_db_t *db)
{
    if (db->state != DB_IDLE || db->q_head == NULL)
        return;
    take_batch(db);
    if (db->b_len == 0)
        return;
    const pw_stmt_t *s = db->stmt;
    pw_cols_begin(&db->cols, s->ncols);
    int index = 0;
    for (pw_db_job_t *j = db->b_head; j != NULL; j = j->next) {
        j->push->batch_index = index++;
        j->push->new_receipt = 0;
        s->append(&db->cols, j->push);
    }
    pw_cols_finish(&db->cols);
    const char *values[PW_COLS_MAX];
    for (int c = 0; c < s->ncols; c++)
        values[c] = db->cols.col[c].base;
    /* One statement, then Sync: the implicit transaction commits at the Sync. */
    int sent = db->cfg->pooler_transaction ? PQsendQueryParams(db->pg, s->sql, s->ncols, NULL, values, NULL, NULL, 0)
                                           : PQsendQueryPrepared(db->pg, s->name, s->ncols, values, NULL, NULL, 0);
    if (!sent || !PQpipelineSync(db->pg) || flush_output(db) != 0) {
        conn_lost(db, PQerrorMessage(db->pg));
        return;
    }
    db->syncs_pending = 1;
    db->failed = 0;
    db->state = DB_BUSY;
    db->sent_ms = pw_now_ms();
}

/* ---- public ---- */

pw_db_t *pw_db_new(h2o_loop_t *loop, const pw_config_t *cfg, pw_metrics_t *metrics)
{
    pw_db_t *db = pw_xcalloc(1, sizeof *db);
    db->loop = loop;
    db->cfg = cfg;
    db->metrics = metrics;
    db->stmt = pw_dispatch_statement();
    db->sock_fd = -1;
    h2o_timeout_init(loop, &db->zero, 0);
    h2o_timeout_init(loop, &db->retry, PW_DB_RETRY_TICK_MS);
    db->kick.cb = on_kick;
    db->retry_entry.cb = on_retry;
    start_connect(db);
    return db;
}

void pw_db_submit(pw_db_t *db, pw_db_job_t *job)
{
    job->next = NULL;
    job->attempts = 0;
    job->solo = 0;
    if (db->state == DB_DOWN || db->q_len >= (size_t)db->cfg->queue_max) {
        list_push(&db->d_head, &db->d_tail, job); /* 503 from the loop, not from here */
    } else {
        list_push(&db->q_head, &db->q_tail, job);
        db->q_len++;
    }
    schedule_kick(db);
}

int pw_db_ready(const pw_db_t *db)
{
    return db->state == DB_IDLE || db->state == DB_BUSY;
}

size_t pw_db_pending(const pw_db_t *db)
{
    return db->q_len + db->b_len;
}

void pw_db_free(pw_db_t *db)
{
    if (db == NULL)
        return;
    h2o_timeout_unlink(&db->kick);
    h2o_timeout_unlink(&db->retry_entry);
    complete_all(&db->d_head, &db->d_tail, 503);
    complete_all(&db->b_head, &db->b_tail, 503);
    complete_all(&db->q_head, &db->q_tail, 503);
    close_socket(db);
    if (db->pg != NULL)
        PQfinish(db->pg);
    h2o_timeout_dispose(db->loop, &db->zero);
    h2o_timeout_dispose(db->loop, &db->retry);
    pw_cols_dispose(&db->cols);
    free(db);
}
