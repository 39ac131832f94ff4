/* A redelivering push client (Pub/Sub's behaviour towards the worker) and a checker of the rows it leaves; see redeliver.h. */
#include "tests/integration/redeliver.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <libpq-fe.h>

#include "tests/integration/harness.h"
#include "tests/integration/httpc.h"
#include "tests/integration/util.h"

#define RD_PUBLISH_TIME "2024-03-05T10:00:00.123Z"
#define RD_BASE_TIME 1709251200LL /* 2024-03-01T00:00:00Z */
#define RD_SAMPLE_ROWS 5

/* ---- small helpers ------------------------------------------------------------------------------- */

static double rd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* splitmix64 */
static uint64_t rd_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static size_t rd_rng_below(uint64_t *state, size_t n)
{
    return (size_t)(rd_rng_next(state) % (uint64_t)n);
}

static double rd_rng_unit(uint64_t *state)
{
    return (double)(rd_rng_next(state) >> 11) / (double)(1ULL << 53);
}

/* ---- the set -------------------------------------------------------------------------------------- */

pwt_rd_set_t *pwt_rd_set_new(void)
{
    pwt_rd_set_t *s = pwt_xmalloc(sizeof *s);
    memset(s, 0, sizeof *s);
    return s;
}

void pwt_rd_set_free(pwt_rd_set_t *set)
{
    if (set == NULL)
        return;
    for (size_t i = 0; i < set->n; i++) {
        pwt_rd_push_t *p = &set->pushes[i];
        free(p->body);
        free(p->subscription);
        free(p->message_id);
        for (size_t k = 0; k < p->n_statuses; k++) {
            free(p->status_wamid[k]);
            free(p->status_name[k]);
        }
        free(p->status_wamid);
        free(p->status_name);
        for (size_t k = 0; k < p->n_inbound; k++)
            free(p->inbound_wamid[k]);
        free(p->inbound_wamid);
    }
    free(set->pushes);
    free(set);
}

static void rd_reset_push(pwt_rd_push_t *p)
{
    p->attempts = 0;
    p->final_status = 0;
    p->last_curl_code = 0;
    p->acked = 0;
    p->acked_at_ms = -1;
    p->first_sent_ms = -1;
    p->max_latency_ms = 0;
    p->next_at_ms = 0;
    p->backoff_ms = 0;
    p->in_flight = 0;
}

void pwt_rd_reset(pwt_rd_set_t *set)
{
    for (size_t i = 0; i < set->n; i++)
        rd_reset_push(&set->pushes[i]);
}

size_t pwt_rd_add(pwt_rd_set_t *set, const char *subscription, const char *message_id, const void *body, size_t len)
{
    if (set->n == set->cap) {
        set->cap = set->cap ? set->cap * 2 : 64;
        set->pushes = pwt_xrealloc(set->pushes, set->cap * sizeof *set->pushes);
    }
    pwt_rd_push_t *p = &set->pushes[set->n];
    memset(p, 0, sizeof *p);
    p->body = pwt_xmalloc(len + 1);
    memcpy(p->body, body, len);
    p->body[len] = '\0';
    p->len = len;
    p->subscription = subscription ? pwt_xstrdup(subscription) : NULL;
    p->message_id = message_id ? pwt_xstrdup(message_id) : NULL;
    p->target = (int)set->n;
    rd_reset_push(p);
    return set->n++;
}

void pwt_rd_expect_status(pwt_rd_set_t *set, size_t i, const char *wamid, const char *status)
{
    pwt_rd_push_t *p = &set->pushes[i];
    if (p->n_statuses == p->cap_statuses) {
        p->cap_statuses = p->cap_statuses ? p->cap_statuses * 2 : 4;
        p->status_wamid = pwt_xrealloc(p->status_wamid, p->cap_statuses * sizeof(char *));
        p->status_name = pwt_xrealloc(p->status_name, p->cap_statuses * sizeof(char *));
    }
    p->status_wamid[p->n_statuses] = pwt_xstrdup(wamid);
    p->status_name[p->n_statuses] = pwt_xstrdup(status);
    p->n_statuses++;
}

void pwt_rd_expect_inbound(pwt_rd_set_t *set, size_t i, const char *wamid)
{
    pwt_rd_push_t *p = &set->pushes[i];
    if (p->n_inbound == p->cap_inbound) {
        p->cap_inbound = p->cap_inbound ? p->cap_inbound * 2 : 2;
        p->inbound_wamid = pwt_xrealloc(p->inbound_wamid, p->cap_inbound * sizeof(char *));
    }
    p->inbound_wamid[p->n_inbound++] = pwt_xstrdup(wamid);
}

/* ---- generated workload ----------------------------------------------------------------------------- */

typedef struct {
    size_t msg;
    const char *status;
    long long t;
} rd_event_t;

/* Status sets of one outbound message (their order does not matter: the events are shuffled). */
static const char *const rd_patterns[][4] = {
    {"sent", "delivered", "read", NULL},
    {"sent", "delivered", NULL},
    {"sent", "failed", NULL},
    {"read", NULL},
    {"sent", "read", NULL},
    {"sent", NULL},
    {"delivered", "sent", "read", NULL},
};
#define RD_N_PATTERNS (sizeof rd_patterns / sizeof rd_patterns[0])

void pwt_rd_generate(pwt_rd_set_t *set, const char *subscription, const char *prefix, size_t n, unsigned seed, int inbound_every)
{
    for (const char *c = prefix; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-'))
            fail_msg("pwt_rd_generate: prefix '%s' must be [A-Za-z0-9-]", prefix);
    uint64_t rng = 0x5EEDULL * (uint64_t)(seed + 1);
    size_t *k = pwt_xmalloc(n * sizeof *k);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        k[i] = 1 + rd_rng_below(&rng, 3);
        total += k[i];
    }
    rd_event_t *ev = pwt_xmalloc(total * sizeof *ev);
    size_t e = 0;
    for (size_t m = 0; e < total; m++) {
        const char *const *pat = rd_patterns[m % RD_N_PATTERNS];
        for (size_t j = 0; pat[j] != NULL && e < total; j++)
            ev[e++] = (rd_event_t){.msg = m, .status = pat[j], .t = RD_BASE_TIME + (long long)m * 60 + (long long)j * 7};
    }
    for (size_t i = total - 1; i > 0; i--) { /* Fisher-Yates */
        size_t j = rd_rng_below(&rng, i + 1);
        rd_event_t tmp = ev[i];
        ev[i] = ev[j];
        ev[j] = tmp;
    }
    e = 0;
    for (size_t i = 0; i < n; i++) {
        char *json = NULL;
        size_t json_len = 0;
        FILE *f = open_memstream(&json, &json_len);
        int inbound = inbound_every > 0 && i % (size_t)inbound_every == 0;
        char in_wamid[96] = "";
        fputs("{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"104996335712345\",\"changes\":[{\"value\":"
              "{\"messaging_product\":\"whatsapp\",\"metadata\":{\"display_phone_number\":\"15550783881\","
              "\"phone_number_id\":\"106540352242922\"},",
              f);
        if (inbound) {
            snprintf(in_wamid, sizeof in_wamid, "wamid.PWRDIN.%s.%06zu", prefix, i);
            unsigned long phone = 10000000UL + (unsigned long)(i * 7919 % 90000000UL);
            fprintf(f,
                    "\"contacts\":[{\"profile\":{\"name\":\"Customer %zu\"},\"wa_id\":\"9198%08lu\"}],"
                    "\"messages\":[{\"from\":\"9198%08lu\",\"id\":\"%s\",\"timestamp\":\"%lld\",\"type\":\"text\","
                    "\"text\":{\"body\":\"hello %zu\"}}],",
                    i, phone, phone, in_wamid, RD_BASE_TIME + (long long)i, i);
        }
        fputs("\"statuses\":[", f);
        size_t first = e;
        for (size_t j = 0; j < k[i]; j++, e++) {
            const rd_event_t *x = &ev[e];
            fprintf(f, "%s{\"id\":\"wamid.PWRD.%s.%06zu\",\"status\":\"%s\",\"timestamp\":\"%lld\",\"recipient_id\":\"9197%08zu\"",
                    j ? "," : "", prefix, x->msg, x->status, x->t, 10000000 + x->msg);
            if (strcmp(x->status, "failed") == 0)
                fputs(",\"errors\":[{\"code\":131026,\"title\":\"Message undeliverable\"}]", f);
            fputs("}", f);
        }
        fputs("]},\"field\":\"messages\"}]}]}", f);
        fclose(f);

        char mid[96];
        snprintf(mid, sizeof mid, "%s-%06zu", prefix, i);
        char *body = pwt_wrap(json, json_len, mid, subscription, RD_PUBLISH_TIME);
        size_t idx = pwt_rd_add(set, subscription, mid, body, strlen(body));
        free(body);
        free(json);
        for (size_t j = first; j < e; j++) {
            char wamid[96];
            snprintf(wamid, sizeof wamid, "wamid.PWRD.%s.%06zu", prefix, ev[j].msg);
            pwt_rd_expect_status(set, idx, wamid, ev[j].status);
        }
        if (inbound)
            pwt_rd_expect_inbound(set, idx, in_wamid);
    }
    free(ev);
    free(k);
}

/* ---- latencies of the last run ---------------------------------------------------------------------- */

static double *rd_lat;
static size_t rd_lat_n, rd_lat_cap;

static void rd_lat_add(double ms)
{
    if (rd_lat_n == rd_lat_cap) {
        rd_lat_cap = rd_lat_cap ? rd_lat_cap * 2 : 1024;
        rd_lat = pwt_xrealloc(rd_lat, rd_lat_cap * sizeof *rd_lat);
    }
    rd_lat[rd_lat_n++] = ms;
}

static int rd_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double pwt_rd_latency_ms(double q)
{
    if (rd_lat_n == 0)
        return -1;
    double *sorted = pwt_xmalloc(rd_lat_n * sizeof *sorted);
    memcpy(sorted, rd_lat, rd_lat_n * sizeof *sorted);
    qsort(sorted, rd_lat_n, sizeof *sorted, rd_cmp_double);
    if (q < 0)
        q = 0;
    if (q > 1)
        q = 1;
    size_t i = (size_t)(q * (double)(rd_lat_n - 1) + 0.5);
    double v = sorted[i];
    free(sorted);
    return v;
}

/* ---- the run ------------------------------------------------------------------------------------------ */

/* A min-heap of push indexes by next_at_ms: the pushes waiting for a resend. */
typedef struct {
    size_t *a;
    size_t n, cap;
    const pwt_rd_push_t *pushes;
} rd_heap_t;

static int rd_heap_less(const rd_heap_t *h, size_t i, size_t j)
{
    return h->pushes[h->a[i]].next_at_ms < h->pushes[h->a[j]].next_at_ms;
}

static void rd_heap_swap(rd_heap_t *h, size_t i, size_t j)
{
    size_t t = h->a[i];
    h->a[i] = h->a[j];
    h->a[j] = t;
}

static void rd_heap_push(rd_heap_t *h, size_t idx)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 256;
        h->a = pwt_xrealloc(h->a, h->cap * sizeof *h->a);
    }
    size_t i = h->n++;
    h->a[i] = idx;
    while (i > 0 && rd_heap_less(h, i, (i - 1) / 2)) {
        rd_heap_swap(h, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static size_t rd_heap_pop(rd_heap_t *h)
{
    size_t top = h->a[0];
    h->a[0] = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && rd_heap_less(h, l, m))
            m = l;
        if (r < h->n && rd_heap_less(h, r, m))
            m = r;
        if (m == i)
            break;
        rd_heap_swap(h, i, m);
        i = m;
    }
    return top;
}

typedef struct {
    size_t idx;
    double started_ms; /* since the run's start */
    CURL *easy;
} rd_req_t;

static int rd_is_ack(long status)
{
    return status == 102 || status == 200 || status == 201 || status == 202 || status == 204;
}

/* Schedules push p for a resend after its (jittered, doubling) backoff. */
static void rd_schedule_retry(rd_heap_t *heap, size_t idx, pwt_rd_push_t *p, double now, const pwt_rd_opts_t *o, uint64_t *rng)
{
    if (p->backoff_ms <= 0)
        p->backoff_ms = (double)o->backoff_min_ms;
    double delay = p->backoff_ms * (0.5 + 0.5 * rd_rng_unit(rng));
    p->backoff_ms *= 2;
    if (p->backoff_ms > (double)o->backoff_max_ms)
        p->backoff_ms = (double)o->backoff_max_ms;
    p->next_at_ms = now + delay;
    rd_heap_push(heap, idx);
}

size_t pwt_rd_run(pwt_rd_set_t *set, const pwt_rd_opts_t *opts, pwt_rd_stats_t *stats_out)
{
    pwt_rd_opts_t o = *opts;
    if (o.target == NULL)
        fail_msg("pwt_rd_run: no target callback");
    if (o.path == NULL)
        o.path = "/";
    if (o.concurrency <= 0)
        o.concurrency = 16;
    if (o.request_timeout_ms <= 0)
        o.request_timeout_ms = 10000;
    if (o.backoff_min_ms <= 0)
        o.backoff_min_ms = 100;
    if (o.backoff_max_ms <= 0)
        o.backoff_max_ms = 2000;
    if (o.deadline_ms <= 0)
        o.deadline_ms = 120000;
    if (o.label == NULL)
        o.label = "redeliver";

    pwt_rd_reset(set);
    rd_lat_n = 0;
    uint64_t rng = 0xC0FFEEULL + o.seed;
    rd_heap_t heap = {.pushes = set->pushes};
    rd_req_t *reqs = pwt_xmalloc((size_t)o.concurrency * sizeof *reqs);
    int *free_slots = pwt_xmalloc((size_t)o.concurrency * sizeof *free_slots);
    int n_free = 0;
    for (int i = o.concurrency - 1; i >= 0; i--)
        free_slots[n_free++] = i;

    struct curl_slist *headers = pwt_http_headers(o.headers);

    CURLM *multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)o.concurrency * 2);

    pwt_rd_stats_t st;
    memset(&st, 0, sizeof st);
    st.n = set->n;
    st.last_ack_ms = -1;
    size_t next_new = 0;
    const double t0 = rd_now_ms();
    if (o.tick != NULL)
        o.tick(o.tick_ctx, &st);

    for (;;) {
        double now = rd_now_ms() - t0;
        st.elapsed_ms = now;
        if (st.acked == set->n)
            break;
        if (now > (double)o.deadline_ms) {
            st.deadline_passed = 1;
            break;
        }

        /* Start requests: resends that are due first, then new pushes (within the rate). */
        while (n_free > 0) {
            size_t idx;
            if (heap.n > 0 && set->pushes[heap.a[0]].next_at_ms <= now) {
                idx = rd_heap_pop(&heap);
            } else if (next_new < set->n && (o.rate_per_s <= 0 || (double)next_new < o.rate_per_s * now / 1000.0 + 1.0)) {
                idx = next_new++;
            } else {
                break;
            }
            pwt_rd_push_t *p = &set->pushes[idx];
            const char *base = o.target(o.target_ctx, p->target);
            if (base == NULL) { /* no worker to send to right now: look again shortly */
                p->next_at_ms = now + 50;
                rd_heap_push(&heap, idx);
                continue;
            }
            char url[512];
            snprintf(url, sizeof url, "%s%s", base, o.path);
            CURL *c = pwt_http_easy(url, o.request_timeout_ms, headers);
            if (c == NULL)
                abort();
            curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, o.request_timeout_ms < 5000 ? o.request_timeout_ms : 5000L);
            pwt_http_set_post(c, p->body, p->len);
            curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, pwt_http_discard);
            int slot = free_slots[--n_free];
            reqs[slot] = (rd_req_t){.idx = idx, .started_ms = now, .easy = c};
            curl_easy_setopt(c, CURLOPT_PRIVATE, (char *)&reqs[slot]);
            curl_multi_add_handle(multi, c);
            if (p->attempts == 0) {
                st.sent++;
                p->first_sent_ms = now;
            }
            p->attempts++;
            p->in_flight = 1;
            st.attempts++;
            st.in_flight++;
        }

        int running;
        curl_multi_perform(multi, &running);
        CURL *e;
        long http;
        CURLcode result;
        while ((e = pwt_http_multi_done(multi, &http, &result)) != NULL) {
            rd_req_t *rq = pwt_http_private(e);
            pwt_rd_push_t *p = &set->pushes[rq->idx];
            double done = rd_now_ms() - t0, lat = done - rq->started_ms;
            long status = -1;
            if (result == CURLE_OK) {
                status = http;
                st.answered++;
                rd_lat_add(lat);
            } else if (result == CURLE_OPERATION_TIMEDOUT) {
                status = -2;
                st.timeouts++;
                rd_lat_add(lat);
            } else {
                st.transport_errors++;
                if (result == CURLE_COULDNT_CONNECT)
                    st.refused++;
                else
                    st.dropped++;
            }
            if (lat > p->max_latency_ms)
                p->max_latency_ms = lat;
            if (status != -1 && lat > st.max_latency_ms)
                st.max_latency_ms = lat;
            p->final_status = status;
            p->last_curl_code = (int)result;
            p->in_flight = 0;
            st.in_flight--;
            if (status >= 0 && rd_is_ack(status)) {
                st.n2xx++;
                if (!p->acked) {
                    p->acked = 1;
                    p->acked_at_ms = done;
                    st.acked++;
                    st.last_ack_ms = done;
                }
            } else {
                if (status == 503)
                    st.n503++;
                else if (status == 401)
                    st.n401++;
                else if (status == 403)
                    st.n403++;
                else if (status >= 0)
                    st.other_status++;
                if (!p->acked)
                    rd_schedule_retry(&heap, rq->idx, p, done, &o, &rng);
            }
            curl_easy_cleanup(e);
            free_slots[n_free++] = (int)(rq - reqs);
        }

        st.elapsed_ms = rd_now_ms() - t0;
        if (o.tick != NULL)
            o.tick(o.tick_ctx, &st);

        /* Wait for socket activity, at most until the next resend is due (and never over 20 ms, for the tick). */
        long wait = 20;
        if (n_free > 0) {
            double now2 = rd_now_ms() - t0;
            if (heap.n > 0) {
                double d = set->pushes[heap.a[0]].next_at_ms - now2;
                if (d < (double)wait)
                    wait = d < 1 ? 0 : (long)d;
            }
            if (next_new < set->n && (o.rate_per_s <= 0 || (double)next_new < o.rate_per_s * now2 / 1000.0 + 1.0))
                wait = 0;
        }
        if (wait > 0 || st.in_flight > 0)
            curl_multi_poll(multi, NULL, 0, (int)(wait > 0 ? wait : 1), NULL);
    }

    /* Deadline: abandon what is still in flight. */
    for (int i = 0; i < o.concurrency; i++) {
        int is_free = 0;
        for (int j = 0; j < n_free && !is_free; j++)
            is_free = free_slots[j] == i;
        if (is_free)
            continue;
        set->pushes[reqs[i].idx].in_flight = 0;
        curl_multi_remove_handle(multi, reqs[i].easy);
        curl_easy_cleanup(reqs[i].easy);
    }
    curl_multi_cleanup(multi);
    curl_slist_free_all(headers);
    free(reqs);
    free(free_slots);
    free(heap.a);
    st.in_flight = 0;
    st.elapsed_ms = rd_now_ms() - t0;
    if (st.deadline_passed)
        fprintf(stderr, "%s: deadline of %ld ms passed with %zu of %zu pushes unacknowledged\n", o.label, o.deadline_ms,
                set->n - st.acked, set->n);
    if (stats_out != NULL)
        *stats_out = st;
    return set->n - st.acked;
}

void pwt_rd_print_stats(const char *label, const pwt_rd_stats_t *s)
{
    printf("# %s: pushes %zu, sent %zu, acknowledged %zu, retried %ld (extra attempts; %ld attempts in all);"
           " answers: 2xx %ld, 503 %ld, 401 %ld, 403 %ld, other %ld, transport errors %ld (refused %ld, dropped %ld),"
           " timeouts %ld;"
           " latency p50 %.0f ms, p99 %.0f ms, max %.0f ms; %.1f s\n",
           label, s->n, s->sent, s->acked, s->attempts - (long)s->sent, s->attempts, s->n2xx, s->n503, s->n401, s->n403,
           s->other_status, s->transport_errors, s->refused, s->dropped, s->timeouts, pwt_rd_latency_ms(0.5),
           pwt_rd_latency_ms(0.99), s->max_latency_ms, s->elapsed_ms / 1000.0);
}

/* ---- the checker ---------------------------------------------------------------------------------------- */

/* A PostgreSQL array literal of texts: {"a","b"} with " and \ escaped. */
static void rd_array_add(FILE *f, int *first, const char *v)
{
    fputs(*first ? "\"" : ",\"", f);
    *first = 0;
    for (const char *c = v; *c; c++) {
        if (*c == '"' || *c == '\\')
            fputc('\\', f);
        fputc(*c, f);
    }
    fputc('"', f);
}

static void rd_bool_add(FILE *f, int *first, int v)
{
    fputs(*first ? "" : ",", f);
    *first = 0;
    fputc(v ? 't' : 'f', f);
}

typedef struct {
    char *p;
    size_t len;
    FILE *f;
    int first;
} rd_arr_t;

static void rd_arr_open(rd_arr_t *a)
{
    a->p = NULL;
    a->len = 0;
    a->f = open_memstream(&a->p, &a->len);
    a->first = 1;
    fputc('{', a->f);
}

static void rd_arr_close(rd_arr_t *a)
{
    fputc('}', a->f);
    fclose(a->f);
}

static PGresult *rd_exec(PGconn *c, const char *sql, int nparams, const char *const *params)
{
    /* Without parameters: the simple protocol, which takes several statements. */
    PGresult *r = nparams == 0 ? PQexec(c, sql) : PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        fprintf(stderr, "pwt_rd_check: %s\n  %s", sql, PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        fail_msg("pwt_rd_check: SQL error (see above)");
    }
    return r;
}

static long long rd_count(PGconn *c, const char *sql)
{
    PGresult *r = rd_exec(c, sql, 0, NULL);
    long long v = PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

/* Runs a query listing problem rows; prints the first few under what; returns how many rows. */
static long long rd_problems(PGconn *c, const char *label, const char *what, const char *sql)
{
    PGresult *r = rd_exec(c, sql, 0, NULL);
    long long n = PQntuples(r);
    if (n > 0) {
        fprintf(stderr, "%s: %lld %s, e.g.:\n", label, n, what);
        for (int i = 0; i < PQntuples(r) && i < RD_SAMPLE_ROWS; i++) {
            fputs("    ", stderr);
            for (int j = 0; j < PQnfields(r); j++)
                fprintf(stderr, "%s%s", j ? " | " : "", PQgetisnull(r, i, j) ? "NULL" : PQgetvalue(r, i, j));
            fputc('\n', stderr);
        }
    }
    PQclear(r);
    return n;
}

long long pwt_rd_check(const pwt_rd_set_t *set, const char *label, int dead_letters_ok, pwt_rd_check_t *out)
{
    pwt_rd_check_t k;
    memset(&k, 0, sizeof k);
    if (label == NULL)
        label = "check";

    /* A connection of our own (retried a little: the server may have just come back). */
    PGconn *c = NULL;
    for (int attempt = 0; attempt < 50; attempt++) {
        c = PQconnectdb(pwt_db_url());
        if (PQstatus(c) == CONNECTION_OK)
            break;
        if (attempt == 49) {
            fprintf(stderr, "pwt_rd_check: cannot connect: %s", PQerrorMessage(c));
            PQfinish(c);
            fail_msg("pwt_rd_check: database unreachable");
        }
        PQfinish(c);
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
    PQclear(rd_exec(c, "SET TIME ZONE 'UTC'", 0, NULL));
    PQclear(rd_exec(c,
                    "CREATE TEMP TABLE pwt_rd_r (sub text, mid text, acked bool);"
                    "CREATE TEMP TABLE pwt_rd_s (w text, s text, acked bool);"
                    "CREATE TEMP TABLE pwt_rd_i (w text, acked bool)",
                    0, NULL));

    rd_arr_t r_sub, r_mid, r_ack, s_w, s_s, s_ack, i_w, i_ack;
    rd_arr_open(&r_sub), rd_arr_open(&r_mid), rd_arr_open(&r_ack);
    rd_arr_open(&s_w), rd_arr_open(&s_s), rd_arr_open(&s_ack);
    rd_arr_open(&i_w), rd_arr_open(&i_ack);
    for (size_t i = 0; i < set->n; i++) {
        const pwt_rd_push_t *p = &set->pushes[i];
        if (!p->acked)
            k.unacked++;
        if (p->message_id != NULL) {
            rd_array_add(r_sub.f, &r_sub.first, p->subscription ? p->subscription : "");
            rd_array_add(r_mid.f, &r_mid.first, p->message_id);
            rd_bool_add(r_ack.f, &r_ack.first, p->acked);
        }
        for (size_t j = 0; j < p->n_statuses; j++) {
            rd_array_add(s_w.f, &s_w.first, p->status_wamid[j]);
            rd_array_add(s_s.f, &s_s.first, p->status_name[j]);
            rd_bool_add(s_ack.f, &s_ack.first, p->acked);
        }
        for (size_t j = 0; j < p->n_inbound; j++) {
            rd_array_add(i_w.f, &i_w.first, p->inbound_wamid[j]);
            rd_bool_add(i_ack.f, &i_ack.first, p->acked);
        }
    }
    rd_arr_close(&r_sub), rd_arr_close(&r_mid), rd_arr_close(&r_ack);
    rd_arr_close(&s_w), rd_arr_close(&s_s), rd_arr_close(&s_ack);
    rd_arr_close(&i_w), rd_arr_close(&i_ack);
    {
        const char *p3[] = {r_sub.p, r_mid.p, r_ack.p};
        PQclear(rd_exec(c, "INSERT INTO pwt_rd_r SELECT * FROM unnest($1::text[], $2::text[], $3::bool[])", 3, p3));
        const char *s3[] = {s_w.p, s_s.p, s_ack.p};
        PQclear(rd_exec(c, "INSERT INTO pwt_rd_s SELECT * FROM unnest($1::text[], $2::text[], $3::bool[])", 3, s3));
        const char *i2[] = {i_w.p, i_ack.p};
        PQclear(rd_exec(c, "INSERT INTO pwt_rd_i SELECT * FROM unnest($1::text[], $2::bool[])", 2, i2));
        PQclear(rd_exec(c, "ANALYZE pwt_rd_r; ANALYZE pwt_rd_s; ANALYZE pwt_rd_i", 0, NULL));
    }
    free(r_sub.p), free(r_mid.p), free(r_ack.p), free(s_w.p), free(s_s.p), free(s_ack.p), free(i_w.p), free(i_ack.p);

    k.receipts = rd_count(c, "SELECT count(*) FROM pubsub_receipts");
    k.status_events = rd_count(c, "SELECT count(*) FROM status_events");
    k.inbound = rd_count(c, "SELECT count(*) FROM inbound_messages");
    k.message_logs = rd_count(c, "SELECT count(*) FROM message_logs");
    k.dead_letters = rd_count(c, "SELECT count(*) FROM dead_letters");
    k.want_receipts = rd_count(c, "SELECT count(*) FROM (SELECT DISTINCT sub, mid FROM pwt_rd_r WHERE acked) x");
    k.want_statuses = rd_count(c, "SELECT count(*) FROM (SELECT DISTINCT w, s FROM pwt_rd_s WHERE acked) x");
    k.want_inbound = rd_count(c, "SELECT count(*) FROM (SELECT DISTINCT w FROM pwt_rd_i WHERE acked) x");

    /* Every acknowledged push present. */
    k.missing_receipts =
        rd_problems(c, label, "acknowledged pushes without their receipt (subscription | message_id)",
                    "SELECT e.sub, e.mid FROM (SELECT DISTINCT sub, mid FROM pwt_rd_r WHERE acked) e WHERE NOT EXISTS"
                    " (SELECT 1 FROM pubsub_receipts r WHERE r.subscription = e.sub AND r.message_id = e.mid) ORDER BY 2");
    k.receipts_not_stored = rd_problems(
        c, label, "receipts of acknowledged pushes not 'stored' (subscription | message_id | outcome)",
        "SELECT r.subscription, r.message_id, r.outcome FROM pubsub_receipts r JOIN (SELECT DISTINCT sub, mid FROM pwt_rd_r"
        " WHERE acked) e ON e.sub = r.subscription AND e.mid = r.message_id WHERE r.outcome <> 'stored' ORDER BY 2");
    k.missing_statuses = rd_problems(c, label, "statuses of acknowledged pushes missing from status_events (bsp_msg_id | status)",
                                     "SELECT e.w, e.s FROM (SELECT DISTINCT w, s FROM pwt_rd_s WHERE acked) e WHERE NOT EXISTS"
                                     " (SELECT 1 FROM status_events x WHERE x.bsp_msg_id = e.w AND x.status = e.s) ORDER BY 1, 2");
    k.missing_inbound = rd_problems(c, label, "inbound messages of acknowledged pushes missing from inbound_messages (wa_msg_id)",
                                    "SELECT e.w FROM (SELECT DISTINCT w FROM pwt_rd_i WHERE acked) e WHERE NOT EXISTS"
                                    " (SELECT 1 FROM inbound_messages x WHERE x.wa_msg_id = e.w) ORDER BY 1");

    /* Nothing doubled. */
    static const char *const doubled[][2] = {
        {"pubsub_receipts", "SELECT count(*) - count(DISTINCT (subscription, message_id)) FROM pubsub_receipts"},
        {"status_events", "SELECT count(*) - count(DISTINCT (bsp_msg_id, status)) FROM status_events"},
        {"inbound_messages", "SELECT count(*) - count(DISTINCT wa_msg_id) FROM inbound_messages"},
        {"message_logs", "SELECT count(*) - count(DISTINCT bsp_msg_id) FROM message_logs"},
        {"contacts", "SELECT count(*) - count(DISTINCT wa_id) FROM contacts"},
        {"dead_letters", "SELECT count(*) - count(DISTINCT (subscription, message_id)) FROM dead_letters"},
    };
    for (size_t i = 0; i < sizeof doubled / sizeof doubled[0]; i++) {
        long long d = rd_count(c, doubled[i][1]);
        if (d != 0)
            fprintf(stderr, "%s: %lld doubled rows in %s\n", label, d, doubled[i][0]);
        k.doubled += d;
    }

    /* Nothing that no push carried. */
    static const char *const unexpected[][2] = {
        {"receipts no push carried (subscription | message_id)",
         "SELECT r.subscription, r.message_id FROM pubsub_receipts r WHERE NOT EXISTS"
         " (SELECT 1 FROM pwt_rd_r e WHERE e.sub = r.subscription AND e.mid = r.message_id)"},
        {"status_events no push carried (bsp_msg_id | status)",
         "SELECT x.bsp_msg_id, x.status FROM status_events x WHERE NOT EXISTS"
         " (SELECT 1 FROM pwt_rd_s e WHERE e.w = x.bsp_msg_id AND e.s = x.status)"},
        {"inbound_messages no push carried (wa_msg_id)",
         "SELECT x.wa_msg_id FROM inbound_messages x WHERE NOT EXISTS (SELECT 1 FROM pwt_rd_i e WHERE e.w = x.wa_msg_id)"},
        {"message_logs rows for no pushed status (bsp_msg_id)",
         "SELECT m.bsp_msg_id FROM message_logs m WHERE NOT EXISTS (SELECT 1 FROM pwt_rd_s e WHERE e.w = m.bsp_msg_id)"},
    };
    for (size_t i = 0; i < sizeof unexpected / sizeof unexpected[0]; i++)
        k.unexpected += rd_problems(c, label, unexpected[i][0], unexpected[i][1]);

    /* message_logs agrees with status_events. */
    k.logs_inconsistent =
        rd_problems(c, label,
                    "status events whose message_logs row is missing, lacks the status, has it later, or has no current_status"
                    " (bsp_msg_id | status | occurred_at | whatsapp_status | current_status)",
                    "SELECT x.bsp_msg_id, x.status, x.occurred_at, m.whatsapp_status, m.current_status FROM status_events x"
                    " LEFT JOIN message_logs m ON m.bsp_msg_id = x.bsp_msg_id"
                    " WHERE m.bsp_msg_id IS NULL OR m.current_status IS NULL OR NOT (m.whatsapp_status ? x.status)"
                    " OR (m.whatsapp_status ->> x.status)::timestamptz > date_trunc('second', x.occurred_at)"
                    " ORDER BY 1, 2");

    /* ... and is exactly what docs/rows.md derives from the events (status_events keeps the earliest of each): per key the
       earliest time, read/played implying delivered and sent, delivered implying sent; current_status by precedence;
       last_error the failed event's errors; created_at the earliest event; to_phone '+' and a recipient's digits. */
    k.logs_inconsistent += rd_problems(
        c, label,
        "message_logs rows that differ from what their status_events imply (bsp_msg_id | whatsapp_status | expected |"
        " current_status | last_error | created_at | to_phone)",
        "WITH e AS (SELECT bsp_msg_id AS w, status AS s, occurred_at AS t, errors, recipient_id FROM status_events),"
        " k AS (SELECT w, 'sent' AS key, min(t) AS t FROM e WHERE s IN ('sent', 'delivered', 'read', 'played') GROUP BY w"
        "  UNION ALL SELECT w, 'delivered', min(t) FROM e WHERE s IN ('delivered', 'read', 'played') GROUP BY w"
        "  UNION ALL SELECT w, s, min(t) FROM e WHERE s NOT IN ('sent', 'delivered') GROUP BY w, s),"
        " want AS (SELECT w, jsonb_object_agg(key, to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')) AS ws"
        "  FROM k GROUP BY w),"
        " first AS (SELECT w, min(t) AS t FROM e GROUP BY w),"
        " failed AS (SELECT w, errors FROM e WHERE s = 'failed')"
        " SELECT m.bsp_msg_id, m.whatsapp_status, want.ws, m.current_status, m.last_error, m.created_at, m.to_phone"
        " FROM message_logs m JOIN want ON want.w = m.bsp_msg_id JOIN first ON first.w = m.bsp_msg_id"
        " LEFT JOIN failed ON failed.w = m.bsp_msg_id"
        " WHERE m.whatsapp_status <> want.ws"
        "  OR m.current_status IS DISTINCT FROM (CASE WHEN want.ws ? 'played' THEN 'played' WHEN want.ws ? 'read' THEN 'read'"
        "   WHEN want.ws ? 'delivered' THEN 'delivered' WHEN want.ws ? 'failed' THEN 'failed' WHEN want.ws ? 'sent' THEN 'sent'"
        "   ELSE (SELECT min(x COLLATE \"C\") FROM jsonb_object_keys(want.ws) x) END)"
        "  OR m.last_error IS DISTINCT FROM failed.errors"
        "  OR (first.t <= now() AND m.created_at <> first.t)"
        "  OR (EXISTS (SELECT 1 FROM e WHERE e.w = m.bsp_msg_id AND e.recipient_id IS NOT NULL)"
        "   AND NOT EXISTS (SELECT 1 FROM e WHERE e.w = m.bsp_msg_id"
        "    AND '+' || regexp_replace(e.recipient_id, '[^0-9]', '', 'g') = m.to_phone))"
        " ORDER BY 1");

    long long dl = 0;
    if (!dead_letters_ok)
        dl = rd_problems(c, label, "dead letters (message_id | reason)",
                         "SELECT coalesce(message_id, 'NULL'), reason FROM dead_letters ORDER BY id");
    PQfinish(c);

    if (k.unacked > 0) {
        fprintf(stderr, "%s: %lld pushes never acknowledged, e.g.:\n", label, k.unacked);
        int shown = 0;
        for (size_t i = 0; i < set->n && shown < RD_SAMPLE_ROWS; i++) {
            const pwt_rd_push_t *p = &set->pushes[i];
            if (p->acked)
                continue;
            fprintf(stderr, "    %s: %d attempts, last answer %ld\n", p->message_id ? p->message_id : "(no id)", p->attempts,
                    p->final_status);
            shown++;
        }
    }
    printf("# %s: stored: receipts %lld, status_events %lld, inbound_messages %lld, message_logs %lld, dead_letters %lld"
           " (acknowledged pushes carried %lld receipts, %lld statuses, %lld inbound)\n",
           label, k.receipts, k.status_events, k.inbound, k.message_logs, k.dead_letters, k.want_receipts, k.want_statuses,
           k.want_inbound);
    if (out != NULL)
        *out = k;
    return k.missing_receipts + k.missing_statuses + k.missing_inbound + k.receipts_not_stored + k.doubled + k.unexpected +
           k.logs_inconsistent + dl;
}

void pwt_rd__assert_exact(const char *file, int line, const pwt_rd_set_t *set, const char *label)
{
    pwt_rd_check_t k;
    long long problems = pwt_rd_check(set, label, 0, &k);
    if (problems != 0 || k.unacked != 0)
        pwt_fail(file, line,
                 "%s: not exact: %lld pushes unacknowledged; missing %lld receipts, %lld statuses, %lld inbound;"
                 " %lld receipts not stored, %lld doubled, %lld unexpected, %lld message_logs inconsistencies"
                 " (%lld problems in all, details above)",
                 label, k.unacked, k.missing_receipts, k.missing_statuses, k.missing_inbound, k.receipts_not_stored, k.doubled,
                 k.unexpected, k.logs_inconsistent, problems);
}
