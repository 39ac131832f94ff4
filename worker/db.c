/* Db: the group-commit executor (worker/db.h): its own thread and loop, DB_CONNECTIONS pipelined async libpq connections, reconnect with backoff. */
#include "worker/db.h"

#include <assert.h>
#include <libpq-fe.h>
#include <pthread.h>
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
/* A job that hits a serialization failure or deadlock alone is retried this many times, after
   PW_DB_CONFLICT_BACKOFF_MS, doubling, jittered (about 50 + 100 + 200 + 400 + 800 ms), then
   answered PW_ECONFLICT. */
#define PW_DB_MAX_CONFLICT_RETRIES 5
#define PW_DB_CONFLICT_BACKOFF_MS 50
#define PW_DB_BACKOFF_TICK_MS 10
/*
 * The watchdog (a timer, off the hot path): every tick it drops a connection whose request has
 * waited longer than its limit (a stopped server, a silent network partition: TCP alone would
 * take minutes), and sends a probe on a connection idle for PW_DB_PROBE_IDLE_MS, so an idle
 * process also notices, and pw_db_ready says so. A group's limit is the statement timeout (the
 * server cancels it by then) plus PW_DB_ANSWER_GRACE_MS.
 */
#define PW_DB_WATCH_TICK_MS 250
#define PW_DB_PROBE_IDLE_MS 1000
#define PW_DB_PROBE_LIMIT_MS 2000
#define PW_DB_CONNECT_LIMIT_MS 5000
#define PW_DB_ANSWER_GRACE_MS 1000
/* A connection's values for the after statement (pw_db_stmt_t.after_sql) wait this long from the
   first of them, so that one run of it serves the groups committed meanwhile, and it goes at the
   head of a group's pipeline when one comes in that time (no pipeline of its own): run unprepared
   for every group, it raised the p50 of 3,000 pushes/s on one connection by 0.2-0.5 ms
   (BENCHMARKS.md, "Announcements after the commit"). When the group that committed was all the
   executor had in hand, they go at once (answer_last_group). */
#define PW_DB_AFTER_WAIT_MS 5
/* At a stop, the after statements still to run (pw_db_stmt_t.after_sql) are waited for this long at most. */
#define PW_DB_STOP_AFTER_MS 1000
/* The queries of a group's pipeline, before its Sync: the PREPARE of the statement's variant
   when the connection has not prepared it yet, the settings, the statement (at q_main), and for a
   trial a query that fails (at q_main + 1), so that the implicit transaction is rolled back. */

typedef enum { DB_DOWN, DB_CONNECTING, DB_PREPARING, DB_IDLE, DB_BUSY } db_state_t;

/* One connection: it writes one group at a time. */
typedef struct {
    pw_db_t *db;
    PGconn *pg;
    h2o_socket_t *sock; /* wraps dup(PQsocket(pg)), so closing it never closes libpq's fd */
    int sock_fd;        /* the PQsocket() the wrapper was made for */
    ino_t sock_ino;     /* and its socket's inode: libpq may reuse the fd number for a new socket */
    int want_write;     /* a write notification is armed */
    db_state_t state;

    h2o_linklist_t queued; /* its jobs waiting (those of its shards: see route) */
    h2o_linklist_t group;  /* the jobs in flight */
    size_t group_len;
    int syncs_pending;
    int query_at;         /* the query of the pipeline whose results are being read (from 0) */
    int q_main;           /* the group's statement in the pipeline (-1: a probe or the warm-up) */
    int q_prepare;        /* the PREPARE of its variant (-1: none) */
    unsigned parts;       /* the variant the group runs (pw_db_stmt_t.nparts > 0) */
    uint64_t prepared;    /* the variants this session has prepared (bit: their parts) */
    int warm_step;        /* the warm-up's next step (send_warmup): 0 the statement, k its warm[k - 1]; -1 none left */
    int warming;          /* the pipeline in flight is a step of the warm-up */
    double warm_since_ms; /* when its first step was sent */
    int failed;           /* the group (or the PREPAREs) got an error */
    int failed_query;     /* and in which query */
    double sent_ms;       /* when the group (or probe, or connection attempt) was sent */
    int limit_ms;         /* how long it may wait for its answer (the watchdog) */
    double idle_since_ms; /* when the connection last finished something */
    char sqlstate[6];
    char errmsg[200];         /* valid UTF-8: cut at a whole character */
    char server_encoding[32]; /* as the server reported it while preparing */
    /* The statement's after statement (pw_db_stmt_t.after_sql): the values of the groups that
       committed since it last ran (a binary text[] array, the 20 bytes of its header first), until
       they are due and sent at the head of a pipeline; then how many that pipeline runs it with. */
    pw_buf_t after;
    uint32_t after_count;
    double after_due_ms;       /* when they are due (PW_DB_AFTER_WAIT_MS after the first) */
    size_t after_mark;         /* after.len and after_count before the group in flight added its own */
    uint32_t after_mark_count;
    uint32_t after_sent;       /* 0: the pipeline in flight has no after statement */
    int q_after;               /* its query in that pipeline */
    char after_state[6];       /* the SQLSTATE it failed with; empty: it has not failed */

    h2o_timeout_entry_t retry_entry;
    int retry_ticks_left, backoff_ticks;
} db_conn_t;

/*
 * The executor: DB_CONNECTIONS connections, which every loop feeds. Each job goes to the
 * connection of its shard (route): jobs of one shard are written by one connection, one group
 * after another, so two groups in flight never wait on each other's row locks when the
 * submitter's shards follow its rows (a hash of the rows' key). While a group waits for its
 * COMMIT, another connection can send the next. One executor for all loops rather than one per
 * loop: groups of every loop's jobs, and fewer connections.
 *
 * Jobs reach the thread through a list of their own (in_jobs), and a submission wakes the thread
 * (the bell: a pipe write, then the thread's epoll_wait and read) only when the thread has a use
 * for a job at once: a connection idle, or jobs to answer without the server (closing, every
 * connection down, the queues full). While every connection has a group in flight the jobs
 * wait in the list, and the thread takes them all when a group ends, as it sends the next one.
 * With one message per job (h2o's multithread queue) nearly every push woke the thread, which
 * had nothing to do with it but queue it (BENCHMARKS.md: "One wake-up per group").
 */
struct pw_db {
    pthread_t tid;
    h2o_loop_t *loop;
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t bell;    /* wakes the thread (no message: see pw_db_submit) */
    h2o_multithread_receiver_t control; /* drain and stop */
    h2o_multithread_message_t drain_msg, stop_msg;
    int stopping; /* the stop message has come (the thread's own) */
    _Atomic int ready;         /* pw_db_ready(), for every thread */
    _Atomic long outstanding;  /* submitted, not yet answered */
    _Atomic double drain_at;   /* pw_db_drain's deadline, 0 when none */
    int closing;               /* the drain deadline has passed, or stopping: every job is answered at once */
    const pw_config_t *cfg;
    const pw_db_stmt_t *stmt;
    pw_metrics_t *metrics;
    db_conn_t *conns;
    int n_conns;

    size_t queued_len;      /* jobs waiting in every connection's queue */

    /* Jobs submitted and not yet taken by the thread (see above), under in_mutex. */
    pthread_mutex_t in_mutex;
    h2o_linklist_t in_jobs;
    size_t in_len;
    int in_bell;              /* the next submission rings the bell */
    size_t in_bell_len;       /* and so does the one that makes in_len this long (the room left in the queues) */
    _Atomic unsigned long bells; /* rung so far (for the tests) */
    h2o_linklist_t waiting; /* conflicts waiting for their backoff (due_ms), not in the queue */

    h2o_timeout_t retry;
    h2o_timeout_t backoff;
    h2o_timeout_entry_t backoff_entry;
    h2o_timeout_t watch;
    h2o_timeout_entry_t watch_entry;
    h2o_timeout_t after_wait; /* PW_DB_AFTER_WAIT_MS */
    h2o_timeout_entry_t after_entry;
    unsigned rng; /* for the jitter */

    /* Run at the start of every group's transaction: the timeouts, the plan cache mode and
       enable_seqscan off, set LOCAL (set_config(..., true)), so they hold behind a
       transaction-mode pooler and cannot leak into the next client of a pooled server
       connection; also the probe. The statement is planned once per connection (a generic
       plan), perhaps while its tables are empty, when reading a table whole costs the planner
       nothing; that plan then stays while the tables grow, and every group would read them
       whole. enable_seqscan off leaves the planner an index for every row a group writes or
       looks up (tests/integration/plan_test counts the scans). */
    char setup_sql[320];

    pw_buf_t params[PW_DB_COLS_MAX]; /* a group's joined arrays, reused (libpq copies them when sending) */
};

/* A loop's way in; answers come back to it through its receiver. */
struct pw_db_port {
    pw_db_t *db;
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t answers;
};

static void on_readable(h2o_socket_t *sock, const char *err);
static void on_connect_event(h2o_socket_t *sock, const char *err);
static void send_sync(db_conn_t *c, int sent, int limit_ms);
static void conn_lost(db_conn_t *c, const char *why);
static void maybe_send_groups(pw_db_t *db);

/* ---- answers ---- */

static pw_db_job_t *job_of(h2o_linklist_t *node)
{
    return H2O_STRUCT_FROM_MEMBER(pw_db_job_t, link, node);
}

/* Answers a job, by a message to the thread of its port. */
static void complete(pw_db_t *db, pw_db_job_t *j, int result, const char *sqlstate, const char *message)
{
    if (h2o_linklist_is_linked(&j->link))
        h2o_linklist_unlink(&j->link);
    j->result = result;
    size_t n = sqlstate != NULL ? strnlen(sqlstate, sizeof j->sqlstate - 1) : 0; /* five ASCII characters, or none */
    memcpy(j->sqlstate, sqlstate != NULL ? sqlstate : "", n);
    j->sqlstate[n] = '\0';
    pw_utf8_copy(j->message, sizeof j->message, message != NULL ? message : "");
    atomic_fetch_sub(&db->outstanding, 1);
    h2o_multithread_send_message(&j->port->answers, &j->msg);
}

/* Answers every job of a list. */
static void complete_all(pw_db_t *db, h2o_linklist_t *list, int result, const char *sqlstate, const char *message)
{
    while (!h2o_linklist_is_empty(list))
        complete(db, job_of(list->next), result, sqlstate, message);
}

static int conn_ready(const db_conn_t *c)
{
    return c->state == DB_IDLE || c->state == DB_BUSY;
}

/*
 * The connection a job waits for: its shard's, or while that one is not ready (reconnecting),
 * the next ready one (rows of one shard then may meet another's: correct, since every
 * statement takes its row locks in key order and conflicts are retried, only slower).
 */
static db_conn_t *route(pw_db_t *db, const pw_db_job_t *j)
{
    int home = (int)(j->shard % (uint32_t)db->n_conns);
    for (int k = 0; k < db->n_conns; k++) {
        db_conn_t *c = &db->conns[(home + k) % db->n_conns];
        if (conn_ready(c))
            return c;
    }
    return &db->conns[home]; /* none is ready: wait for its own */
}

static void enqueue(pw_db_t *db, pw_db_job_t *j)
{
    h2o_linklist_insert(&route(db, j)->queued, &j->link);
    db->queued_len++;
}

/* Puts a connection's group back at the head of its queue, in order. */
static void requeue_group(db_conn_t *c)
{
    c->db->queued_len += c->group_len;
    h2o_linklist_insert_list(c->queued.next, &c->group);
    c->group_len = 0;
}

static int any_conn_ready(const pw_db_t *db)
{
    for (int i = 0; i < db->n_conns; i++)
        if (conn_ready(&db->conns[i]))
            return 1;
    return 0;
}

/* Jobs parked at connections that are not ready go where they can be written now (see route). */
static void reroute_parked(pw_db_t *db)
{
    for (int i = 0; i < db->n_conns; i++) {
        db_conn_t *c = &db->conns[i];
        if (conn_ready(c))
            continue;
        h2o_linklist_t parked;
        h2o_linklist_init_anchor(&parked);
        h2o_linklist_insert_list(&parked, &c->queued);
        while (!h2o_linklist_is_empty(&parked)) {
            pw_db_job_t *j = job_of(parked.next);
            h2o_linklist_unlink(&j->link);
            db->queued_len--;
            enqueue(db, j);
        }
    }
}

/* Answers every job waiting in a connection's queue. */
static void complete_queued(db_conn_t *c, int result, const char *why)
{
    while (!h2o_linklist_is_empty(&c->queued)) {
        c->db->queued_len--;
        complete(c->db, job_of(c->queued.next), result, "", why);
    }
}

static int all_down(const pw_db_t *db)
{
    for (int i = 0; i < db->n_conns; i++)
        if (db->conns[i].state != DB_DOWN)
            return 0;
    return 1;
}

/* Takes the jobs submitted since the last time: each goes to its connection's queue, or is answered at once. */
static void take_jobs(pw_db_t *db)
{
    h2o_linklist_t jobs;
    h2o_linklist_init_anchor(&jobs);
    pthread_mutex_lock(&db->in_mutex);
    h2o_linklist_insert_list(&jobs, &db->in_jobs);
    db->in_len = 0;
    pthread_mutex_unlock(&db->in_mutex);
    while (!h2o_linklist_is_empty(&jobs)) {
        pw_db_job_t *j = job_of(jobs.next);
        h2o_linklist_unlink(&j->link);
        j->attempts = 0;
        j->solo = 0;
        j->got_row = 0;
        if (db->closing)
            complete(db, j, PW_EUNAVAIL, "", "shutting down");
        else if (all_down(db))
            complete(db, j, PW_EUNAVAIL, "", "database unavailable");
        else if (db->queued_len >= (size_t)db->cfg->queue_max)
            complete(db, j, PW_EUNAVAIL, "", "database queue full");
        else
            enqueue(db, j);
    }
}

/* 1 when a job submitted now would be sent or answered at once (see the bell, above). */
static int wants_jobs_now(const pw_db_t *db)
{
    if (db->closing || all_down(db))
        return 1;
    for (int i = 0; i < db->n_conns; i++)
        if (db->conns[i].state == DB_IDLE)
            return 1;
    return 0;
}

/* ---- the socket ---- */

static void close_socket(db_conn_t *c)
{
    if (c->sock != NULL) {
        h2o_socket_close(c->sock); /* closes our dup only */
        c->sock = NULL;
    }
    c->sock_fd = -1;
    c->want_write = 0;
}

/* (Re)wraps PQsocket() when it changed (libpq may switch sockets while connecting). */
static int wrap_socket(db_conn_t *c)
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
    db_conn_t *c = sock->data;
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
static int flush_output(db_conn_t *c)
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

static void schedule_reconnect(db_conn_t *c)
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

static void start_connect(db_conn_t *c)
{
    const char *vals[] = {"pushworker", "5", "1", "5", "2", "3", "10000", c->db->cfg->database_url, "UTF8", NULL};
    c->pg = PQconnectStartParams(connect_keys, vals, 1);
    c->sent_ms = pw_now_ms();
    c->limit_ms = PW_DB_CONNECT_LIMIT_MS;
    c->server_encoding[0] = '\0';
    c->prepared = 0; /* a new session */
    c->warm_step = c->db->cfg->pooler_transaction ? -1 : 0; /* behind a pooler the next server session is not this one */
    c->warming = 0;
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
    db_conn_t *c = H2O_STRUCT_FROM_MEMBER(db_conn_t, retry_entry, entry);
    if (--c->retry_ticks_left > 0) {
        h2o_timeout_link(c->db->loop, &c->db->retry, &c->retry_entry);
        return;
    }
    start_connect(c);
}

#define PW_SETUP_STMT "pw_setup"
#define PW_AFTER_STMT "pw_after" /* the statement's after statement, when it has one */

static void send_prepares(db_conn_t *c)
{
    /* Behind a transaction-mode pooler a prepared statement would be gone (or another client's)
       by the next transaction; the statement's check query still checks that the schema is there. Otherwise
       the statements are prepared (which checks every table and column the statement names), and
       the group's planned once (plan_cache_mode, set in each
       transaction by the setup statement): a custom plan per group cost the server about 1 ms
       more per transaction than executing it (measured: 1.46 ms against 0.40 ms for 16
       pushes), and the statement's plan does not depend on how many rows a group has. The first
       query reads the server's encoding (checked in on_prepared). The warm-up comes once the
       connection is ready, when nothing waits (send_warmup). */
    int sent = PQsendQueryParams(c->pg, "SELECT current_setting('server_encoding')", 0, NULL, NULL, NULL, NULL, 0);
    const pw_db_stmt_t *s = c->db->stmt;
    if (c->db->cfg->pooler_transaction)
        sent = sent && PQsendQueryParams(c->pg, s->check_sql, 0, NULL, NULL, NULL, NULL, 0);
    else
        sent = sent && PQsendPrepare(c->pg, PW_SETUP_STMT, c->db->setup_sql, 0, NULL) &&
               PQsendPrepare(c->pg, s->name, s->sql, s->ncols, NULL) &&
               (s->after_sql == NULL || PQsendPrepare(c->pg, PW_AFTER_STMT, s->after_sql, 1, NULL));
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
    db_conn_t *c = sock->data;
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

/* The parts of every variant: the statement itself (0 when it has no parts, as group_parts then gives). */
static unsigned all_parts(const pw_db_stmt_t *s)
{
    return (1u << s->nparts) - 1u;
}

static int sqlstate_class_is(const db_conn_t *c, const char *cls)
{
    return c->sqlstate[0] == cls[0] && c->sqlstate[1] == cls[1];
}

static void on_prepared(db_conn_t *c)
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
    if (!c->db->cfg->pooler_transaction)
        c->prepared |= UINT64_C(1) << all_parts(c->db->stmt); /* the statement itself, by its own name */
    atomic_store(&c->db->ready, 1);
    pw_log_info("database: connected and ready (server %d)", PQserverVersion(c->pg));
    reroute_parked(c->db);
    maybe_send_groups(c->db);
}

/* ---- the after statement (pw_db_stmt_t.after_sql) ---- */

/* Keeps a value of the group's result for the after statement (dropped if the group does not commit). */
static void add_after(db_conn_t *c, const char *v, size_t len)
{
    if (c->after.len == 0) {
        pw_buf_reserve(&c->after, 20);
        c->after.len = 20; /* the array's header, written when it is sent */
        c->after_due_ms = pw_now_ms() + PW_DB_AFTER_WAIT_MS;
    }
    char be[4];
    pw_put_be32(be, (uint32_t)len);
    pw_buf_append(&c->after, be, 4);
    pw_buf_append(&c->after, v, len);
    c->after_count++;
    pw_metrics_add_gauge(&c->db->metrics->after_pending, 1);
}

/* Forgets the values of the group in flight (it failed or was rolled back: nothing of it committed). */
static void drop_group_after(db_conn_t *c)
{
    uint32_t n = c->after_count - c->after_mark_count;
    pw_metrics_add_gauge(&c->db->metrics->after_pending, -(int64_t)n);
    c->after_count = c->after_mark_count;
    c->after.len = c->after_mark;
}

/* Forgets every value, lost with the connection (counted as failed). */
static void lose_after(db_conn_t *c)
{
    uint32_t n = c->after_count + c->after_sent;
    if (n == 0)
        return;
    pw_metrics_add_gauge(&c->db->metrics->after_pending, -(int64_t)n);
    pw_metrics_inc(&c->db->metrics->after_failed, n);
    pw_log_warning("database: the after statement's %u value(s) were lost with the connection", n);
    c->after.len = c->after_mark = 0;
    c->after_count = c->after_mark_count = c->after_sent = 0;
}

/* 1 when the values collected are to be sent now: their wait is over, or the executor stops. */
static int after_due(const db_conn_t *c)
{
    const pw_db_t *db = c->db;
    return c->after_count > 0 && (pw_now_ms() >= c->after_due_ms || db->stopping || atomic_load(&db->drain_at) != 0);
}

/* Queues the after statement with the values collected when they are due (after_due), at the head of the pipeline
   being built, without its Sync (1 when it queued none; 0 when libpq refused it). */
static int queue_after(db_conn_t *c, int *q)
{
    c->q_after = -1;
    c->after_state[0] = '\0';
    if (!after_due(c))
        return 1;
    pw_put_be32(c->after.base, 1);
    pw_put_be32(c->after.base + 4, 0);
    pw_put_be32(c->after.base + 8, 25); /* text */
    pw_put_be32(c->after.base + 12, c->after_count);
    pw_put_be32(c->after.base + 16, 1);
    const char *values[1] = {c->after.base};
    int lengths[1] = {(int)c->after.len}, formats[1] = {1};
    c->q_after = (*q)++;
    c->after_sent = c->after_count;
    c->after_count = 0;
    c->after.len = 0;
    if (c->db->cfg->pooler_transaction)
        return PQsendQueryParams(c->pg, c->db->stmt->after_sql, 1, NULL, values, lengths, formats, 0);
    return PQsendQueryPrepared(c->pg, PW_AFTER_STMT, 1, values, lengths, formats, 0);
}

/* Sends the after statement alone on an idle connection, with the values it holds, due or not. */
static void send_after_alone(db_conn_t *c)
{
    int q = 0;
    c->after_due_ms = 0;
    c->q_main = -1;
    c->q_prepare = -1;
    send_sync(c, queue_after(c, &q), c->db->cfg->statement_timeout_ms + PW_DB_ANSWER_GRACE_MS);
}

/*
 * Answers a group that committed when its jobs are all the executor has in hand: their answers
 * may be the last responses for a while, and Cloud Run gives an instance with no request in
 * flight (nearly) no CPU (deploy.yaml's cpu-throttling), so a wait of PW_DB_AFTER_WAIT_MS could
 * last until the next push. Every idle connection's after statement is put on the wire first,
 * then the jobs are answered.
 */
static void answer_last_group(db_conn_t *c)
{
    h2o_linklist_t jobs;
    h2o_linklist_init_anchor(&jobs);
    h2o_linklist_insert_list(&jobs, &c->group);
    c->group_len = 0;
    for (int i = 0; i < c->db->n_conns; i++) {
        db_conn_t *d = &c->db->conns[i];
        if (d->state == DB_IDLE && d->after_count > 0)
            send_after_alone(d);
    }
    complete_all(c->db, &jobs, 0, "", "");
}

/* The pipeline's after statement has ended (its Sync came back). */
static void after_done(db_conn_t *c)
{
    if (c->after_sent == 0)
        return;
    pw_metrics_add_gauge(&c->db->metrics->after_pending, -(int64_t)c->after_sent);
    if (c->after_state[0] != '\0') {
        pw_metrics_inc(&c->db->metrics->after_failed, c->after_sent);
        pw_metrics_inc(&c->db->metrics->db_errors, 1);
        pw_log_warning("database: the after statement failed (%s) for %u value(s); its groups had committed",
                       c->after_state, c->after_sent);
    } else {
        pw_metrics_inc(&c->db->metrics->after_done, c->after_sent);
    }
    c->after_sent = 0;
}

/* Answers the group (after logging why when it is an error: PostgreSQL said nothing about the data). */
static void answer_group(db_conn_t *c, int result)
{
    if (result == PW_EUNAVAIL) {
        char esc[300];
        pw_log_error("database: group of %zu jobs failed (%s: %s); answering unavailable", c->group_len, c->sqlstate,
                     pw_log_escape(c->errmsg, esc, sizeof esc));
    }
    complete_all(c->db, &c->group, result, result == 0 ? "" : c->sqlstate, result == 0 ? "" : c->errmsg);
    c->group_len = 0;
}

/* Puts the group back at the head of the queue, each job to be written alone. */
static void split_group(db_conn_t *c)
{
    for (h2o_linklist_t *n = c->group.next; n != &c->group; n = n->next)
        job_of(n)->solo = 1;
    requeue_group(c);
}

static void arm_backoff(pw_db_t *db)
{
    if (!h2o_timeout_is_linked(&db->backoff_entry))
        h2o_timeout_link(db->loop, &db->backoff, &db->backoff_entry);
}

/*
 * A serialization failure or deadlock. Nothing was written. A group is split: its jobs are
 * written one by one at once (the others are not held back by one that keeps failing). A job
 * that fails alone waits out of the queue for a jittered, doubling backoff, a bounded number of
 * times, then is answered PW_ECONFLICT.
 */
static void on_conflict(db_conn_t *c)
{
    pw_db_t *db = c->db;
    if (c->group_len > 1) {
        pw_log_warning("database: group of %zu jobs hit %s; writing them one by one", c->group_len, c->sqlstate);
        split_group(c);
        return;
    }
    pw_db_job_t *j = job_of(c->group.next);
    if (++j->attempts > PW_DB_MAX_CONFLICT_RETRIES) {
        pw_log_warning("database: a job hit %s %d times; giving up", c->sqlstate, j->attempts);
        answer_group(c, PW_ECONFLICT);
        return;
    }
    h2o_linklist_unlink(&j->link);
    c->group_len = 0;
    db->rng = db->rng * 1103515245u + 12345u;
    double delay = (double)(PW_DB_CONFLICT_BACKOFF_MS << (j->attempts - 1));
    j->due_ms = pw_now_ms() + delay / 2 + (double)((db->rng >> 8) % 1000) * delay / 1000.0;
    j->solo = 1;
    h2o_linklist_insert(&db->waiting, &j->link);
    arm_backoff(db);
}

/* 1 when the error is about the data (PostgreSQL refuses it: class 22, 23 or 54). */
static int refused_data(const db_conn_t *c)
{
    return sqlstate_class_is(c, "22") || sqlstate_class_is(c, "23") || sqlstate_class_is(c, "54");
}

/* The group's transaction ended: answer it, or decide how to retry it. */
static void on_group_done(db_conn_t *c)
{
    c->state = DB_IDLE;
    c->idle_since_ms = pw_now_ms();
    if (c->group_len == 0) {
        /* A probe or the warm-up: the server answers. An error on a probe means the session is
           not usable; the warm-up only spares the first groups work, so its error (a lock or
           statement timeout, say) is logged and each group then does that work itself. Jobs
           that arrived while it was in flight were queued: the connection is free for them now
           (nothing else would send them until the next job came). */
        if (c->warming) {
            c->warming = 0;
            char esc[256];
            if (c->failed) {
                c->warm_step = -1; /* what failed once would fail again: no more steps */
                pw_metrics_inc(&c->db->metrics->db_errors, 1);
                pw_log_warning("database: warming up the statement failed (%s: %s); the first groups pay for the new session"
                               " themselves",
                               c->sqlstate, pw_log_escape(c->errmsg, esc, sizeof esc));
            } else {
                pw_log_debug("database: warm-up of the variant %02x done in %.1f ms", c->parts, pw_now_ms() - c->sent_ms);
            }
        } else if (c->failed) {
            char why[400];
            snprintf(why, sizeof why, "the probe failed (%s: %s)", c->sqlstate, c->errmsg);
            conn_lost(c, why);
            return;
        }
        maybe_send_groups(c->db);
        return;
    }
    int trial = c->group_len == 1 && (job_of(c->group.next)->flags & PW_DB_TRIAL) != 0;
    if (c->failed || trial)
        drop_group_after(c); /* nothing of it committed */
    if (c->failed && !(trial && c->failed_query == c->q_main + 1))
        pw_metrics_inc(&c->db->metrics->db_errors, 1);
    if (trial && c->failed && c->failed_query == c->q_main + 1) {
        answer_group(c, 0); /* the statement passed; the trial was rolled back as meant */
    } else if (!c->failed) {
        assert(!trial);
        pw_metrics_observe_seconds(&c->db->metrics->db_tx_seconds, (pw_now_ms() - c->sent_ms) / 1000.0);
        pw_metrics_observe_count(&c->db->metrics->batch_pushes, (double)c->group_len);
        if (atomic_load(&c->db->outstanding) == (long)c->group_len)
            answer_last_group(c);
        else
            answer_group(c, 0);
    } else if (sqlstate_class_is(c, "40")) {
        on_conflict(c);
    } else if (strcmp(c->sqlstate, "55P03") == 0 || strcmp(c->sqlstate, "57014") == 0) {
        /* A lock not granted within lock_timeout, or the statement cancelled by statement_timeout:
           write the jobs one by one, so the others commit and only the one that waits fails. */
        if (c->group_len > 1) {
            pw_log_warning("database: group of %zu jobs hit %s; writing them one by one", c->group_len, c->sqlstate);
            split_group(c);
        } else {
            char esc[300];
            pw_log_warning("database: a job hit %s (%s)", c->sqlstate, pw_log_escape(c->errmsg, esc, sizeof esc));
            answer_group(c, PW_ETIMEDOUT);
        }
    } else if (!refused_data(c) || c->failed_query != c->q_main) {
        answer_group(c, PW_EUNAVAIL); /* not about the data (missing table, server shutting down...) */
    } else if (c->group_len > 1) {
        /* Some job's data was refused: write each alone, so one cannot fail its neighbours. */
        split_group(c);
    } else {
        answer_group(c, PW_EREFUSED);
    }
    maybe_send_groups(c->db);
}

/* Rows of the statement's result whose first column names a job's key go to that job (see pw_db_job_t). */
static void route_rows(db_conn_t *c, const PGresult *r)
{
    int rows = PQntuples(r);
    if (PQnfields(r) < 1)
        return;
    int after = c->db->stmt->after_sql != NULL && PQnfields(r) >= 2;
    for (int i = 0; i < rows; i++) {
        if (PQgetisnull(r, i, 0)) {
            if (after && !PQgetisnull(r, i, 1))
                add_after(c, PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1));
            continue;
        }
        const char *v = PQgetvalue(r, i, 0);
        size_t len = (size_t)PQgetlength(r, i, 0);
        for (h2o_linklist_t *n = c->group.next; n != &c->group; n = n->next) {
            pw_db_job_t *j = job_of(n);
            if (!j->got_row && j->key.base != NULL && j->key.len == len && memcmp(j->key.base, v, len) == 0) {
                j->got_row = 1;
                break;
            }
        }
    }
}

static void note_error(db_conn_t *c, const PGresult *r)
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

static void note_after_error(db_conn_t *c, const PGresult *r)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(c->after_state, sizeof c->after_state, "%s", state != NULL ? state : "XX000");
}

/* Reads every result available without blocking. */
static void read_results(db_conn_t *c)
{
    while (c->syncs_pending > 0 && !PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (r == NULL) {
            c->query_at++; /* the end of one query's results */
            continue;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_FATAL_ERROR && c->after_sent > 0 && c->query_at == c->q_after)
            note_after_error(c, r);
        else if (st == PGRES_FATAL_ERROR)
            note_error(c, r);
        else if (st == PGRES_TUPLES_OK && c->state == DB_BUSY && c->query_at == c->q_main && c->group_len > 0)
            route_rows(c, r); /* a trial's rows are routed too, but its answer ignores them */
        else if (st == PGRES_COMMAND_OK && c->state == DB_BUSY && c->query_at == c->q_prepare)
            c->prepared |= UINT64_C(1) << c->parts; /* kept by the session even if the transaction fails */
        else if (st == PGRES_TUPLES_OK && c->state == DB_PREPARING && c->query_at == 0 && PQntuples(r) == 1)
            snprintf(c->server_encoding, sizeof c->server_encoding, "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
        if (st == PGRES_PIPELINE_SYNC) {
            c->syncs_pending--;
            if (c->after_sent > 0 && c->query_at == c->q_after + 1)
                after_done(c); /* its own transaction, first in the pipeline */
            if (c->syncs_pending > 0)
                continue;
            if (c->state == DB_PREPARING)
                on_prepared(c);
            else
                on_group_done(c);
            return; /* the callbacks may have sent more; the next event continues */
        }
    }
}

static void on_readable(h2o_socket_t *sock, const char *err)
{
    db_conn_t *c = sock->data;
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

/* Closes the connection; its group is answered unavailable (the server may or may not have committed it). */
static void conn_close(db_conn_t *c, const char *why)
{
    close_socket(c);
    if (c->pg != NULL) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    if (c->state != DB_DOWN && c->state != DB_CONNECTING)
        pw_metrics_inc(&c->db->metrics->db_reconnects, 1);
    c->state = DB_DOWN;
    c->syncs_pending = 0;
    lose_after(c);
    /* Not ready before the answers go out: whoever reads an answer of this loss then reads "not
       ready" too (the answer's message is posted after this store), never a stale "ready". */
    atomic_store(&c->db->ready, any_conn_ready(c->db));
    complete_all(c->db, &c->group, PW_EUNAVAIL, "", why);
    c->group_len = 0;
}

static void conn_lost(db_conn_t *c, const char *why)
{
    char esc[512];
    pw_log_warning("database: connection unavailable (%s); its %zu job(s) in flight answered unavailable",
                   pw_log_escape(why != NULL ? why : "unknown", esc, sizeof esc), c->group_len);
    conn_close(c, "database connection lost");
    /* Its queue goes to the connections still up, if any; else every queue is answered and the callers retry. */
    pw_db_t *db = c->db;
    if (any_conn_ready(db)) {
        reroute_parked(db);
        maybe_send_groups(db);
    } else {
        for (int i = 0; i < db->n_conns; i++)
            complete_queued(&db->conns[i], PW_EUNAVAIL, "database unavailable");
    }
    if (!c->db->closing)
        schedule_reconnect(c);
}

/* ---- sending a group ---- */

static size_t job_bytes(const pw_db_t *db, const pw_db_job_t *j)
{
    return j->ends[db->stmt->ncols - 1];
}

/* Takes queued jobs for one transaction: up to batch_max jobs and batch_max_bytes, or one job alone. */
static void take_group(db_conn_t *c)
{
    pw_db_t *db = c->db;
    size_t bytes = 0;
    double now = pw_now_ms();
    while (!h2o_linklist_is_empty(&c->queued) && c->group_len < (size_t)db->cfg->batch_max && bytes < db->cfg->batch_max_bytes) {
        pw_db_job_t *j = job_of(c->queued.next);
        int alone = j->solo || (j->flags & (PW_DB_ALONE | PW_DB_TRIAL)) != 0;
        if (alone && c->group_len > 0)
            break;
        h2o_linklist_unlink(&j->link);
        db->queued_len--;
        if (j->abandoned) {
            complete(db, j, PW_ECANCELED, "", "given up before it was sent");
            continue;
        }
        j->got_row = 0;
        if (j->queued_ms > 0) { /* its first group: how long it waited for one */
            pw_metrics_observe_seconds(&db->metrics->db_queue_seconds, (now - j->queued_ms) / 1000.0);
            j->queued_ms = 0;
        }
        h2o_linklist_insert(&c->group, &j->link);
        c->group_len++;
        bytes += job_bytes(db, j);
        if (alone)
            break;
    }
}

/* Queues the setup statement (see pw_db_t.setup_sql) in the pipeline. */
static int send_setup(db_conn_t *c)
{
    if (c->db->cfg->pooler_transaction)
        return PQsendQueryParams(c->pg, c->db->setup_sql, 0, NULL, NULL, NULL, NULL, 0);
    return PQsendQueryPrepared(c->pg, PW_SETUP_STMT, 0, NULL, NULL, NULL, 0);
}

/* Sends the pipeline queued since the last Sync; BUSY until its Sync comes back, within limit_ms. */
static void send_sync(db_conn_t *c, int sent, int limit_ms)
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

/* The parts of the statement the group has rows in, with those always kept (see pw_db_stmt_t). */
static unsigned group_parts(const db_conn_t *c)
{
    const pw_db_stmt_t *s = c->db->stmt;
    unsigned all = all_parts(s), parts = s->keep & all;
    for (h2o_linklist_t *n = c->group.next; n != &c->group && parts != all; n = n->next) {
        const pw_db_job_t *j = job_of(n);
        for (int p = 0, from = 0; p < s->nparts; from = s->part_end[p++]) {
            /* A job's fragments are in column order: part p is empty when its last column ends where the part began. */
            uint32_t begin = from == 0 ? 0 : j->ends[from - 1];
            if (j->ends[s->part_end[p] - 1] > begin)
                parts |= 1u << p;
        }
    }
    return parts;
}

/* 1 when column k belongs to one of parts (every column does when the statement has no parts). */
static int column_kept(const pw_db_stmt_t *s, unsigned parts, int k)
{
    if (s->nparts == 0)
        return 1;
    int p = 0;
    while (k >= s->part_end[p])
        p++;
    return (parts >> p) & 1u;
}

/* The elements of a binary column's fragment (pw_db_job_t): each a length, -1 for NULL, then its bytes. */
static uint32_t count_elements(const char *p, size_t n)
{
    uint32_t count = 0;
    size_t at = 0;
    while (at + 4 <= n) {
        int32_t len = (int32_t)pw_get_be32(p + at);
        at += 4 + (len > 0 ? (size_t)len : 0);
        count++;
    }
    assert(at == n); /* a fragment is whole elements */
    return count;
}

/* Joins the group's fragments into the array parameters of the kept columns, in order: a text
   column k is "{" f1 "," f2 ... "}"; a binary one is the header of a one-dimensional array of its
   element type (an empty one has no dimension, as the server's own array_send writes it), then
   f1 f2 .... Fills values, lengths and formats; returns how many. */
static int join_fragments(db_conn_t *c, unsigned parts, const char **values, int *lengths, int *formats)
{
    pw_db_t *db = c->db;
    const uint32_t *types = db->stmt->elem_types;
    int n = 0;
    for (int k = 0; k < db->stmt->ncols; k++) {
        if (!column_kept(db->stmt, parts, k))
            continue;
        pw_buf_t *b = &db->params[n];
        b->len = 0;
        uint32_t type = types != NULL ? types[k] : 0, count = 0;
        if (type != 0) {
            pw_buf_reserve(b, 20);
            b->len = 20; /* ndim, flags (has NULLs: the server finds out), element type, length, lower bound */
        } else {
            pw_buf_appendc(b, '{');
        }
        for (h2o_linklist_t *node = c->group.next; node != &c->group; node = node->next) {
            const pw_db_job_t *j = job_of(node);
            uint32_t lo = k == 0 ? 0 : j->ends[k - 1], hi = j->ends[k];
            if (hi == lo)
                continue;
            if (type != 0)
                count += count_elements(j->frags + lo, hi - lo);
            else if (count++ > 0)
                pw_buf_appendc(b, ',');
            pw_buf_append(b, j->frags + lo, hi - lo);
        }
        if (type != 0) {
            pw_put_be32(b->base, count > 0);
            pw_put_be32(b->base + 4, 0);
            pw_put_be32(b->base + 8, type);
            pw_put_be32(b->base + 12, count);
            pw_put_be32(b->base + 16, 1);
            if (count == 0)
                b->len = 12;
            lengths[n] = (int)b->len;
            formats[n] = 1;
        } else {
            pw_buf_appendc(b, '}');
            lengths[n] = 0;
            formats[n] = 0;
        }
        values[n++] = b->base;
    }
    return n;
}

/* The name and the SQL of the variant with parts: the statement itself when it has them all. */
static const char *variant_of(const pw_db_stmt_t *s, unsigned parts, char *name, size_t cap, const char **sql)
{
    if (s->nparts == 0 || parts == all_parts(s)) {
        *sql = s->sql;
        return s->name;
    }
    *sql = s->variant(parts);
    snprintf(name, cap, "%s_%02x", s->name, parts);
    return name;
}

/*
 * The warm-up: the statement, then each variant of its warm list, run once with every array
 * empty, after the settings (it writes nothing). On a new session the server then does what it
 * would otherwise do during the first groups: the generic plan, the cache entries of every table
 * and index, the trigger functions compiled and their queries planned (25-40 ms for the statement
 * here, then 4-10 ms for each variant, whose first group would otherwise take 7-22 ms longer, its
 * pushes and those queued behind it waiting: BENCHMARKS.md). Without it, a paced
 * run of 3,400 pushes/s on a new connection had a p99 of 22-56 ms; with it 12-23 ms, against
 * 9-11 ms on a connection that had already written (BENCHMARKS.md). One step a turn, each only
 * when the connection is idle with nothing queued, never ahead of a group: pushes that waited
 * for the connection to come up go first and pay only their own variant's share (exec to first
 * ack: BENCHMARKS.md), and a push that comes during the warm-up waits for one step at most. A
 * variant that a group has already prepared is skipped (the group ran it).
 */
static void send_warmup(db_conn_t *c)
{
    const pw_db_stmt_t *s = c->db->stmt;
    unsigned parts = all_parts(s);
    if (c->warm_step > 0) {
        for (;;) {
            unsigned w = s->warm != NULL ? s->warm[c->warm_step - 1] : 0;
            if (w == 0) {
                c->warm_step = -1;
                pw_log_info("database: warmed up in %.0f ms", pw_now_ms() - c->warm_since_ms);
                return;
            }
            c->warm_step++;
            parts = (w | s->keep) & all_parts(s);
            if ((c->prepared & (UINT64_C(1) << parts)) == 0)
                break;
        }
    } else {
        c->warm_step = 1; /* the statement itself, prepared on connecting */
        c->warm_since_ms = pw_now_ms();
    }
    char vname[128];
    const char *sql, *name = variant_of(s, parts, vname, sizeof vname, &sql);
    const char *empty[PW_DB_COLS_MAX];
    int n = 0;
    for (int k = 0; k < s->ncols; k++)
        if (column_kept(s, parts, k))
            empty[n++] = "{}";
    int sent = 1, q = 0;
    c->parts = parts;
    c->q_prepare = -1;
    if ((c->prepared & (UINT64_C(1) << parts)) == 0) {
        sent = PQsendPrepare(c->pg, name, sql, n, NULL);
        c->q_prepare = q++;
    }
    c->q_main = -1;
    c->warming = 1;
    send_sync(c, sent && send_setup(c) && PQsendQueryPrepared(c->pg, name, n, empty, NULL, NULL, 0),
              c->db->cfg->statement_timeout_ms + PW_DB_ANSWER_GRACE_MS);
}

static void send_group(db_conn_t *c)
{
    pw_db_t *db = c->db;
    if (c->state != DB_IDLE)
        return;
    int none_queued = h2o_linklist_is_empty(&c->queued);
    if (!none_queued)
        take_group(c);
    if (c->group_len == 0) {
        if (c->after_count > 0) {
            /* Nothing to write: the after statement alone, once its wait is over. */
            if (after_due(c)) {
                send_after_alone(c);
            } else if (!h2o_timeout_is_linked(&db->after_entry)) {
                h2o_timeout_link(db->loop, &db->after_wait, &db->after_entry);
            }
        } else if (none_queued && c->warm_step >= 0 && !db->closing && atomic_load(&db->drain_at) == 0) {
            send_warmup(c);
        }
        return;
    }
    const pw_db_stmt_t *s = db->stmt;
    const char *values[PW_DB_COLS_MAX];
    int lengths[PW_DB_COLS_MAX], formats[PW_DB_COLS_MAX];
    c->parts = group_parts(c);
    int nvalues = join_fragments(c, c->parts, values, lengths, formats);
    /* The variant without the parts the group has no rows in, prepared on first use (one more
       query in the same pipeline), then the settings, the statement, then Sync: the implicit
       transaction commits at the Sync (a trial's last query fails, which rolls it back). */
    char vname[128];
    const char *sql, *name = variant_of(s, c->parts, vname, sizeof vname, &sql);
    int q = 0;
    /* The after statement of the group before, in a transaction of its own (its Sync), first. */
    int sent = queue_after(c, &q) && (c->after_sent == 0 || PQpipelineSync(c->pg));
    c->after_mark = c->after.len; /* what the group adds is dropped if it does not commit */
    c->after_mark_count = c->after_count;
    c->q_prepare = -1;
    if (sent && !db->cfg->pooler_transaction && (c->prepared & (UINT64_C(1) << c->parts)) == 0) {
        sent = PQsendPrepare(c->pg, name, sql, nvalues, NULL);
        c->q_prepare = q++;
    }
    sent = sent && send_setup(c);
    c->q_main = ++q;
    sent = sent && (db->cfg->pooler_transaction ? PQsendQueryParams(c->pg, sql, nvalues, NULL, values, lengths, formats, 0)
                                                : PQsendQueryPrepared(c->pg, name, nvalues, values, lengths, formats, 0));
    if (sent && (job_of(c->group.next)->flags & PW_DB_TRIAL) != 0)
        sent = PQsendQueryParams(c->pg, "SELECT 1 / 0 AS pushworker_trial_rolls_back", 0, NULL, NULL, NULL, NULL, 0);
    send_sync(c, sent, db->cfg->statement_timeout_ms + PW_DB_ANSWER_GRACE_MS);
    if (c->state == DB_BUSY && c->after_sent > 0)
        c->syncs_pending = 2;
}

/* Gives a group to every idle connection while jobs are waiting. */
static void maybe_send_groups(pw_db_t *db)
{
    for (;;) {
        take_jobs(db);
        for (int i = 0; i < db->n_conns; i++)
            send_group(&db->conns[i]);
        /* Arm the bell for what comes next, unless jobs came meanwhile that are wanted now. */
        int wants = wants_jobs_now(db);
        size_t max = (size_t)db->cfg->queue_max, room = db->queued_len < max ? max - db->queued_len : 0;
        pthread_mutex_lock(&db->in_mutex);
        int again = db->in_len > 0 && (wants || db->in_len >= room);
        if (!again) {
            db->in_bell = wants;
            db->in_bell_len = room;
        }
        pthread_mutex_unlock(&db->in_mutex);
        if (!again)
            return;
    }
}

/* ---- timers: conflicts' backoff, the watchdog, the drain ---- */

/* Conflicts whose backoff is over go to the end of the queue (never ahead of the others). */
static void on_backoff(h2o_timeout_entry_t *entry)
{
    pw_db_t *db = H2O_STRUCT_FROM_MEMBER(pw_db_t, backoff_entry, entry);
    double now = pw_now_ms();
    h2o_linklist_t *n = db->waiting.next;
    while (n != &db->waiting) {
        pw_db_job_t *j = job_of(n);
        n = n->next;
        if (j->abandoned) {
            complete(db, j, PW_ECANCELED, "", "given up while waiting for a retry");
        } else if (all_down(db)) {
            complete(db, j, PW_EUNAVAIL, "", "database unavailable");
        } else if (j->due_ms <= now) {
            h2o_linklist_unlink(&j->link);
            enqueue(db, j);
        }
    }
    if (!h2o_linklist_is_empty(&db->waiting))
        arm_backoff(db);
    maybe_send_groups(db);
}

/* Asks an idle connection's server to answer (the setup statement, which writes nothing). */
static void send_probe(db_conn_t *c)
{
    c->q_main = -1;
    c->q_prepare = -1;
    send_sync(c, send_setup(c), PW_DB_PROBE_LIMIT_MS);
}

/* From the drain deadline on, or when stopping: everything is answered at once; nothing waits for the server. */
static void close_all(pw_db_t *db, const char *why)
{
    db->closing = 1;
    take_jobs(db); /* answered "shutting down" */
    for (int i = 0; i < db->n_conns; i++)
        complete_queued(&db->conns[i], PW_EUNAVAIL, why);
    complete_all(db, &db->waiting, PW_EUNAVAIL, "", why);
    for (int i = 0; i < db->n_conns; i++) {
        db_conn_t *c = &db->conns[i];
        h2o_timeout_unlink(&c->retry_entry);
        conn_close(c, why);
    }
    atomic_store(&db->ready, 0);
}

static void on_watch(h2o_timeout_entry_t *entry)
{
    pw_db_t *db = H2O_STRUCT_FROM_MEMBER(pw_db_t, watch_entry, entry);
    double now = pw_now_ms();
    double drain_at = atomic_load(&db->drain_at);
    if (drain_at > 0 && now >= drain_at && !db->closing) {
        pw_log_warning("database: drain deadline passed; answering what is left unavailable");
        close_all(db, "the drain deadline passed before it was committed");
    }
    for (int i = 0; i < db->n_conns && !db->closing; i++) {
        db_conn_t *c = &db->conns[i];
        if ((c->state == DB_CONNECTING || c->state == DB_PREPARING || c->state == DB_BUSY) && now - c->sent_ms > c->limit_ms) {
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

/* ---- the thread ---- */

/* An after statement's wait is over (send_group): send what is due. */
static void on_after_wait(h2o_timeout_entry_t *entry)
{
    maybe_send_groups(H2O_STRUCT_FROM_MEMBER(pw_db_t, after_entry, entry));
}

/* The bell carries no message: it only ends the thread's wait (run takes the jobs after each turn). */
static void on_bell(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    assert(h2o_linklist_is_empty(messages));
    (void)messages;
}

/* pw_db_drain and pw_db_free reach the thread here (the drain's deadline is in an atomic). */
static void on_control(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    pw_db_t *db = H2O_STRUCT_FROM_MEMBER(pw_db_t, control, receiver);
    if (pw_take_messages(messages, &db->stop_msg.link)) /* or the drain's */
        db->stopping = 1;
    /* The watchdog's tick notices the drain deadline; check it now too. */
    if (h2o_timeout_is_linked(&db->watch_entry)) {
        h2o_timeout_unlink(&db->watch_entry);
        on_watch(&db->watch_entry);
    }
}

/* 1 while a connection still up has values for the after statement, or runs it. */
static int after_in_hand(const pw_db_t *db)
{
    for (int i = 0; i < db->n_conns; i++) {
        const db_conn_t *c = &db->conns[i];
        if (c->state != DB_DOWN && (c->after_count > 0 || c->after_sent > 0))
            return 1;
    }
    return 0;
}

static void *run(void *arg)
{
    pw_db_t *db = arg;
    pthread_setname_np(pthread_self(), "pw-db"); /* for top -H and make bench's CPU per thread */
    double stop_by_ms = 0;
    for (;;) {
        h2o_evloop_run(db->loop, stop_by_ms > 0 ? PW_DB_WATCH_TICK_MS : INT32_MAX);
        if (db->stopping) {
            /* The after statements of the groups committed last are let run, for a while. */
            if (stop_by_ms == 0)
                stop_by_ms = pw_now_ms() + PW_DB_STOP_AFTER_MS;
            if (!after_in_hand(db) || db->closing || pw_now_ms() >= stop_by_ms)
                break;
        }
        maybe_send_groups(db); /* the bell rang, or this turn freed a connection or closed */
    }
    close_all(db, "shutting down");
    h2o_timeout_unlink(&db->backoff_entry);
    h2o_timeout_unlink(&db->watch_entry);
    h2o_timeout_unlink(&db->after_entry);
    if (atomic_load(&db->outstanding) > 0)
        pw_log_error("database: %ld job(s) submitted but never received to be answered", atomic_load(&db->outstanding));
    h2o_multithread_unregister_receiver(db->queue, &db->bell);
    h2o_multithread_unregister_receiver(db->queue, &db->control);
    h2o_timeout_dispose(db->loop, &db->retry);
    h2o_timeout_dispose(db->loop, &db->backoff);
    h2o_timeout_dispose(db->loop, &db->watch);
    h2o_timeout_dispose(db->loop, &db->after_wait);
    return NULL;
}

/* Answers, back on the thread the jobs came from. */
static void on_answers(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        pw_db_job_t *j = H2O_STRUCT_FROM_MEMBER(pw_db_job_t, msg.link, messages->next);
        h2o_linklist_unlink(&j->msg.link);
        j->on_done(j);
    }
}

/* ---- public ---- */

pw_db_t *pw_db_new(const pw_config_t *cfg, const pw_db_stmt_t *stmt, pw_metrics_t *metrics)
{
    assert(stmt->ncols > 0 && stmt->ncols <= PW_DB_COLS_MAX);
    assert(stmt->nparts >= 0 && stmt->nparts <= PW_DB_PARTS_MAX);
    assert(stmt->nparts == 0 || (stmt->variant != NULL && stmt->part_end[stmt->nparts - 1] == stmt->ncols));
    pw_db_t *db = pw_xcalloc(1, sizeof *db);
    db->loop = h2o_evloop_create();
    db->queue = h2o_multithread_create_queue(db->loop);
    db->cfg = cfg;
    db->stmt = stmt;
    db->metrics = metrics;
    db->n_conns = cfg->db_connections;
    db->conns = pw_xcalloc((size_t)db->n_conns, sizeof *db->conns);
    h2o_linklist_init_anchor(&db->waiting);
    pthread_mutex_init(&db->in_mutex, NULL);
    h2o_linklist_init_anchor(&db->in_jobs);
    db->in_bell = 1;
    db->in_bell_len = SIZE_MAX;
    h2o_multithread_register_receiver(db->queue, &db->bell, on_bell);
    h2o_multithread_register_receiver(db->queue, &db->control, on_control);
    h2o_timeout_init(db->loop, &db->retry, PW_DB_RETRY_TICK_MS);
    h2o_timeout_init(db->loop, &db->backoff, PW_DB_BACKOFF_TICK_MS);
    h2o_timeout_init(db->loop, &db->watch, PW_DB_WATCH_TICK_MS);
    h2o_timeout_init(db->loop, &db->after_wait, PW_DB_AFTER_WAIT_MS);
    db->after_entry.cb = on_after_wait;
    db->backoff_entry.cb = on_backoff;
    db->watch_entry.cb = on_watch;
    db->rng = (unsigned)getpid() ^ (unsigned)pw_now_ms();
    /* plan_cache_mode only matters for the prepared statement, but is harmless for an unnamed one. */
    snprintf(db->setup_sql, sizeof db->setup_sql,
             "SELECT set_config('lock_timeout', '%d', true), set_config('statement_timeout', '%d', true),"
             " set_config('plan_cache_mode', 'force_generic_plan', true), set_config('enable_seqscan', 'off', true)",
             cfg->lock_timeout_ms, cfg->statement_timeout_ms);
    h2o_timeout_link(db->loop, &db->watch, &db->watch_entry);
    for (int i = 0; i < db->n_conns; i++) {
        db_conn_t *c = &db->conns[i];
        c->db = db;
        c->sock_fd = -1;
        c->retry_entry.cb = on_retry;
        h2o_linklist_init_anchor(&c->group);
        h2o_linklist_init_anchor(&c->queued);
        start_connect(c);
    }
    /* From here on only the thread touches the loop. */
    if (pthread_create(&db->tid, NULL, run, db) != 0) {
        pw_log_error("database: cannot start its thread");
        abort();
    }
    return db;
}

pw_db_port_t *pw_db_port_new(pw_db_t *db, h2o_context_t *ctx)
{
    pw_db_port_t *port = pw_xcalloc(1, sizeof *port);
    port->db = db;
    port->queue = ctx->queue;
    h2o_multithread_register_receiver(ctx->queue, &port->answers, on_answers);
    return port;
}

void pw_db_submit(pw_db_port_t *port, pw_db_job_t *job)
{
    assert(job->on_done != NULL && job->ends != NULL);
    atomic_fetch_add(&port->db->outstanding, 1);
    job->port = port;
    job->result = 0;
    job->got_row = 0;
    job->sqlstate[0] = job->message[0] = '\0';
    job->queued_ms = pw_now_ms();
    pw_db_t *db = port->db;
    pthread_mutex_lock(&db->in_mutex);
    h2o_linklist_insert(&db->in_jobs, &job->link);
    db->in_len++;
    int ring = db->in_bell || db->in_len >= db->in_bell_len;
    if (ring) { /* once: the thread arms it again when it has taken the jobs */
        db->in_bell = 0;
        db->in_bell_len = SIZE_MAX;
    }
    pthread_mutex_unlock(&db->in_mutex);
    if (ring) {
        atomic_fetch_add_explicit(&db->bells, 1, memory_order_relaxed);
        h2o_multithread_send_message(&db->bell, NULL);
    }
}

int pw_db_ready(const pw_db_t *db)
{
    return atomic_load(&((pw_db_t *)db)->ready);
}

void pw_db_drain(pw_db_t *db, double deadline_ms)
{
    double none = 0;
    if (atomic_compare_exchange_strong(&db->drain_at, &none, deadline_ms))
        h2o_multithread_send_message(&db->control, &db->drain_msg);
}

void pw_db_port_free(pw_db_port_t *port)
{
    if (port == NULL)
        return;
    h2o_multithread_unregister_receiver(port->queue, &port->answers);
    free(port);
}

void pw_db_free(pw_db_t *db)
{
    if (db == NULL)
        return;
    h2o_multithread_send_message(&db->control, &db->stop_msg);
    pthread_join(db->tid, NULL);
    for (int k = 0; k < PW_DB_COLS_MAX; k++)
        pw_buf_dispose(&db->params[k]);
    for (int i = 0; i < db->n_conns; i++)
        pw_buf_dispose(&db->conns[i].after);
    h2o_multithread_destroy_queue(db->queue);
    h2o_evloop_destroy(db->loop);
    pthread_mutex_destroy(&db->in_mutex);
    free(db->conns);
    free(db);
}
