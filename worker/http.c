/* h2o event loops: routing, push decoding, answering each push when its transaction commits. */
#include "worker/http.h"

#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>

#include "worker/auth.h"
#include "worker/db.h"
#include "worker/dispatch.h"
#include "worker/jwks.h"
#include "worker/log.h"
#include "worker/metrics.h"
#include "worker/util.h"

/* The loops wake at least this often to notice a stop. */
#define PW_LOOP_TICK_MS 100

/* An accepted connection, listed so that a stop can close the idle ones (h2o 2.2 keeps no list). */
typedef struct pw_conn {
    h2o_socket_t *sock;
    struct pw_conn *prev, *next;
    struct pw_thread *thread;
} pw_conn_t;

typedef struct pw_thread {
    pthread_t tid;
    int listen_fd;
    pw_conn_t conns; /* list head */
    size_t n_conns;
    int torn_down;   /* everything of this loop was freed */
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    pw_db_port_t *db; /* the way to the process's database */
    pw_auth_t *auth;
    h2o_timeout_t deadline;
    size_t pushes_alive; /* push objects not yet released (answered or not) */
    pw_metrics_t metrics;
} pw_thread_t;

/* What the logs say about a request (read from it when a line is written; empty once it is gone). */
typedef struct {
    char trace[128];     /* "projects/P/traces/T", or "T" without GOOGLE_CLOUD_PROJECT; "" when none */
    char remote_ip[48];
    char user_agent[96]; /* escaped for JSON, truncated */
    char path[64];       /* escaped for JSON, truncated */
} pw_req_ctx_t;

/* A push between its request and its commit. Lives on the heap: it may outlive the request. */
typedef struct {
    pw_db_job_t job;
    pw_push_t push;
    h2o_req_t *req;        /* NULL once answered or once the request is gone */
    void **cell;           /* in req->pool; its dispose tells us the request is gone */
    h2o_timeout_entry_t deadline;
    pw_thread_t *thread;
    double started_ms;
    int counted; /* in the metrics already */
    int with_db; /* submitted and not answered by the database: the push is the database's to read and change */
} pw_http_push_t;

static const pw_config_t *config;
static h2o_globalconf_t globalconf;
static pw_thread_t *all_threads; /* for /metrics: each thread's counters (single writer each) */
static int n_threads;
static atomic_int stopping;
static pw_db_t *database;          /* the process's, in the first loop; set before the other loops start */
static atomic_int loops_submitting; /* loops that may still submit pushes to it */
static atomic_int database_created;
static atomic_int database_closed; /* pw_db_free has returned: no answer is being sent any more */
static _Thread_local pw_thread_t *self;

/* ---- answers ---- */

static void send_text(h2o_req_t *req, int status, const char *reason, const char *body)
{
    h2o_send_error_generic(req, status, reason, body, H2O_SEND_ERROR_KEEP_HEADERS);
}

/*
 * No body at all, rather than h2o_send_inline(req, "", 0): h2o writes an empty body as a second
 * write, after waiting for the socket to be writable (two more system calls per push, seen with
 * strace).
 */
static void send_no_content(h2o_req_t *req)
{
    static h2o_generator_t generator = {NULL, NULL};
    req->res.status = 204;
    req->res.reason = "No Content";
    h2o_start_response(req, &generator);
    h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
}

static void send_unavailable(h2o_req_t *req, const char *body)
{
    /* Pub/Sub ignores Retry-After but other clients (replay, load balancers) use it. */
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
    send_text(req, 503, "Service Unavailable", body);
}

static void log_push(const pw_http_push_t *hp, int status);

static pw_metric_outcome_t outcome_of(const pw_http_push_t *hp, int status)
{
    if (status != 204)
        return PW_M_UNAVAILABLE;
    if (hp->push.message_id.base != NULL && !hp->push.new_receipt && hp->push.outcome != PW_OUTCOME_DEAD_LETTER)
        return PW_M_DUPLICATE;
    if (hp->push.dead_reason != NULL)
        return PW_M_DEAD_LETTER;
    return hp->push.outcome == PW_OUTCOME_IGNORED ? PW_M_IGNORED : PW_M_STORED;
}

/* Answers the push's request, once, if it is still there (and counts it, once, either way). */
static void answer_push(pw_http_push_t *hp, int status)
{
    h2o_timeout_unlink(&hp->deadline);
    if (!hp->counted) {
        pw_metrics_t *m = &hp->thread->metrics;
        hp->counted = 1;
        log_push(hp, status);
        pw_metrics_inc(&m->pushes[outcome_of(hp, status)], 1);
        pw_metrics_add_gauge(&m->in_flight, -1);
        pw_metrics_observe_seconds(&m->request_seconds, (pw_now_ms() - hp->started_ms) / 1000.0);
    }
    h2o_req_t *req = hp->req;
    if (req == NULL)
        return;
    hp->req = NULL;
    if (status == 204)
        send_no_content(req);
    else
        send_unavailable(req, status == 503 && hp->job.abandoned ? "deadline passed before commit\n"
                                                                 : "database unavailable, retry later\n");
}

static void on_cell_dispose(void *p)
{
    pw_http_push_t *hp = *(pw_http_push_t **)p;
    if (hp != NULL) {
        hp->req = NULL; /* the client went away: nothing to answer */
        hp->cell = NULL;
    }
}

/* Copies the hex digits of a trace id (32 of them at most): nothing else reaches the log line. */
static size_t copy_hex(char *out, size_t cap, const char *s, size_t len)
{
    size_t n = 0;
    while (n < len && n + 1 < cap && n < 32 && ((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f') ||
                                                 (s[n] >= 'A' && s[n] <= 'F'))) {
        out[n] = s[n];
        n++;
    }
    out[n] = '\0';
    return n;
}

static pw_str_t header_value(h2o_req_t *req, const char *lower_name);

/* The trace of X-Cloud-Trace-Context ("TRACE/SPAN;o=1") or W3C traceparent ("00-TRACE-SPAN-01"). */
static void capture_trace(h2o_req_t *req, char *out, size_t cap)
{
    char id[33];
    size_t n = 0;
    pw_str_t h = header_value(req, "x-cloud-trace-context");
    if (h.base != NULL) {
        n = copy_hex(id, sizeof id, h.base, h.len);
    } else if ((h = header_value(req, "traceparent")).base != NULL && h.len > 3) {
        n = copy_hex(id, sizeof id, h.base + 3, h.len - 3);
    }
    out[0] = '\0';
    if (n == 0)
        return;
    const char *project = getenv("GOOGLE_CLOUD_PROJECT");
    char esc[64];
    if (project != NULL && project[0] != '\0')
        snprintf(out, cap, "projects/%s/traces/%s", pw_log_escape(project, esc, sizeof esc), id);
    else
        snprintf(out, cap, "%s", id);
}

static void capture_ctx(h2o_req_t *req, pw_req_ctx_t *c)
{
    char raw[96];
    capture_trace(req, c->trace, sizeof c->trace);
    c->remote_ip[0] = '\0';
    struct sockaddr_storage ss;
    if (req->conn->callbacks->get_peername != NULL &&
        req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss) > 0) {
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, c->remote_ip, sizeof c->remote_ip);
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, c->remote_ip, sizeof c->remote_ip);
    }
    pw_str_t ua = header_value(req, "user-agent");
    snprintf(raw, sizeof raw, "%.*s", ua.base != NULL ? (int)(ua.len < 60 ? ua.len : 60) : 0, ua.base != NULL ? ua.base : "");
    pw_log_escape(raw, c->user_agent, sizeof c->user_agent);
    snprintf(raw, sizeof raw, "%.*s", (int)(req->path.len < 48 ? req->path.len : 48), req->path.base);
    pw_log_escape(raw, c->path, sizeof c->path);
}

/* Cloud Logging's httpRequest and trace members for a push's log line. */
static int request_members(char *out, size_t cap, const pw_req_ctx_t *c, int status, double ms)
{
    return snprintf(out, cap,
                    "\"httpRequest\":{\"requestMethod\":\"POST\",\"requestUrl\":\"%s\",\"status\":%d,"
                    "\"latency\":\"%.6fs\",\"remoteIp\":\"%s\",\"userAgent\":\"%s\"}%s%s%s",
                    c->path, status, ms / 1000.0, c->remote_ip, c->user_agent,
                    c->trace[0] ? ",\"logging.googleapis.com/trace\":\"" : "", c->trace, c->trace[0] ? "\"" : "");
}

/*
 * A reason as logged: up to its first quote. Proto errors quote the offending value ("not a Unix
 * time: \"...\""), which may be anything a sender wrote (a phone number, a message text): the
 * whole reason is in dead_letters, the log keeps only its description.
 */
static void loggable_reason(const char *reason, char *out, size_t cap)
{
    char cut[300];
    snprintf(cut, sizeof cut, "%.*s", (int)strcspn(reason, "\""), reason);
    pw_log_escape(cut, out, cap);
}

static void log_push(const pw_http_push_t *hp, int status)
{
    if (!pw_log_enabled(PW_LOG_DEBUG) && status == 204 && hp->push.dead_reason == NULL)
        return;
    /* Answered by its deadline while the database still has it (and may turn it into a dead letter). */
    pw_push_t none = {.message_id = hp->push.message_id};
    const pw_push_t *push = hp->with_db ? &none : &hp->push;
    static const char *const outcomes[] = {"stored", "ignored", "dead_letter"};
    char extra[1024], id[40] = "", reason[300] = "", req_members[512];
    /* Message ids are truncated: enough to find a push, not a full identifier in every line. */
    if (push->message_id.base != NULL)
        snprintf(id, sizeof id, "%.*s", (int)(push->message_id.len < 12 ? push->message_id.len : 12),
                 push->message_id.base);
    if (push->dead_reason != NULL)
        loggable_reason(push->dead_reason, reason, sizeof reason);
    char idesc[80];
    double ms = pw_now_ms() - hp->started_ms;
    pw_req_ctx_t ctx = {"", "", "", "/"};
    if (hp->req != NULL) /* only lines that are written pay for this */
        capture_ctx(hp->req, &ctx);
    request_members(req_members, sizeof req_members, &ctx, status, ms);
    snprintf(extra, sizeof extra,
             "\"status\":%d,\"outcome\":\"%s\",\"messageId\":\"%s\",\"statuses\":%zu,\"inbound\":%zu,\"ms\":%.1f%s%s%s,%s",
             status, outcomes[push->outcome], pw_log_escape(id, idesc, sizeof idesc), push->wh.n_statuses,
             push->wh.n_inbound, ms, reason[0] ? ",\"reason\":\"" : "", reason, reason[0] ? "\"" : "", req_members);
    if (push->dead_reason != NULL && status == 204)
        pw_log(PW_LOG_WARNING, extra, "push kept as a dead letter");
    else if (status != 204)
        pw_log(PW_LOG_WARNING, extra, "push not committed, answered %d", status);
    else
        pw_log(PW_LOG_DEBUG, extra, "push committed");
}

static void on_db_done(pw_db_job_t *job, int status)
{
    pw_http_push_t *hp = H2O_STRUCT_FROM_MEMBER(pw_http_push_t, job, job);
    hp->with_db = 0;
    answer_push(hp, status);
    if (hp->cell != NULL)
        *hp->cell = NULL;
    hp->thread->pushes_alive--;
    pw_push_dispose(&hp->push);
    free(hp);
}

static void on_deadline(h2o_timeout_entry_t *entry)
{
    pw_http_push_t *hp = H2O_STRUCT_FROM_MEMBER(pw_http_push_t, deadline, entry);
    hp->job.abandoned = 1; /* still written if already sent; skipped if still queued */
    answer_push(hp, 503);
}

static void count_events(pw_metrics_t *m, const pw_webhook_t *wh)
{
    for (size_t i = 0; i < wh->n_statuses; i++)
        pw_metrics_inc(&m->statuses[pw_metrics_status_index(wh->statuses[i].status.base, wh->statuses[i].status.len)], 1);
    for (size_t i = 0; i < wh->n_inbound; i++)
        pw_metrics_inc(&m->inbound[pw_metrics_type_index(wh->inbound[i].type.base, wh->inbound[i].type.len)], 1);
}

static void send_metrics(h2o_req_t *req)
{
    pw_metrics_t *ms[256];
    pw_auth_stats_t a, total = {0};
    int n = n_threads < 256 ? n_threads : 256;
    for (int i = 0; i < n; i++) {
        ms[i] = &all_threads[i].metrics;
        if (all_threads[i].auth != NULL) {
            pw_auth_get_stats(all_threads[i].auth, &a);
            total.cache_hits += a.cache_hits;
            total.verified += a.verified;
            total.rejected += a.rejected;
        }
    }
    pw_keys_stats_t ks;
    pw_keys_stats(&ks);
    pw_metrics_extra_t extra = {ks.fetches,         ks.failures,     ks.keys, total.cache_hits,
                                total.verified,     total.rejected,  config->auth_mode == PW_AUTH_OFF};
    pw_buf_t body = {0};
    pw_metrics_render(&body, ms, (size_t)n, &extra);
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = body.len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; version=0.0.4; charset=utf-8"));
    h2o_send_inline(req, body.base, body.len);
    pw_buf_dispose(&body);
}

static pw_str_t header_value(h2o_req_t *req, const char *lower_name)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, lower_name, strlen(lower_name), -1);
    if (i < 0)
        return PW_STR_NULL;
    return pw_str(req->headers.entries[i].value.base, req->headers.entries[i].value.len);
}

/* Answers a push whose token was not accepted; nothing is written for it. */
static void send_auth_failure(h2o_req_t *req, int status, const char *reason)
{
    char body[300]; /* h2o_send_inline copies it */
    snprintf(body, sizeof body, "%s\n", reason);
    if (status == 401) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT("Bearer error=\"invalid_token\""));
        send_text(req, 401, "Unauthorized", body);
    } else if (status == 403) {
        send_text(req, 403, "Forbidden", body);
    } else {
        send_unavailable(req, body);
    }
    pw_metrics_inc(&self->metrics.pushes[status == 401 ? PW_M_UNAUTHORIZED : status == 403 ? PW_M_FORBIDDEN : PW_M_UNAVAILABLE], 1);
    char esc[300], extra[900], req_members[512];
    pw_req_ctx_t ctx;
    capture_ctx(req, &ctx);
    request_members(req_members, sizeof req_members, &ctx, status, 0);
    snprintf(extra, sizeof extra, "\"status\":%d,\"reason\":\"%s\",%s", status, pw_log_escape(reason, esc, sizeof esc),
             req_members);
    pw_log(PW_LOG_WARNING, extra, "push rejected by authentication");
}

static void handle_push(h2o_req_t *req)
{
    if (atomic_load(&stopping)) {
        send_unavailable(req, "shutting down, retry later\n");
        return;
    }
    char reason[200];
    int status = pw_auth_check(self->auth, header_value(req, "authorization"), reason, sizeof reason);
    if (status != 0) {
        send_auth_failure(req, status, reason);
        return;
    }
    pw_unwrapped_meta_t meta = {
        .message_id = header_value(req, "x-goog-pubsub-message-id"),
        .publish_time = header_value(req, "x-goog-pubsub-publish-time"),
        .subscription = header_value(req, "x-goog-pubsub-subscription-name"),
        .ordering_key = header_value(req, "x-goog-ordering-key"),
    };
    pw_http_push_t *hp = pw_xcalloc(1, sizeof *hp);
    hp->started_ms = pw_now_ms();
    hp->thread = self;
    hp->req = req;
    pw_push_decode(&hp->push, req->entity.base != NULL ? req->entity.base : "", req->entity.len, &meta);
    hp->job.push = &hp->push;
    hp->job.on_done = on_db_done;
    count_events(&self->metrics, &hp->push.wh);
    pw_metrics_add_gauge(&self->metrics.in_flight, 1);
    hp->cell = h2o_mem_alloc_shared(&req->pool, sizeof(pw_http_push_t *), on_cell_dispose);
    *hp->cell = hp;
    hp->deadline.cb = on_deadline;
    h2o_timeout_link(self->ctx.loop, &self->deadline, &hp->deadline);
    self->pushes_alive++;
    hp->with_db = 1;
    pw_db_submit(self->db, &hp->job);
}

/* ---- routing ---- */

/* Routes on the path as sent (up to '?'): h2o's normalized path would turn "/%2e%2e/" into "/". */
static int path_is(h2o_req_t *req, const char *path)
{
    size_t n = req->path.len;
    const char *q = memchr(req->path.base, '?', n);
    if (q != NULL)
        n = (size_t)(q - req->path.base);
    return h2o_memis(req->path.base, n, path, strlen(path));
}

static int method_is(h2o_req_t *req, const char *m)
{
    return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

static int on_req(h2o_handler_t *handler, h2o_req_t *req)
{
    (void)handler;
    int get = method_is(req, "GET") || method_is(req, "HEAD");
    if (path_is(req, "/") || path_is(req, "/push")) {
        if (method_is(req, "POST")) {
            handle_push(req);
        } else {
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("POST"));
            send_text(req, 405, "Method Not Allowed", "pushes are POST requests\n");
        }
    } else if (path_is(req, "/healthz") && get) {
        send_text(req, 200, "OK", "ok\n");
    } else if (path_is(req, "/readyz") && get) {
        if (atomic_load(&stopping))
            send_unavailable(req, "shutting down\n");
        else if (!pw_db_ready(database))
            send_unavailable(req, "database not connected\n");
        else if (!pw_auth_ready(config))
            send_unavailable(req, "signing keys not loaded\n");
        else
            send_text(req, 200, "OK", "ready\n");
    } else if (path_is(req, "/metrics") && get) {
        send_metrics(req);
    } else if (path_is(req, "/healthz") || path_is(req, "/readyz") || path_is(req, "/metrics")) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("GET, HEAD"));
        send_text(req, 405, "Method Not Allowed", "use GET\n");
    } else {
        send_text(req, 404, "Not Found", "not found\n");
    }
    return 0;
}

/* ---- loops ---- */

static void on_conn_close(void *data)
{
    pw_conn_t *c = data;
    c->prev->next = c->next;
    c->next->prev = c->prev;
    c->thread->n_conns--;
    free(c);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    if (err != NULL)
        return;
    /* Take a few connections per wakeup; the other threads' listeners share the load. */
    for (int i = 0; i < 16; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            return;
        pw_conn_t *c = pw_xcalloc(1, sizeof *c);
        c->sock = sock;
        c->thread = self;
        c->next = self->conns.next;
        c->prev = &self->conns;
        self->conns.next->prev = c;
        self->conns.next = c;
        self->n_conns++;
        sock->on_close.cb = on_conn_close;
        sock->on_close.data = c;
        h2o_accept(&self->accept_ctx, sock);
    }
}

/*
 * After the pushes are answered: half-close the reading side of every connection still open
 * (idle keep-alive ones), so that h2o sees end-of-file and frees each connection through its own
 * code; then free the loop itself. If some connection will not go (a client that stopped
 * reading), leave it all to the process exit rather than free memory h2o still uses.
 */
/*
 * h2o_context_dispose asserts that none of the context's timers is armed, but h2o keeps a
 * periodic entry of its own on one of them. Once no connection is left, nothing will run on this
 * loop again: take those entries off before disposing.
 */
static void disarm_context_timers(h2o_context_t *ctx)
{
    h2o_timeout_t *const timers[] = {&ctx->zero_timeout,        &ctx->one_sec_timeout,     &ctx->hundred_ms_timeout,
                                     &ctx->handshake_timeout,   &ctx->http1.req_timeout,   &ctx->http2.idle_timeout,
                                     &ctx->http2.graceful_shutdown_timeout, &ctx->proxy.io_timeout};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
        while (!h2o_linklist_is_empty(&timers[i]->_entries))
            h2o_timeout_unlink(H2O_STRUCT_FROM_MEMBER(h2o_timeout_entry_t, _link, timers[i]->_entries.next));
}

static void close_connections_and_free_loop(pw_thread_t *t)
{
    for (pw_conn_t *c = t->conns.next; c != &t->conns; c = c->next)
        shutdown(h2o_socket_get_fd(c->sock), SHUT_RD);
    double until = pw_now_ms() + PW_HTTP_CLOSE_MS;
    while (t->n_conns > 0 && pw_now_ms() < until)
        h2o_evloop_run(t->ctx.loop, 10);
    h2o_evloop_run(t->ctx.loop, 0);
    if (t->n_conns > 0) {
        pw_log_warning("stop: %zu connection(s) would not close; leaving them to the exit", t->n_conns);
        return;
    }
    disarm_context_timers(&t->ctx);
    h2o_loop_t *loop = t->ctx.loop;
    h2o_timeout_dispose(loop, &t->deadline);
    h2o_context_dispose(&t->ctx);
    h2o_evloop_destroy(loop);
    t->torn_down = 1;
}

/*
 * One listening socket, which every loop watches through its own dup (as h2o's own server does).
 * Not SO_REUSEPORT: with it, a second process of the same user could bind the same port and
 * silently take half the pushes (seen in tests, where ports are picked at random); without it,
 * "address in use" stops that second start instead.
 */
static int open_listener(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int on = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(fd, SOMAXCONN) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void *run_loop(void *arg)
{
    pw_thread_t *t = arg;
    self = t;
    t->conns.next = t->conns.prev = &t->conns;
    h2o_context_init(&t->ctx, h2o_evloop_create(), &globalconf);
    t->accept_ctx.ctx = &t->ctx;
    t->accept_ctx.hosts = globalconf.hosts;
    h2o_timeout_init(t->ctx.loop, &t->deadline, (uint64_t)config->deadline_ms);
    int home = t == &all_threads[0];
    if (home) {
        database = pw_db_new(&t->ctx, config, &t->metrics);
        atomic_store(&database_created, 1);
    }
    t->db = pw_db_port_new(database, &t->ctx, home);
    t->auth = pw_auth_new(config);
    t->listener = h2o_evloop_socket_create(t->ctx.loop, t->listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(t->listener, on_accept);

    while (!atomic_load(&stopping))
        h2o_evloop_run(t->ctx.loop, PW_LOOP_TICK_MS);

    /* Stop accepting; let what is in flight commit (or hit its deadline) within the drain time. */
    h2o_socket_read_stop(t->listener);
    h2o_socket_close(t->listener);
    t->listener = NULL;
    h2o_context_request_shutdown(&t->ctx);
    atomic_fetch_sub(&loops_submitting, 1); /* handle_push answers 503 from now on */
    double until = pw_now_ms() + PW_HTTP_DRAIN_MS;
    if (home) {
        /* The database serves every loop: it stays until no loop submits and all is answered. */
        while ((atomic_load(&loops_submitting) > 0 || pw_db_outstanding(database) > 0) && pw_now_ms() < until)
            h2o_evloop_run(t->ctx.loop, PW_LOOP_TICK_MS);
        while (atomic_load(&loops_submitting) > 0) /* the others stop submitting within a tick */
            h2o_evloop_run(t->ctx.loop, PW_LOOP_TICK_MS);
        pw_db_free(database); /* answers 503 to anything left, on its loop */
        database = NULL;
        atomic_store(&database_closed, 1);
    }
    /* Every push this loop submitted comes back (committed, or 503 once the database closes).
       And the loop's message queue stays until the database is closed: h2o's send of an answer
       still touches the queue after the message is in it. */
    while (t->pushes_alive > 0 || !atomic_load(&database_closed))
        h2o_evloop_run(t->ctx.loop, PW_LOOP_TICK_MS);
    pw_db_port_free(t->db);
    t->db = NULL;
    pw_auth_free(t->auth);
    t->auth = NULL;
    close_connections_and_free_loop(t);
    return NULL;
}

/* Blocks SIGTERM/SIGINT in every thread; the main thread waits for them with sigwait. */
static void block_stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    pthread_sigmask(SIG_BLOCK, set, NULL);
}

int pw_http_serve(const pw_config_t *cfg)
{
    config = cfg;
    signal(SIGPIPE, SIG_IGN);
    sigset_t stop_set;
    block_stop_signals(&stop_set);

    h2o_config_init(&globalconf);
    globalconf.max_request_entity_size = cfg->max_body_bytes;
    globalconf.server_name = h2o_iovec_init(H2O_STRLIT("pushworker"));
    h2o_hostconf_t *host = h2o_config_register_host(&globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof *handler);
    handler->on_req = on_req;

    pw_thread_t *threads = pw_xcalloc((size_t)cfg->threads, sizeof *threads);
    all_threads = threads;
    n_threads = cfg->threads;
    int listen_fd = open_listener(cfg->port);
    if (listen_fd < 0) {
        pw_log_error("cannot listen on 0.0.0.0:%d: %s", cfg->port, strerror(errno));
        free(threads);
        return -1;
    }
    for (int i = 0; i < cfg->threads; i++)
        threads[i].listen_fd = i == 0 ? listen_fd : fcntl(listen_fd, F_DUPFD_CLOEXEC, 0);
    atomic_store(&loops_submitting, cfg->threads);
    atomic_store(&database_created, 0);
    atomic_store(&database_closed, 0);
    /* The first loop creates the database; the others need it to exist. */
    pthread_create(&threads[0].tid, NULL, run_loop, &threads[0]);
    while (!atomic_load(&database_created))
        sched_yield();
    for (int i = 1; i < cfg->threads; i++)
        pthread_create(&threads[i].tid, NULL, run_loop, &threads[i]);
    pw_log_info("listening on 0.0.0.0:%d with %d thread(s), auth %s", cfg->port, cfg->threads,
                pw_auth_mode_name(cfg->auth_mode));

    int sig;
    sigwait(&stop_set, &sig);
    pw_log_info("%s received: draining in-flight pushes", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    atomic_store(&stopping, 1);
    int all_torn_down = 1;
    for (int i = 0; i < cfg->threads; i++) {
        pthread_join(threads[i].tid, NULL);
        all_torn_down &= threads[i].torn_down;
    }
    all_threads = NULL;
    n_threads = 0;
    free(threads);
    if (all_torn_down)
        h2o_config_dispose(&globalconf);
    pw_log_info("stopped");
    return 0;
}
