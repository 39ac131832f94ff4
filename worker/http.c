/*
 * Http: the h2o event loops. Each path is an h2o handler of its own, on a pathconf of its own,
 * and answers only its path exactly as sent. A push is authenticated (worker/auth.h), decoded and
 * submitted through the loop's Dispatch (worker/dispatch.h), and answered when Dispatch calls
 * back on this loop; results become HTTP statuses in one place (http_status_of). Also here: the
 * in-flight byte budget, the log line of each push, /metrics from the registry's slots, and the
 * stop, on events: each loop is told by a message, stops accepting, waits for the answers to its
 * own pushes, closes its connections. An HTTP/1 connection whose push is with Dispatch is parked
 * (on_read_parked): still registered for reading, so a push costs epoll no change.
 */
#include "worker/http.h"

#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>

#include "worker/auth.h"
#include "worker/jwks.h"
#include "worker/log.h"
#include "worker/util.h"

/*
 * h2o 2.2 parses requests with picohttpparser, exported by libh2o-evloop but without its header
 * in Debian's packages: the two declarations the body budget needs (picohttpparser.h, unchanged
 * since 2014). Reading the headers with h2o's own parser means the budget sees the same
 * Content-Length h2o will read.
 */
struct phr_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};
int phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len, const char **path, size_t *path_len,
                      int *minor_version, struct phr_header *headers, size_t *num_headers, size_t last_len);

/* What every loop shares: set before the loops start, then only read (but for the atomic). */
typedef struct {
    const pw_config_t *cfg;
    pw_dispatch_t *dispatch;
    pw_metrics_registry_t *metrics;
    h2o_globalconf_t globalconf;
    /* The loops and the main thread meet twice: once every loop can be told to stop, and once
       the main thread has told them all (h2o's send of a message still touches the receiving
       loop's queue after the message is in it: no loop frees its queue before then). */
    pthread_barrier_t started, told;
    /* Bytes of request bodies held by requests and pushes in flight, all loops together. */
    _Atomic size_t inflight_bytes;
} pw_http_server_t;

/*
 * An event loop and everything of it: its h2o context (so a request finds its loop with
 * loop_of), its connections, its Auth, its Dispatch loop and its metrics slot. Only its thread
 * touches it, but for the stop message the main thread sends.
 */
typedef struct {
    h2o_context_t ctx;
    pw_http_server_t *server;
    pthread_t tid;
    int listen_fd;
    h2o_socket_t *listener;
    h2o_accept_ctx_t accept_ctx;
    h2o_linklist_t conns; /* pw_http_conn_t.link */
    size_t n_conns;
    pw_auth_t *auth;
    pw_dispatch_loop_t *dispatch;
    pw_metrics_t *metrics; /* its slot of the registry */
    h2o_timeout_t deadline; /* PUSH_DEADLINE_MS */
    size_t pushes_alive;    /* submitted and not answered by Dispatch yet */
    h2o_multithread_receiver_t control;
    h2o_multithread_message_t stop_msg;
    int stopping;
    int close_timed_out;
    int torn_down; /* everything of this loop was freed */
} pw_http_loop_t;

/*
 * An accepted connection, listed so that a stop can close the idle ones (h2o 2.2 keeps no list).
 * Over HTTP/1 its socket's read callback is ours (on_read_budgeted), in front of h2o's: h2o 2.2
 * calls no handler before a request's body is whole, so this is where a body is first seen.
 */
typedef struct {
    h2o_socket_t *sock;
    h2o_linklist_t link; /* in its loop's conns */
    pw_http_loop_t *loop;
    h2o_socket_cb h2o_read;     /* h2o's read callback, called by ours */
    size_t reserved;            /* budget taken for the request being read, by its Content-Length */
    int headers_seen;           /* the request being read has been looked at */
    int refused;                /* answered 413 or 503 here: what follows is discarded until the end */
    h2o_timeout_entry_t rewrap; /* puts our callback back once h2o has restarted reading (zero timeout) */
} pw_http_conn_t;

/* A handler: one path, answered only when the path as sent (up to '?') is exactly it. */
typedef struct {
    h2o_handler_t super;
    pw_http_server_t *server;
    const char *path;
} pw_route_t;

/* What the logs say about a request (read from it when a line is written; empty once it is gone). */
typedef struct {
    char trace[128];     /* "projects/P/traces/T", or "T" without GOOGLE_CLOUD_PROJECT; "" when none */
    char remote_ip[48];
    char user_agent[96]; /* escaped for JSON, truncated */
    char path[64];       /* escaped for JSON, truncated */
} pw_req_ctx_t;

/* A push between its request and Dispatch's answer. Lives on the heap: it may outlive the request. */
typedef struct {
    pw_push_t push;
    pw_http_loop_t *loop;
    h2o_req_t *req; /* NULL once answered or once the request is gone */
    void **cell;    /* in req->pool; its dispose tells us the request is gone */
    h2o_timeout_entry_t deadline;
    size_t reserved; /* bytes of the in-flight budget this push holds until it is freed */
    double started_ms;
    pw_outcome_t decoded; /* its outcome as decoded (Dispatch's answer may say duplicate) */
    int counted;          /* in the metrics already */
    int timed_out;        /* its deadline answered it, and gave it up */
    int submitted;        /* with Dispatch, not answered: its fields are Dispatch's */
} pw_http_push_t;

static pw_http_loop_t *loop_of(h2o_req_t *req)
{
    return H2O_STRUCT_FROM_MEMBER(pw_http_loop_t, ctx, req->conn->ctx);
}

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

/*
 * The one place a result (0 or a PW_E* code, of Auth or Dispatch) becomes an HTTP status: 0
 * (done) 204; PW_EUNAUTH 401; PW_EFORBIDDEN 403; anything else (unavailable, refused beyond what
 * could be kept, timed out, canceled) 503, so that Pub/Sub redelivers.
 */
static int http_status_of(int rc)
{
    switch (rc) {
    case 0:
        return 204;
    case PW_EUNAUTH:
        return 401;
    case PW_EFORBIDDEN:
        return 403;
    default:
        return 503;
    }
}

/* Answers a result as http_status_of says, with body (a line) unless it is 204. */
static void send_result(h2o_req_t *req, int rc, const char *body)
{
    switch (http_status_of(rc)) {
    case 204:
        send_no_content(req);
        break;
    case 401:
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT("Bearer error=\"invalid_token\""));
        send_text(req, 401, "Unauthorized", body);
        break;
    case 403:
        send_text(req, 403, "Forbidden", body);
        break;
    default:
        /* Pub/Sub ignores Retry-After but other clients (replay, load balancers) use it. */
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
        send_text(req, 503, "Service Unavailable", body);
        break;
    }
}

static void send_unavailable(h2o_req_t *req, const char *body)
{
    send_result(req, PW_EUNAVAIL, body);
}

static void log_push(const pw_http_push_t *hp, int status);
static void park_reading(h2o_req_t *req);
static void on_read_parked(h2o_socket_t *sock, const char *err);
static void unpark_reading(h2o_req_t *req);

/* ---- the in-flight byte budget (INFLIGHT_BYTES_MAX) ---- */

/*
 * Takes n bytes of the budget: 0, or -1 when they would take it over the limit while something
 * else holds some. One push alone is always taken (up to MAX_BODY_BYTES, which h2o enforces):
 * refusing a push larger than the whole budget would have Pub/Sub redeliver it forever.
 */
static int budget_take(pw_http_server_t *s, size_t n)
{
    size_t held = atomic_load(&s->inflight_bytes);
    do {
        if (held > 0 && (held + n > s->cfg->inflight_bytes_max || held + n < held))
            return -1;
    } while (!atomic_compare_exchange_weak(&s->inflight_bytes, &held, held + n));
    return 0;
}

static void budget_give(pw_http_server_t *s, size_t n)
{
    if (n > 0)
        atomic_fetch_sub(&s->inflight_bytes, n);
}

/*
 * One outcome per push, the same in the metrics, the log line and pubsub_receipts.outcome: a
 * push whose good items were stored and whose rejected ones were kept in dead_letters is
 * "stored" (its rows are there, and a redrive must not write them again); the dead letter it
 * left is counted by pushworker_dead_letters_total.
 */
static pw_metric_outcome_t outcome_of(const pw_http_push_t *hp, int status)
{
    if (status != 204)
        return PW_M_UNAVAILABLE;
    switch (hp->push.outcome) {
    case PW_OUTCOME_DUPLICATE:
        return PW_M_DUPLICATE;
    case PW_OUTCOME_DEAD_LETTER:
        return PW_M_DEAD_LETTER;
    case PW_OUTCOME_IGNORED:
        return PW_M_IGNORED;
    default:
        return PW_M_STORED;
    }
}

/* Answers the push's request with Dispatch's result, once, if it is still there (and counts it, once, either way). */
static void answer_push(pw_http_push_t *hp, int rc)
{
    int status = http_status_of(rc);
    h2o_timeout_unlink(&hp->deadline);
    if (!hp->counted) {
        pw_metrics_t *m = hp->loop->metrics;
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
    unpark_reading(req);
    send_result(req, rc, hp->timed_out ? "deadline passed before commit\n" : "database unavailable, retry later\n");
}

static void on_cell_dispose(void *p)
{
    pw_http_push_t *hp = *(pw_http_push_t **)p;
    if (hp != NULL) {
        hp->req = NULL; /* the client went away: nothing to answer */
        hp->cell = NULL;
    }
}

/* ---- log lines ---- */

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

static pw_str_t header_value(h2o_req_t *req, const char *lower_name)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, lower_name, strlen(lower_name), -1);
    if (i < 0)
        return PW_STR_NULL;
    return pw_str(req->headers.entries[i].value.base, req->headers.entries[i].value.len);
}

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
    h2o_iovec_t path = req->path.base != NULL ? req->path : req->input.path;
    snprintf(raw, sizeof raw, "%.*s", (int)(path.len < 48 ? path.len : 48), path.base != NULL ? path.base : "");
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
    /* Answered by its deadline while Dispatch still has it (and may turn it into a dead letter). */
    pw_push_t none = {.message_id = hp->push.message_id};
    const pw_push_t *push = hp->submitted ? &none : &hp->push;
    static const char *const outcomes[] = {"stored", "ignored", "dead_letter", "duplicate"};
    char extra[PW_LOG_LINE_MAX], id[40] = "", reason[300] = "", req_members[1024];
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
             status, status == 204 ? outcomes[push->outcome] : "unavailable", pw_log_escape(id, idesc, sizeof idesc),
             push->wh.n_statuses, push->wh.n_inbound, ms, reason[0] ? ",\"reason\":\"" : "", reason, reason[0] ? "\"" : "",
             req_members);
    /* The message says what the push is (a redelivery: what it was decoded as); the outcome member, what became of it. */
    pw_outcome_t kind = push->outcome == PW_OUTCOME_DUPLICATE ? hp->decoded : push->outcome;
    if (push->dead_reason != NULL && status == 204 && kind != PW_OUTCOME_DEAD_LETTER)
        pw_log(PW_LOG_WARNING, extra, "push stored; its rejected part kept as a dead letter");
    else if (push->dead_reason != NULL && status == 204)
        pw_log(PW_LOG_WARNING, extra, "push kept as a dead letter");
    else if (status != 204)
        pw_log(PW_LOG_WARNING, extra, "push not committed, answered %d", status);
    else
        pw_log(PW_LOG_DEBUG, extra, "push committed");
}

/* The log line of a request answered 503 because of the budget (over HTTP/1 before its body was read). */
static void log_over_budget(pw_http_server_t *s, const pw_req_ctx_t *ctx, size_t bytes)
{
    char extra[PW_LOG_LINE_MAX], req_members[1024];
    request_members(req_members, sizeof req_members, ctx, 503, 0);
    snprintf(extra, sizeof extra, "\"status\":503,\"outcome\":\"over_budget\",\"bytes\":%zu,\"inflightBytes\":%zu,%s", bytes,
             (size_t)atomic_load(&s->inflight_bytes), req_members);
    pw_log(PW_LOG_WARNING, extra, "push refused: the bodies in flight would go over INFLIGHT_BYTES_MAX (%zu bytes)",
           s->cfg->inflight_bytes_max);
}

/* ---- pushes ---- */

static void count_events(pw_metrics_t *m, const pw_webhook_t *wh)
{
    for (size_t i = 0; i < wh->n_statuses; i++)
        pw_metrics_inc(&m->statuses[pw_metrics_status_index(wh->statuses[i].status.base, wh->statuses[i].status.len)], 1);
    for (size_t i = 0; i < wh->n_inbound; i++)
        pw_metrics_inc(&m->inbound[pw_metrics_type_index(wh->inbound[i].type.base, wh->inbound[i].type.len)], 1);
}

/* Dispatch's answer, on this loop: result 0 (committed: p->outcome says how) or a PW_E* code. */
static void on_push_done(pw_push_t *p, int result)
{
    pw_http_push_t *hp = H2O_STRUCT_FROM_MEMBER(pw_http_push_t, push, p);
    pw_http_loop_t *l = hp->loop;
    hp->submitted = 0;
    /* Events are counted from what was committed: once, by the push that wrote them (not a
       redelivery, not a second copy in the same group), even if its deadline answered first. */
    if (result == 0 && p->outcome != PW_OUTCOME_DUPLICATE) {
        count_events(l->metrics, &p->wh);
        if (p->dead_reason != NULL)
            pw_metrics_inc(&l->metrics->dead_letters, 1);
    }
    answer_push(hp, result);
    if (hp->cell != NULL)
        *hp->cell = NULL;
    l->pushes_alive--;
    pw_push_dispose(p);
    budget_give(l->server, hp->reserved); /* nothing reads the push any more, and it is answered */
    free(hp);
}

static void on_deadline(h2o_timeout_entry_t *entry)
{
    pw_http_push_t *hp = H2O_STRUCT_FROM_MEMBER(pw_http_push_t, deadline, entry);
    hp->timed_out = 1;
    pw_dispatch_abandon(&hp->push); /* still written if already sent; not if still queued */
    answer_push(hp, PW_ETIMEDOUT);
}

/* Copies the loop's authentication counters to its metrics slot. */
static void publish_auth_stats(pw_http_loop_t *l)
{
    pw_auth_stats_t a;
    pw_auth_get_stats(l->auth, &a);
    atomic_store_explicit(&l->metrics->auth_cache_hits, a.cache_hits, memory_order_relaxed);
    atomic_store_explicit(&l->metrics->auth_verified, a.verified, memory_order_relaxed);
    atomic_store_explicit(&l->metrics->auth_rejected, a.rejected, memory_order_relaxed);
}

/* Answers a push whose token was not accepted (rc from Auth); nothing is written for it. */
static void send_auth_failure(pw_http_loop_t *l, h2o_req_t *req, int rc, const char *reason)
{
    char body[300]; /* h2o_send_inline copies it */
    snprintf(body, sizeof body, "%s\n", reason);
    send_result(req, rc, body);
    int status = http_status_of(rc);
    pw_metrics_inc(&l->metrics->pushes[status == 401 ? PW_M_UNAUTHORIZED : status == 403 ? PW_M_FORBIDDEN : PW_M_UNAVAILABLE], 1);
    char esc[300], extra[PW_LOG_LINE_MAX], req_members[1024];
    pw_req_ctx_t ctx;
    capture_ctx(req, &ctx);
    request_members(req_members, sizeof req_members, &ctx, status, 0);
    snprintf(extra, sizeof extra, "\"status\":%d,\"reason\":\"%s\",%s", status, pw_log_escape(reason, esc, sizeof esc),
             req_members);
    pw_log(PW_LOG_WARNING, extra, "push rejected by authentication");
}

/* Takes ownership of reserved (budget bytes already taken for this request's body). */
static void handle_push(pw_http_loop_t *l, h2o_req_t *req, size_t reserved)
{
    pw_http_server_t *s = l->server;
    if (l->stopping) {
        budget_give(s, reserved);
        send_unavailable(req, "shutting down, retry later\n");
        return;
    }
    char reason[200];
    int rc = pw_auth_check(l->auth, header_value(req, "authorization"), reason, sizeof reason);
    publish_auth_stats(l);
    if (rc != 0) {
        budget_give(s, reserved);
        send_auth_failure(l, req, rc, reason);
        return;
    }
    /* A body not reserved before it was read (chunked, HTTP/2, or read before our callback was
       back on the connection) is reserved now, by its size: refused here, it is at least not
       decoded nor held through the transaction. */
    if (req->entity.len > reserved) {
        if (budget_take(s, req->entity.len - reserved) != 0) {
            budget_give(s, reserved);
            pw_metrics_inc(&l->metrics->pushes[PW_M_OVER_BUDGET], 1);
            pw_req_ctx_t ctx;
            capture_ctx(req, &ctx);
            log_over_budget(s, &ctx, req->entity.len);
            send_unavailable(req, "too many bytes in flight, retry later\n");
            return;
        }
        reserved = req->entity.len;
    }
    pw_unwrapped_meta_t meta = {
        .message_id = header_value(req, "x-goog-pubsub-message-id"),
        .publish_time = header_value(req, "x-goog-pubsub-publish-time"),
        .subscription = header_value(req, "x-goog-pubsub-subscription-name"),
        .ordering_key = header_value(req, "x-goog-ordering-key"),
    };
    pw_http_push_t *hp = pw_xcalloc(1, sizeof *hp);
    hp->started_ms = pw_now_ms();
    hp->loop = l;
    hp->req = req;
    hp->reserved = reserved;
    pw_push_decode(&hp->push, req->entity.base != NULL ? req->entity.base : "", req->entity.len, &meta);
    hp->decoded = hp->push.outcome;
    pw_metrics_add_gauge(&l->metrics->in_flight, 1);
    hp->cell = h2o_mem_alloc_shared(&req->pool, sizeof(pw_http_push_t *), on_cell_dispose);
    *hp->cell = hp;
    hp->deadline.cb = on_deadline;
    h2o_timeout_link(l->ctx.loop, &l->deadline, &hp->deadline);
    l->pushes_alive++;
    hp->submitted = 1;
    park_reading(req); /* before the submit, which may answer at once */
    pw_dispatch_submit(l->dispatch, &hp->push, on_push_done);
}

static void send_metrics(pw_http_server_t *s, h2o_req_t *req)
{
    /* Only the registry's slots: never a loop's own objects (its pw_auth_t is freed while the
       other loops still answer /metrics). */
    pw_keys_stats_t ks;
    pw_keys_stats(&ks);
    pw_metrics_extra_t extra = {ks.fetches, ks.failures, ks.keys, atomic_load(&s->inflight_bytes), s->cfg->inflight_bytes_max,
                                s->cfg->auth_mode == PW_AUTH_OFF};
    pw_buf_t body = {0};
    pw_metrics_render(&body, s->metrics, &extra);
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = body.len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; version=0.0.4; charset=utf-8"));
    h2o_send_inline(req, body.base, body.len);
    pw_buf_dispose(&body);
}

/* ---- routes: one handler per path ---- */

/* 1 when the path as sent (up to '?') is exactly path: h2o's normalized path would turn "/%2e%2e/" into "/". */
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

static void on_conn_request_disposed(void *p);

/*
 * The connection of an HTTP/1 request (NULL over HTTP/2, where a socket carries many requests
 * and h2o reads it with its own callback).
 */
static pw_http_conn_t *conn_of(h2o_req_t *req)
{
    if (req->version >= 0x200 || req->conn->callbacks->get_socket == NULL)
        return NULL;
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    return sock != NULL ? sock->on_close.data : NULL;
}

/*
 * Hands the budget taken for this request's body over to the request, and arranges for our read
 * callback to be put back when h2o reads the connection's next request (h2o sets its own each
 * time it starts reading).
 */
static size_t take_conn_reservation(h2o_req_t *req)
{
    pw_http_conn_t *c = conn_of(req);
    if (c == NULL)
        return 0;
    size_t reserved = c->reserved;
    c->reserved = 0;
    pw_http_conn_t **cell = h2o_mem_alloc_shared(&req->pool, sizeof *cell, on_conn_request_disposed);
    *cell = c;
    return reserved;
}

/*
 * Every handler starts here. h2o picks a pathconf by prefix of the normalized path: only the
 * exact path as sent is this route's; anything else is answered 404. A body that is no push is
 * not kept: its budget is given back. Returns 1 when the handler answers the request.
 */
static int route_begin(h2o_handler_t *self, h2o_req_t *req, size_t *reserved)
{
    pw_route_t *r = (pw_route_t *)self;
    *reserved = take_conn_reservation(req);
    if (path_is(req, r->path))
        return 1;
    budget_give(r->server, *reserved);
    send_text(req, 404, "Not Found", "not found\n");
    return 0;
}

/* A GET route: 1 when the request is this path's GET or HEAD, else answered (404, 405). */
static int route_begin_get(h2o_handler_t *self, h2o_req_t *req)
{
    size_t reserved;
    if (!route_begin(self, req, &reserved))
        return 0;
    budget_give(((pw_route_t *)self)->server, reserved);
    if (method_is(req, "GET") || method_is(req, "HEAD"))
        return 1;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("GET, HEAD"));
    send_text(req, 405, "Method Not Allowed", "use GET\n");
    return 0;
}

/* "/" and "/push": POST a push. */
static int on_push_req(h2o_handler_t *self, h2o_req_t *req)
{
    size_t reserved;
    if (!route_begin(self, req, &reserved))
        return 0;
    if (method_is(req, "POST")) {
        handle_push(loop_of(req), req, reserved);
        return 0;
    }
    budget_give(((pw_route_t *)self)->server, reserved);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("POST"));
    send_text(req, 405, "Method Not Allowed", "pushes are POST requests\n");
    return 0;
}

/* "/livez" and "/healthz": Cloud Run keeps /healthz for itself (it never reaches the container);
   /healthz stays for the clients that still ask it. */
static int on_live_req(h2o_handler_t *self, h2o_req_t *req)
{
    if (route_begin_get(self, req))
        send_text(req, 200, "OK", "ok\n");
    return 0;
}

static int on_ready_req(h2o_handler_t *self, h2o_req_t *req)
{
    if (!route_begin_get(self, req))
        return 0;
    pw_http_server_t *s = ((pw_route_t *)self)->server;
    if (loop_of(req)->stopping)
        send_unavailable(req, "shutting down\n");
    else if (!pw_dispatch_ready(s->dispatch))
        send_unavailable(req, "database not connected, or not answering\n");
    else if (!pw_auth_ready(s->cfg))
        send_unavailable(req, "no signing keys: not fetched yet, or expired while refreshes failed\n");
    else
        send_text(req, 200, "OK", "ready\n");
    return 0;
}

static int on_metrics_req(h2o_handler_t *self, h2o_req_t *req)
{
    if (route_begin_get(self, req))
        send_metrics(((pw_route_t *)self)->server, req);
    return 0;
}

static void add_route(pw_http_server_t *s, h2o_hostconf_t *host, const char *path, int (*on_req)(h2o_handler_t *, h2o_req_t *))
{
    h2o_pathconf_t *conf = h2o_config_register_path(host, path, 0);
    pw_route_t *r = (pw_route_t *)h2o_create_handler(conf, sizeof *r);
    r->super.on_req = on_req;
    r->server = s;
    r->path = path;
}

/* The log line of a push refused 413 (its body over MAX_BODY_BYTES); content_length as the client gave it. */
static void log_too_large(pw_http_server_t *s, const pw_req_ctx_t *ctx, pw_str_t content_length)
{
    char extra[PW_LOG_LINE_MAX], req_members[1024];
    request_members(req_members, sizeof req_members, ctx, 413, 0);
    char digits[24];
    snprintf(digits, sizeof digits, "%.*s", content_length.base != NULL && content_length.len < sizeof digits ? (int)content_length.len : 0,
             content_length.base != NULL ? content_length.base : "");
    snprintf(extra, sizeof extra, "\"status\":413,\"outcome\":\"too_large\",\"contentLength\":\"%s\",%s",
             pw_log_escape(digits, (char[sizeof digits * 6]){0}, sizeof digits * 6), req_members);
    pw_log(PW_LOG_WARNING, extra, "push refused: its body is over MAX_BODY_BYTES (%zu bytes)", s->cfg->max_body_bytes);
}

/*
 * A body over MAX_BODY_BYTES with a Content-Length is refused in refuse_before_body; one sent
 * chunked is answered 413 by h2o itself once it grows past the limit, before any handler, through
 * the host's fallback path: this logger on that path is where such a push is seen.
 */
static void log_early_answer(h2o_logger_t *logger, h2o_req_t *req)
{
    (void)logger;
    if (req->res.status != 413)
        return;
    pw_http_loop_t *l = loop_of(req);
    pw_metrics_inc(&l->metrics->pushes[PW_M_TOO_LARGE], 1);
    pw_req_ctx_t ctx;
    capture_ctx(req, &ctx);
    log_too_large(l->server, &ctx, header_value(req, "content-length"));
}

/* ---- connections ---- */

static void on_conn_close(void *data)
{
    pw_http_conn_t *c = data;
    h2o_timeout_unlink(&c->rewrap);
    budget_give(c->loop->server, c->reserved); /* the client went away while sending a body */
    h2o_linklist_unlink(&c->link);
    c->loop->n_conns--;
    free(c);
}

/*
 * Answers a request on the connection itself, before h2o has seen it: 413 for a Content-Length over
 * MAX_BODY_BYTES, 503 when its body would take the budget over INFLIGHT_BYTES_MAX. The connection
 * is closed for writing only; what the client goes on sending is read and thrown away
 * (on_read_budgeted) until it closes, or h2o's request timeout closes it. Closing at once, as h2o
 * does after its own 413, leaves the body's unread bytes in the socket: the kernel answers them
 * with a reset, and a client still sending (Pub/Sub, curl) sees "connection reset", not the answer.
 */
static void refuse_before_body(pw_http_conn_t *c, int status, const char *path, size_t path_len, pw_str_t user_agent,
                               pw_str_t content_length, size_t bytes)
{
    static const char over_budget[] = "HTTP/1.1 503 Service Unavailable\r\n"
                                      "Content-Type: text/plain; charset=utf-8\r\n"
                                      "Retry-After: 1\r\n"
                                      "Connection: close\r\n"
                                      "Content-Length: 38\r\n"
                                      "\r\n"
                                      "too many bytes in flight, retry later\n";
    static const char too_large[] = "HTTP/1.1 413 Request Entity Too Large\r\n"
                                    "Content-Type: text/plain; charset=utf-8\r\n"
                                    "Connection: close\r\n"
                                    "Content-Length: 28\r\n"
                                    "\r\n"
                                    "request entity is too large\n";
    const char *answer = status == 413 ? too_large : over_budget;
    size_t answer_len = status == 413 ? sizeof too_large - 1 : sizeof over_budget - 1;
    int fd = h2o_socket_get_fd(c->sock);
    /* Nothing else is being written on this connection (h2o writes only once a request is whole). */
    ssize_t w = send(fd, answer, answer_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
    shutdown(fd, SHUT_WR);
    c->refused = 1;
    pw_metrics_inc(&c->loop->metrics->pushes[status == 413 ? PW_M_TOO_LARGE : PW_M_OVER_BUDGET], 1);
    pw_req_ctx_t ctx = {"", "", "", ""};
    char raw[96];
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    /* (A client that has reset the connection already has no peer address: remoteIp stays empty.) */
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ctx.remote_ip, sizeof ctx.remote_ip);
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ctx.remote_ip, sizeof ctx.remote_ip);
    }
    snprintf(raw, sizeof raw, "%.*s", (int)(path_len < 48 ? path_len : 48), path);
    pw_log_escape(raw, ctx.path, sizeof ctx.path);
    snprintf(raw, sizeof raw, "%.*s", user_agent.base != NULL ? (int)(user_agent.len < 60 ? user_agent.len : 60) : 0,
             user_agent.base != NULL ? user_agent.base : "");
    pw_log_escape(raw, ctx.user_agent, sizeof ctx.user_agent);
    if (status == 413)
        log_too_large(c->loop->server, &ctx, content_length);
    else
        log_over_budget(c->loop->server, &ctx, bytes);
}

/*
 * Once a request's headers are in, and before h2o reads (and buffers) the body: refuses a
 * Content-Length over MAX_BODY_BYTES (413), and takes the budget for the others. Returns 0, or -1
 * after answering 413, or 503 when the budget is spent. Requests without a length (chunked) are
 * reserved by their size in handle_push; broken ones are left to h2o (400).
 */
static int reserve_for_request(pw_http_conn_t *c, h2o_socket_t *sock)
{
    pw_http_server_t *s = c->loop->server;
    const char *method, *path;
    size_t method_len, path_len, n_headers = H2O_MAX_HEADERS;
    int minor;
    struct phr_header headers[H2O_MAX_HEADERS];
    size_t len = sock->input->size < H2O_MAX_REQLEN ? sock->input->size : H2O_MAX_REQLEN;
    if (phr_parse_request(sock->input->bytes, len, &method, &method_len, &path, &path_len, &minor, headers, &n_headers, 0) < 0)
        return 0; /* not all there yet (h2o waits too), or broken (h2o answers 400) */
    c->headers_seen = 1;
    size_t length = SIZE_MAX;
    pw_str_t user_agent = PW_STR_NULL, content_length = PW_STR_NULL;
    for (size_t i = 0; i < n_headers; i++) {
        if (headers[i].name == NULL)
            continue; /* a folded continuation line */
        if (h2o_lcstris(headers[i].name, headers[i].name_len, H2O_STRLIT("content-length"))) {
            length = h2o_strtosize(headers[i].value, headers[i].value_len);
            content_length = pw_str(headers[i].value, headers[i].value_len);
        } else if (h2o_lcstris(headers[i].name, headers[i].name_len, H2O_STRLIT("user-agent")))
            user_agent = pw_str(headers[i].value, headers[i].value_len);
    }
    if (length == SIZE_MAX || length == 0)
        return 0;
    if (length > s->cfg->max_body_bytes) {
        refuse_before_body(c, 413, path, path_len, user_agent, content_length, length);
        return -1;
    }
    if (budget_take(s, length) != 0) {
        refuse_before_body(c, 503, path, path_len, user_agent, content_length, length);
        return -1;
    }
    c->reserved = length;
    return 0;
}

static void on_read_budgeted(h2o_socket_t *sock, const char *err)
{
    pw_http_conn_t *c = sock->on_close.data;
    if (err == NULL && c->refused) {
        h2o_buffer_consume(&sock->input, sock->input->size); /* the client's answer is sent: keep nothing */
        return;
    }
    if (err == NULL && !c->headers_seen && reserve_for_request(c, sock) != 0) {
        h2o_buffer_consume(&sock->input, sock->input->size);
        return; /* h2o never sees this request; it closes the connection at end-of-file or its timeout */
    }
    c->h2o_read(sock, err); /* may close the connection (and free c) */
}

/* Puts our read callback in front of h2o's, when h2o is reading a request's headers. */
static void wrap_reading(pw_http_conn_t *c)
{
    h2o_socket_t *sock = c->sock;
    if (sock->_cb.read == NULL || sock->_cb.read == on_read_budgeted || sock->_cb.read == on_read_parked)
        return; /* h2o is not reading (it will not call a handler before it reads again) */
    c->h2o_read = sock->_cb.read;
    sock->_cb.read = on_read_budgeted;
    c->refused = 0;
    /* h2o may have begun the next request (pipelined) already: it is reserved in handle_push. */
    c->headers_seen = sock->input->size > 0;
}

/*
 * Parking a connection while its push is with Dispatch. h2o 2.2 stops reading a connection when
 * a request is whole and starts again once the answer is written; its event loop applies such
 * changes to epoll at the start of its next turn, so a push answered in a later turn cost two
 * epoll_ctl calls (the worker's most frequent system call under load). Parked, the connection
 * stays registered for reading under a callback of ours, with h2o told not to read the socket
 * (h2o_socket_dont_read), so its input buffer, which the request's body points into, is left
 * alone: when h2o starts reading again after the answer, in the same turn as the write, epoll
 * sees no change at all. Anything arriving meanwhile (a pipelined request, end-of-file, an error;
 * Pub/Sub sends neither) only wakes on_read_parked, which stops reading as h2o would have: the
 * bytes stay in the kernel and h2o finds them when it reads again. Over HTTP/2 nothing is parked.
 */
static void on_read_parked(h2o_socket_t *sock, const char *err)
{
    (void)err; /* nothing was read: whatever it is, h2o sees it when it reads again */
    h2o_socket_dont_read(sock, 0);
    h2o_socket_read_stop(sock);
}

static void park_reading(h2o_req_t *req)
{
    pw_http_conn_t *c = conn_of(req);
    if (c == NULL || c->sock->_cb.read != NULL)
        return; /* HTTP/2, or h2o still reads this connection */
    h2o_socket_dont_read(c->sock, 1);
    h2o_socket_read_start(c->sock, on_read_parked);
}

/* Before the answer is written: h2o's own callback will read the socket (it replaces ours then). */
static void unpark_reading(h2o_req_t *req)
{
    pw_http_conn_t *c = conn_of(req);
    if (c != NULL && c->sock->_cb.read == on_read_parked)
        h2o_socket_dont_read(c->sock, 0);
}

static void on_rewrap(h2o_timeout_entry_t *entry)
{
    wrap_reading(H2O_STRUCT_FROM_MEMBER(pw_http_conn_t, rewrap, entry));
}

/*
 * The request's pool is cleared just before h2o reads the connection's next request with its
 * own callback (or closes it): put ours back after that, at the end of this loop iteration.
 */
static void on_conn_request_disposed(void *p)
{
    pw_http_conn_t *c = *(pw_http_conn_t **)p;
    if (!h2o_timeout_is_linked(&c->rewrap))
        h2o_timeout_link(c->loop->ctx.loop, &c->loop->ctx.zero_timeout, &c->rewrap);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    pw_http_loop_t *l = listener->data;
    if (err != NULL)
        return;
    /* Take a few connections per wakeup; the other loops' listeners share the load. */
    for (int i = 0; i < 16; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            return;
        pw_http_conn_t *c = pw_xcalloc(1, sizeof *c);
        c->sock = sock;
        c->loop = l;
        h2o_linklist_insert(&l->conns, &c->link);
        l->n_conns++;
        sock->on_close.cb = on_conn_close;
        sock->on_close.data = c;
        c->rewrap.cb = on_rewrap;
        h2o_accept(&l->accept_ctx, sock); /* HTTP/1: h2o starts reading with its callback */
        wrap_reading(c);
    }
}

/* ---- loops ---- */

/* The main thread's stop: noted here, on the loop's thread; run_loop takes it from there. */
static void on_control(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    pw_http_loop_t *l = H2O_STRUCT_FROM_MEMBER(pw_http_loop_t, control, receiver);
    if (pw_take_messages(messages, &l->stop_msg.link))
        l->stopping = 1; /* handle_push and /readyz answer 503 from now on */
}

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

static void on_close_timeout(h2o_timeout_entry_t *entry)
{
    (void)entry;
}

/*
 * After the pushes are answered: half-close the reading side of every connection still open
 * (idle keep-alive ones), so that h2o sees end-of-file and frees each connection through its own
 * code, and run the loop until they are gone or PW_HTTP_CLOSE_MS has passed. Returns the
 * connections left (a client that stopped reading).
 */
static size_t close_connections(pw_http_loop_t *l)
{
    for (h2o_linklist_t *n = l->conns.next; n != &l->conns; n = n->next)
        shutdown(h2o_socket_get_fd(H2O_STRUCT_FROM_MEMBER(pw_http_conn_t, link, n)->sock), SHUT_RD);
    h2o_timeout_t close_timeout;
    h2o_timeout_entry_t close_entry = {.cb = on_close_timeout};
    h2o_timeout_init(l->ctx.loop, &close_timeout, PW_HTTP_CLOSE_MS);
    h2o_timeout_link(l->ctx.loop, &close_timeout, &close_entry);
    /* Each close is an event, and so is the timeout (which only wakes the loop: it is then unlinked). */
    while (l->n_conns > 0 && h2o_timeout_is_linked(&close_entry))
        h2o_evloop_run(l->ctx.loop, INT32_MAX);
    h2o_timeout_unlink(&close_entry);
    h2o_timeout_dispose(l->ctx.loop, &close_timeout);
    h2o_evloop_run(l->ctx.loop, 0); /* the sockets closed last are freed by the loop's next turn */
    return l->n_conns;
}

static void *run_loop(void *arg)
{
    pw_http_loop_t *l = arg;
    pw_http_server_t *s = l->server;
    h2o_context_init(&l->ctx, h2o_evloop_create(), &s->globalconf);
    h2o_linklist_init_anchor(&l->conns);
    l->accept_ctx.ctx = &l->ctx;
    l->accept_ctx.hosts = s->globalconf.hosts;
    h2o_timeout_init(l->ctx.loop, &l->deadline, (uint64_t)s->cfg->deadline_ms);
    h2o_multithread_register_receiver(l->ctx.queue, &l->control, on_control);
    l->dispatch = pw_dispatch_loop_new(s->dispatch, &l->ctx);
    l->auth = pw_auth_new(s->cfg);
    l->listener = h2o_evloop_socket_create(l->ctx.loop, l->listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    l->listener->data = l;
    h2o_socket_read_start(l->listener, on_accept);
    pthread_barrier_wait(&s->started); /* from here on the main thread may send the stop */

    while (!l->stopping)
        h2o_evloop_run(l->ctx.loop, INT32_MAX);

    /* Stop accepting (the main thread has drained Dispatch: what is not committed by then is
       answered 503), and run until every push of this loop is answered: each answer is a
       message to this loop, each deadline a timer of it. */
    h2o_socket_read_stop(l->listener);
    h2o_socket_close(l->listener);
    l->listener = NULL;
    h2o_context_request_shutdown(&l->ctx);
    while (l->pushes_alive > 0)
        h2o_evloop_run(l->ctx.loop, INT32_MAX);
    size_t left = close_connections(l);
    pw_dispatch_loop_free(l->dispatch);
    l->dispatch = NULL;
    pw_auth_free(l->auth);
    l->auth = NULL;
    pthread_barrier_wait(&s->told);
    h2o_multithread_unregister_receiver(l->ctx.queue, &l->control);
    if (left > 0) {
        /* Leave it all to the process exit rather than free memory h2o still uses. */
        pw_log_warning("stop: %zu connection(s) would not close; leaving them to the exit", left);
        return NULL;
    }
    disarm_context_timers(&l->ctx);
    h2o_loop_t *loop = l->ctx.loop;
    h2o_timeout_dispose(loop, &l->deadline);
    h2o_context_dispose(&l->ctx);
    h2o_evloop_destroy(loop);
    l->torn_down = 1;
    return NULL;
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

/* Blocks SIGTERM/SIGINT in every thread; the main thread waits for them with sigwait. */
static void block_stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    pthread_sigmask(SIG_BLOCK, set, NULL);
}

int pw_http_serve(const pw_config_t *cfg, pw_dispatch_t *dispatch, pw_metrics_registry_t *metrics)
{
    signal(SIGPIPE, SIG_IGN);
    sigset_t stop_set;
    block_stop_signals(&stop_set);
    if (pw_metrics_registry_size(metrics) < (size_t)cfg->threads) {
        pw_log_error("metrics: %zu slot(s) for %d loop(s)", pw_metrics_registry_size(metrics), cfg->threads);
        return -1;
    }

    pw_http_server_t *s = pw_xcalloc(1, sizeof *s);
    s->cfg = cfg;
    s->dispatch = dispatch;
    s->metrics = metrics;
    h2o_config_init(&s->globalconf);
    s->globalconf.max_request_entity_size = cfg->max_body_bytes;
    s->globalconf.server_name = h2o_iovec_init(H2O_STRLIT("pushworker"));
    h2o_hostconf_t *host = h2o_config_register_host(&s->globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    /* h2o tries pathconfs in this order, by prefix: "/" last, as the catch-all (its handler 404s
       every path but "/" itself). */
    add_route(s, host, "/push", on_push_req);
    add_route(s, host, "/livez", on_live_req);
    add_route(s, host, "/healthz", on_live_req);
    add_route(s, host, "/readyz", on_ready_req);
    add_route(s, host, "/metrics", on_metrics_req);
    add_route(s, host, "/", on_push_req);
    h2o_logger_t *early = h2o_create_logger(&host->fallback_path, sizeof *early);
    early->log_access = log_early_answer;

    int listen_fd = open_listener(cfg->port);
    if (listen_fd < 0) {
        pw_log_error("cannot listen on 0.0.0.0:%d: %s", cfg->port, strerror(errno));
        h2o_config_dispose(&s->globalconf);
        free(s);
        return -1;
    }
    pw_http_loop_t *loops = pw_xcalloc((size_t)cfg->threads, sizeof *loops);
    pthread_barrier_init(&s->started, NULL, (unsigned)cfg->threads + 1);
    pthread_barrier_init(&s->told, NULL, (unsigned)cfg->threads + 1);
    for (int i = 0; i < cfg->threads; i++) {
        loops[i].server = s;
        loops[i].metrics = pw_metrics_slot(metrics, (size_t)i);
        loops[i].listen_fd = i == 0 ? listen_fd : fcntl(listen_fd, F_DUPFD_CLOEXEC, 0);
        pthread_create(&loops[i].tid, NULL, run_loop, &loops[i]);
    }
    pthread_barrier_wait(&s->started);
    pw_log_info("listening on 0.0.0.0:%d with %d thread(s), auth %s", cfg->port, cfg->threads,
                pw_auth_mode_name(cfg->auth_mode));

    int sig;
    sigwait(&stop_set, &sig);
    pw_log_info("%s received: draining in-flight pushes", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    pw_dispatch_drain(dispatch, pw_now_ms() + PW_HTTP_DRAIN_MS);
    for (int i = 0; i < cfg->threads; i++)
        h2o_multithread_send_message(&loops[i].control, &loops[i].stop_msg);
    pthread_barrier_wait(&s->told);
    int all_torn_down = 1;
    for (int i = 0; i < cfg->threads; i++) {
        pthread_join(loops[i].tid, NULL);
        all_torn_down &= loops[i].torn_down;
    }
    pthread_barrier_destroy(&s->started);
    pthread_barrier_destroy(&s->told);
    if (all_torn_down) {
        free(loops);
        h2o_config_dispose(&s->globalconf);
        free(s);
    }
    pw_log_info("stopped");
    return 0;
}
