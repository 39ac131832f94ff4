/* The signing-key fetcher: one background thread keeps an immutable, ref-counted JWKS snapshot fresh. */
#include "worker/jwks.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "worker/log.h"
#include "worker/util.h"

#ifndef PW_VERSION
#define PW_VERSION "dev"
#endif

static struct {
    /* `lock` guards current, stop, refresh_wanted and the `wake` condition; it is held only for
       pointer swaps and flag changes, never during a fetch. */
    pthread_mutex_t lock;
    pthread_cond_t wake;         /* CLOCK_MONOTONIC */
    pthread_cond_t attempted_cv; /* CLOCK_MONOTONIC: the first fetch has ended (pw_keys_wait_first) */
    int attempted;
    pw_jwks_snapshot_t *current; /* holds one reference of its own */
    int stop;
    int refresh_wanted;
    double stale_at_ms; /* monotonic: current's cache lifetime ends (max-age minus Age) */
    double drop_at_ms;  /* monotonic: current is dropped unless a fetch succeeds (stale_at + stale_max) */
    /* Fixed while the thread runs. */
    pthread_t thread;
    int started;
    char *url;
    long min_refresh_ms;
    long stale_max_s;
    /* Lock-free reads from any thread. */
    atomic_int ready;
    atomic_uint_fast64_t generation; /* changed (under lock) with every change of current */
    atomic_int stop_now;        /* aborts a transfer in flight */
    atomic_int refresh_pending; /* fast path of pw_keys_request_refresh */
    atomic_uint_fast64_t fetches, failures, refresh_requests;
    atomic_llong last_success_unix;
    atomic_size_t key_count;
} K = {.lock = PTHREAD_MUTEX_INITIALIZER};

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void snapshot_free(pw_jwks_snapshot_t *snap)
{
    pw_jwks_dispose(&snap->keys);
    free(snap);
}

pw_jwks_snapshot_t *pw_keys_acquire(void)
{
    pw_jwks_snapshot_t *snap;
    pthread_mutex_lock(&K.lock);
    if ((snap = K.current) != NULL)
        atomic_fetch_add(&snap->pw__refs, 1);
    pthread_mutex_unlock(&K.lock);
    return snap;
}

void pw_keys_release(pw_jwks_snapshot_t *snap)
{
    if (snap != NULL && atomic_fetch_sub(&snap->pw__refs, 1) == 1)
        snapshot_free(snap);
}

long pw_keys_min_refresh_ms(void)
{
    return K.started ? K.min_refresh_ms : PW_JWKS_MIN_REFRESH_MS;
}

int pw_keys_ready(void)
{
    return atomic_load(&K.ready);
}

uint64_t pw_keys_generation(void)
{
    return atomic_load(&K.generation);
}

void pw_keys_request_refresh(const pw_jwks_snapshot_t *seen)
{
    atomic_fetch_add(&K.refresh_requests, 1);
    if (atomic_load(&K.refresh_pending))
        return; /* already asked; the fetcher has not picked it up yet */
    pthread_mutex_lock(&K.lock);
    /* A request judged against a key set that has since been replaced is already answered by
       that newer set: asking again would cost a second fetch for one burst. */
    if (seen == K.current && !K.refresh_wanted) {
        K.refresh_wanted = 1;
        atomic_store(&K.refresh_pending, 1);
        pthread_cond_signal(&K.wake);
    }
    pthread_mutex_unlock(&K.lock);
}

void pw_keys_stats(pw_keys_stats_t *out)
{
    out->fetches = atomic_load(&K.fetches);
    out->failures = atomic_load(&K.failures);
    out->refresh_requests = atomic_load(&K.refresh_requests);
    out->last_success_unix = atomic_load(&K.last_success_unix);
    out->keys = atomic_load(&K.key_count);
}

/* ------------------------------------------------------------------------------------------ */
/* One fetch                                                                                   */

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    pw_buf_t *b = ud;
    size_t n = size * nmemb;
    if (b->len + n > PW_JWKS_MAX_BYTES)
        return 0; /* aborts with CURLE_WRITE_ERROR */
    pw_buf_append(b, p, n);
    return n;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    (void)ud, (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return atomic_load(&K.stop_now); /* nonzero aborts the transfer */
}

/* Seconds of max-age in a Cache-Control value, or -1 when it has none (s-maxage does not count). */
static long parse_max_age(const char *v)
{
    while (v != NULL && *v != '\0') {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        if (strncasecmp(v, "max-age", 7) == 0 && v[7] == '=') {
            const char *d = v + 8;
            char *end;
            long n;
            if (*d == '"')
                d++;
            errno = 0;
            n = strtol(d, &end, 10);
            if (end == d || errno != 0 || n < 0)
                return -1;
            return n;
        }
        v = strchr(v, ',');
    }
    return -1;
}

/*
 * How long the fetched keys are fresh: max-age minus Age (0 when Age reaches max-age), at most
 * PW_JWKS_MAX_TTL_S; PW_JWKS_DEFAULT_TTL_S without a max-age. The refresh schedule adds its own floor.
 */
static long cache_lifetime_s(CURL *h)
{
    struct curl_header *hh;
    long max_age = -1, age = 0;

    if (curl_easy_header(h, "cache-control", 0, CURLH_HEADER, -1, &hh) == CURLHE_OK)
        max_age = parse_max_age(hh->value);
    if (max_age < 0)
        return PW_JWKS_DEFAULT_TTL_S;
    if (curl_easy_header(h, "age", 0, CURLH_HEADER, -1, &hh) == CURLHE_OK) {
        char *end;
        long a = strtol(hh->value, &end, 10);
        if (end != hh->value && *end == '\0' && a > 0)
            age = a;
    }
    max_age = max_age > age ? max_age - age : 0;
    return max_age > PW_JWKS_MAX_TTL_S ? PW_JWKS_MAX_TTL_S : max_age;
}

/* Fetches and parses the key set; 0 with *out and *ttl_s, or -1 with err. */
static int fetch_once(CURL *h, pw_buf_t *body, pw_jwks_snapshot_t **out, long *ttl_s, char *err, size_t errlen)
{
    CURLcode cc;
    long status = 0;
    pw_jwks_t keys;
    char perr[200];

    pw_buf_reset(body);
    if ((cc = curl_easy_perform(h)) != CURLE_OK) {
        if (cc == CURLE_WRITE_ERROR && body->len > 0)
            snprintf(err, errlen, "response over %d bytes", PW_JWKS_MAX_BYTES);
        else
            snprintf(err, errlen, "%s", curl_easy_strerror(cc));
        return -1;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        snprintf(err, errlen, "HTTP status %ld", status);
        return -1;
    }
    if (pw_jwks_parse(body->base != NULL ? body->base : "", body->len, &keys, perr, sizeof(perr)) != 0) {
        snprintf(err, errlen, "%s", perr);
        return -1;
    }
    *out = pw_xcalloc(1, sizeof(**out));
    (*out)->keys = keys;
    (*out)->fetched_unix = (int64_t)time(NULL);
    (*out)->fetched_ms = pw_now_ms();
    atomic_init(&(*out)->pw__refs, 1);
    *ttl_s = cache_lifetime_s(h);
    return 0;
}

static CURL *new_handle(pw_buf_t *body)
{
    CURL *h = curl_easy_init();
    if (h == NULL) {
        pw_log_error("curl_easy_init failed");
        abort();
    }
    curl_easy_setopt(h, CURLOPT_URL, K.url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* threaded: no SIGALRM for DNS timeouts */
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)PW_JWKS_FETCH_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)PW_JWKS_FETCH_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)PW_JWKS_MAX_BYTES);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "pushworker/" PW_VERSION);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, ""); /* whatever libcurl can decode */
    return h;
}

/* ------------------------------------------------------------------------------------------ */
/* The thread                                                                                  */

static void wait_until(double due_ms)
{
    double ms = due_ms;
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000.0);
    ts.tv_nsec = (long)((ms - (double)ts.tv_sec * 1000.0) * 1e6);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&K.wake, &K.lock, &ts);
}

static void *fetcher_main(void *arg)
{
    pw_buf_t body = {0};
    CURL *h = new_handle(&body);
    double next_due = 0, last_attempt = -1e18;
    long backoff_ms = PW_JWKS_BACKOFF_MIN_MS;
    char url_esc[512];
    (void)arg;

    pw_log_escape(K.url, url_esc, sizeof(url_esc));
    pthread_mutex_lock(&K.lock);
    while (!K.stop) {
        double now = mono_ms(), due = next_due;
        pw_jwks_snapshot_t *snap = NULL, *old = NULL;
        char err[256] = "", extra[1024];
        long ttl_s = 0;
        int rc;

        if (K.refresh_wanted && last_attempt + (double)K.min_refresh_ms < due)
            due = last_attempt + (double)K.min_refresh_ms;
        /* Keys about to be dropped get one last fetch first. */
        if (K.current != NULL && K.drop_at_ms < due)
            due = K.drop_at_ms;
        if (now < due) {
            wait_until(due);
            continue;
        }
        K.refresh_wanted = 0;
        atomic_store(&K.refresh_pending, 0);
        last_attempt = now;
        pthread_mutex_unlock(&K.lock);

        atomic_fetch_add(&K.fetches, 1);
        rc = fetch_once(h, &body, &snap, &ttl_s, err, sizeof(err));

        pthread_mutex_lock(&K.lock);
        if (!K.attempted) {
            K.attempted = 1;
            pthread_cond_broadcast(&K.attempted_cv);
        }
        if (rc == 0) {
            /* Refresh a little before the keys expire, but never sooner than PW_JWKS_MIN_TTL_S. */
            long margin = ttl_s / 10 < 300 ? ttl_s / 10 : 300;
            long refresh_in = ttl_s - margin < PW_JWKS_MIN_TTL_S ? PW_JWKS_MIN_TTL_S : ttl_s - margin;
            old = K.current;
            K.current = snap;
            snap->generation = atomic_fetch_add(&K.generation, 1) + 1;
            K.stale_at_ms = mono_ms() + (double)ttl_s * 1000.0;
            K.drop_at_ms = K.stale_at_ms + (double)K.stale_max_s * 1000.0;
            /* Keys declared stale at once (max-age 0) with JWKS_STALE_MAX_SECONDS=0 would refetch in a
               loop: the last fetch before a drop comes no sooner than the shortest retry. */
            if (K.drop_at_ms < mono_ms() + (double)PW_JWKS_BACKOFF_MIN_MS)
                K.drop_at_ms = mono_ms() + (double)PW_JWKS_BACKOFF_MIN_MS;
            /* Requests made while this fetch ran were about the old set: this one answers them. */
            K.refresh_wanted = 0;
            atomic_store(&K.refresh_pending, 0);
            next_due = mono_ms() + (double)refresh_in * 1000.0;
            backoff_ms = PW_JWKS_BACKOFF_MIN_MS;
            atomic_store(&K.key_count, snap->keys.count);
            atomic_store(&K.last_success_unix, (long long)snap->fetched_unix);
            atomic_store(&K.ready, 1);
            pthread_mutex_unlock(&K.lock);

            snprintf(extra, sizeof(extra), "\"url\":\"%s\",\"keys\":%zu,\"skipped\":%zu,\"cache_s\":%ld,\"refresh_in_s\":%ld",
                     url_esc, snap->keys.count, snap->keys.skipped, ttl_s, refresh_in);
            pw_log(PW_LOG_INFO, extra, "JWKS fetched: %zu signing keys", snap->keys.count);
            if (snap->keys.skipped > 0)
                pw_log(PW_LOG_WARNING, extra, "JWKS: skipped %zu unusable keys (%s)", snap->keys.skipped, snap->keys.skip_reason);
            pw_keys_release(old); /* loops holding it keep it alive until they release */
        } else if (atomic_load(&K.stop_now)) {
            break; /* aborted by pw_keys_stop: not a failure worth counting */
        } else {
            double t = mono_ms();
            long stale_s = -1, drop_in_s = 0;
            next_due = t + (double)backoff_ms;
            atomic_fetch_add(&K.failures, 1);
            if (K.current != NULL && t >= K.drop_at_ms) {
                /* Past their cache lifetime by JWKS_STALE_MAX_SECONDS with every refresh failed: keys
                   Google may have revoked are not trusted forever. Pushes get 503 (Pub/Sub retries). */
                old = K.current;
                K.current = NULL;
                atomic_fetch_add(&K.generation, 1);
                atomic_store(&K.ready, 0);
                atomic_store(&K.key_count, 0);
                stale_s = (long)((t - K.stale_at_ms) / 1000.0);
                pthread_mutex_unlock(&K.lock);
                pw_keys_release(old);
                snprintf(extra, sizeof(extra), "\"url\":\"%s\",\"stale_s\":%ld,\"retry_in_ms\":%ld", url_esc, stale_s,
                         backoff_ms);
                pw_log(PW_LOG_ERROR, extra,
                       "JWKS fetch failed: %s; no signing keys: the keys expired (%ld s past their cache lifetime, "
                       "JWKS_STALE_MAX_SECONDS=%ld) and are dropped; pushes are answered 503 until a fetch succeeds",
                       err, stale_s, K.stale_max_s);
            } else {
                if (K.current != NULL && t >= K.stale_at_ms) {
                    stale_s = (long)((t - K.stale_at_ms) / 1000.0);
                    drop_in_s = (long)((K.drop_at_ms - t) / 1000.0 + 0.999);
                }
                int have = K.current != NULL;
                pthread_mutex_unlock(&K.lock);
                if (stale_s >= 0) {
                    snprintf(extra, sizeof(extra), "\"url\":\"%s\",\"stale_s\":%ld,\"drop_in_s\":%ld,\"retry_in_ms\":%ld",
                             url_esc, stale_s, drop_in_s, backoff_ms);
                    pw_log(PW_LOG_WARNING, extra,
                           "JWKS fetch failed: %s; keeping the previous keys, stale for %ld s: dropped in %ld s "
                           "(JWKS_STALE_MAX_SECONDS) unless a fetch succeeds",
                           err, stale_s, drop_in_s);
                } else {
                    snprintf(extra, sizeof(extra), "\"url\":\"%s\",\"retry_in_ms\":%ld", url_esc, backoff_ms);
                    pw_log(PW_LOG_WARNING, extra, "JWKS fetch failed: %s; %s", err,
                           have                                  ? "keeping the previous keys"
                           : atomic_load(&K.last_success_unix) != 0 ? "still no signing keys (they expired)"
                                                                    : "no keys yet");
                }
            }
            backoff_ms = backoff_ms * 2 > PW_JWKS_BACKOFF_MAX_MS ? PW_JWKS_BACKOFF_MAX_MS : backoff_ms * 2;
        }
        pthread_mutex_lock(&K.lock);
    }
    pthread_mutex_unlock(&K.lock);
    curl_easy_cleanup(h);
    pw_buf_dispose(&body);
    return NULL;
}

int pw_keys_start(const char *url, long min_refresh_ms, long stale_max_s, char *err, size_t errlen)
{
    pthread_condattr_t ca;
    int rc;

    if (K.started)
        return pw_set_err(err, errlen, PW_EINVAL, "JWKS fetcher already started");
    if (url == NULL || (strncasecmp(url, "https://", 8) != 0 && strncasecmp(url, "http://", 7) != 0))
        return pw_set_err(err, errlen, PW_EINVAL, "OIDC_JWKS_URL must be an http:// or https:// URL");
    if (min_refresh_ms < 0 || min_refresh_ms > 86400000L)
        return pw_set_err(err, errlen, PW_EINVAL, "JWKS_MIN_REFRESH_MS=%ld: expected milliseconds 0..86400000", min_refresh_ms);
    if (stale_max_s < 0 || stale_max_s > 7L * 86400)
        return pw_set_err(err, errlen, PW_EINVAL, "JWKS_STALE_MAX_SECONDS=%ld: expected seconds 0..604800", stale_max_s);
    if (strncasecmp(url, "http://", 7) == 0)
        pw_log_warning("OIDC_JWKS_URL is plain http: use it only for local tests");

    K.url = pw_xstrndup(url, strlen(url));
    K.min_refresh_ms = min_refresh_ms;
    K.stale_max_s = stale_max_s;
    K.stop = 0;
    K.refresh_wanted = 0;
    atomic_store(&K.stop_now, 0);
    atomic_store(&K.refresh_pending, 0);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&K.wake, &ca);
    pthread_cond_init(&K.attempted_cv, &ca);
    pthread_condattr_destroy(&ca);
    K.attempted = 0;
    if ((rc = pthread_create(&K.thread, NULL, fetcher_main, NULL)) != 0) {
        pthread_cond_destroy(&K.wake);
        pthread_cond_destroy(&K.attempted_cv);
        free(K.url);
        K.url = NULL;
        return pw_set_err(err, errlen, PW_EINVAL, "cannot start the JWKS thread: %s", strerror(rc));
    }
    K.started = 1;
    return 0;
}

void pw_keys_stop(void)
{
    pw_jwks_snapshot_t *last;

    if (!K.started)
        return;
    pthread_mutex_lock(&K.lock);
    K.stop = 1;
    atomic_store(&K.stop_now, 1);
    pthread_cond_signal(&K.wake);
    pthread_mutex_unlock(&K.lock);
    pthread_join(K.thread, NULL);

    pthread_mutex_lock(&K.lock);
    last = K.current;
    K.current = NULL;
    atomic_fetch_add(&K.generation, 1);
    atomic_store(&K.ready, 0);
    atomic_store(&K.key_count, 0);
    pthread_mutex_unlock(&K.lock);
    pw_keys_release(last);
    pthread_cond_destroy(&K.wake);
    pthread_cond_destroy(&K.attempted_cv);
    free(K.url);
    K.url = NULL;
    K.started = 0;
}

void pw_keys_wait_first(long timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&K.lock);
    while (K.started && !K.attempted)
        if (pthread_cond_timedwait(&K.attempted_cv, &K.lock, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&K.lock);
}
