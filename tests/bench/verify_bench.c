/* Token verification cost per push: RS256 verification (a cache miss) against a verified-token cache hit. */
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto/jwt.h"
#include "worker/auth.h"
#include "worker/config.h"

#define AUDIENCE "http://localhost:8080/"
#define FIXTURE_NOW 1700000000 /* the clock tests/fixtures/jwt tokens were minted for */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "verify_bench: cannot read %s\n", path);
        exit(2);
    }
    char *buf = malloc(1 << 16);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    *len = n;
    return buf;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *b64url(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    for (char *p = out; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    char *eq = strchr(out, '=');
    if (eq != NULL)
        *eq = '\0';
    return out;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "tests/fixtures/jwt";
    char path[1024], err[200];
    size_t len, tlen;
    snprintf(path, sizeof path, "%s/jwks.json", dir);
    char *jwks_text = read_file(path, &len);
    pw_jwks_t keys;
    if (pw_jwks_parse(jwks_text, len, &keys, err, sizeof err) != 0) {
        fprintf(stderr, "verify_bench: %s\n", err);
        return 2;
    }
    snprintf(path, sizeof path, "%s/valid.jwt", dir);
    char *token = read_file(path, &tlen);

    /* A cache miss: what the worker does for a token it has not seen: hash it, then verify it all. */
    pw_jwt_policy_t pol = {.audience = AUDIENCE, .email = "push@local.iam.gserviceaccount.com",
                           .skew_s = PW_JWT_DEFAULT_SKEW_S, .now = FIXTURE_NOW, .mode = PW_JWT_VERIFY_SIGNATURE};
    enum { MISSES = 3000, HITS = 300000 };
    pw_jwt_result_t res;
    unsigned char hash[SHA256_DIGEST_LENGTH];
    double t0 = now_s();
    for (int i = 0; i < MISSES; i++) {
        SHA256((const unsigned char *)token, tlen, hash);
        if (pw_jwt_verify(token, tlen, &keys, &pol, &res, err, sizeof err) != 0) {
            fprintf(stderr, "verify_bench: the fixture token does not verify: %s\n", err);
            return 2;
        }
    }
    double miss_us = (now_s() - t0) / MISSES * 1e6;

    /* A cache hit, through pw_auth_check itself (the hit path is the same in every mode; claims
       mode needs no key server): a token minted now, checked once, then again and again. */
    char claims[512];
    long now = (long)time(NULL);
    snprintf(claims, sizeof claims, "{\"iss\":\"https://accounts.google.com\",\"aud\":\"%s\",\"iat\":%ld,\"exp\":%ld}", AUDIENCE,
             now, now + 3600);
    char *h = b64url("{\"alg\":\"RS256\",\"kid\":\"k\"}"), *c = b64url(claims);
    char bearer[2048];
    snprintf(bearer, sizeof bearer, "Bearer %s.%s.SIGNATURE_REMOVED_BY_GOOGLE", h, c);
    pw_config_t cfg = {.auth_mode = PW_AUTH_CLAIMS, .audience = AUDIENCE, .issuers = "https://accounts.google.com"};
    pw_auth_t *auth = pw_auth_new(&cfg);
    char reason[200];
    if (pw_auth_check(auth, pw_str(bearer, strlen(bearer)), reason, sizeof reason) != 0) {
        fprintf(stderr, "verify_bench: the minted token was refused: %s\n", reason);
        return 2;
    }
    t0 = now_s();
    for (int i = 0; i < HITS; i++)
        if (pw_auth_check(auth, pw_str(bearer, strlen(bearer)), reason, sizeof reason) != 0)
            return 2;
    double hit_us = (now_s() - t0) / HITS * 1e6;
    pw_auth_stats_t st;
    pw_auth_get_stats(auth, &st);

    printf("token verification per push: without cache %.1f us (RS256, %d runs), with cache %.2f us (%llu hits); "
           "the cache saves %.0fx\n",
           miss_us, MISSES, hit_us, st.cache_hits, miss_us / hit_us);
    pw_auth_free(auth);
    pw_jwks_dispose(&keys);
    free(h);
    free(c);
    free(token);
    free(jwks_text);
    return 0;
}
