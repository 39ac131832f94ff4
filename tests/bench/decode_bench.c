/* Worker CPU to decode one push (envelope -> base64 -> webhook) and the memory a hostile payload costs; not run by make bench. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "worker/dispatch.h"

/*
 *   decode_bench status FIXTURE [N]   decodes FIXTURE (a webhook payload, e.g.
 *                                     tests/fixtures/meta/status_sent.json) wrapped as a Pub/Sub push,
 *                                     N times (default 200000), and prints ns per push
 *   decode_bench hostile BYTES        decodes once a push whose payload is BYTES of
 *                                     {"object":"whatsapp_business_account","entry":[],"x":[{},{},...]}
 *                                     and prints the time and the process's peak RSS
 */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *base64(const char *s, size_t n)
{
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = malloc(4 * (n / 3 + 1) + 1), *p = o;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned char)s[i] << 16 | (unsigned char)s[i + 1] << 8 | (unsigned char)s[i + 2];
        *p++ = A[v >> 18];
        *p++ = A[v >> 12 & 63];
        *p++ = A[v >> 6 & 63];
        *p++ = A[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned char)s[i] << 16;
        *p++ = A[v >> 18];
        *p++ = A[v >> 12 & 63];
        *p++ = '=';
        *p++ = '=';
    } else if (n - i == 2) {
        unsigned v = (unsigned char)s[i] << 16 | (unsigned char)s[i + 1] << 8;
        *p++ = A[v >> 18];
        *p++ = A[v >> 12 & 63];
        *p++ = A[v >> 6 & 63];
        *p++ = '=';
    }
    *p = '\0';
    return o;
}

static char *wrap(const char *payload, size_t n, size_t *len)
{
    char *b64 = base64(payload, n);
    size_t cap = strlen(b64) + 512;
    char *body = malloc(cap);
    *len = (size_t)snprintf(body, cap,
                            "{\"message\":{\"data\":\"%s\",\"messageId\":\"12345678901234567\",\"message_id\":"
                            "\"12345678901234567\",\"publishTime\":\"2024-03-06T10:00:00.250Z\",\"publish_time\":"
                            "\"2024-03-06T10:00:00.250Z\"},\"subscription\":\"projects/acme-prod/subscriptions/whatsapp-events-push\"}",
                            b64);
    free(b64);
    return body;
}

static int status_bench(const char *path, long n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "decode_bench: cannot read %s\n", path);
        return 2;
    }
    static char payload[1 << 16];
    size_t plen = fread(payload, 1, sizeof payload, f), len;
    fclose(f);
    char *body = wrap(payload, plen, &len);
    for (int round = 0; round < 2; round++) { /* the first round warms up */
        double t0 = now_s();
        for (long i = 0; i < n; i++) {
            pw_push_t p;
            memset(&p, 0, sizeof p);
            pw_push_decode(&p, body, len, NULL);
            if (p.outcome != PW_OUTCOME_STORED || p.wh.n_statuses != 1) {
                fprintf(stderr, "decode_bench: the push did not decode to one status\n");
                return 1;
            }
            pw_push_dispose(&p);
        }
        double dt = now_s() - t0;
        if (round == 1)
            printf("status push (%zu-byte payload, %zu-byte body): %.0f ns per push (%ld pushes)\n", plen, len, dt / (double)n * 1e9, n);
    }
    free(body);
    return 0;
}

static int hostile_bench(size_t bytes)
{
    char *payload = malloc(bytes + 64);
    size_t n = (size_t)sprintf(payload, "{\"object\":\"whatsapp_business_account\",\"entry\":[],\"x\":[{}");
    while (n + 5 < bytes) {
        memcpy(payload + n, ",{}", 3);
        n += 3;
    }
    n += (size_t)sprintf(payload + n, "]}");
    size_t len;
    char *body = wrap(payload, n, &len);
    free(payload);
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    pw_push_t p;
    memset(&p, 0, sizeof p);
    double t0 = now_s();
    pw_push_decode(&p, body, len, NULL);
    double dt = now_s() - t0;
    getrusage(RUSAGE_SELF, &after);
    printf("hostile payload of %zu bytes (%zu-byte body): outcome %d, %.1f ms, peak RSS %ld MiB (before decoding %ld MiB)\n", n,
           len, (int)p.outcome, dt * 1e3, after.ru_maxrss / 1024, before.ru_maxrss / 1024);
    pw_push_dispose(&p);
    free(body);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "status") == 0)
        return status_bench(argv[2], argc > 3 ? atol(argv[3]) : 200000);
    if (argc == 3 && strcmp(argv[1], "hostile") == 0)
        return hostile_bench((size_t)atol(argv[2]));
    fprintf(stderr, "usage: decode_bench status FIXTURE [N] | decode_bench hostile BYTES\n");
    return 2;
}
