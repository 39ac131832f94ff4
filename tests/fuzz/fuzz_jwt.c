/*
 * libFuzzer target: proto/jwt.c (pw_jwt_verify in both modes, pw_jwks_parse, pw_jwks_find).
 *
 * Each input is used three ways:
 *   1. as a compact token: verified in PW_JWT_VERIFY_SIGNATURE mode with the fixture key set
 *      (tests/fixtures/jwt/jwks.json, test-key-1), in the same mode without keys, and in
 *      PW_JWT_SIGNATURE_STRIPPED mode (seeds: the tokens of tests/fixtures/jwt);
 *   2. as JSON: "<header JSON>\n<claims JSON>" (no newline: the whole input is the claims, under
 *      {"alg":"RS256","kid":"test-key-1"}), base64url-encoded here into
 *      header.claims.SIGNATURE_REMOVED_BY_GOOGLE and verified in stripped mode, so that the claim
 *      checks see fuzzed JSON directly instead of fuzzed base64; and with a made-up signature in
 *      signature mode, which must never pass;
 *   3. as a JWKS document for pw_jwks_parse;
 *   4. the expiry arithmetic a cache of verified tokens runs (worker/auth.c: pw_jwt_expired on exp + skew):
 *      on every exp a stripped-mode success yields (claims such as "exp":9223372036854775807 reach it),
 *      at clocks around and far from it, and on three raw int64 (exp, now, skew) from the first 24 bytes;
 *      each verdict is checked against 128-bit arithmetic, and a verified token is never "expired" now.
 * The policy is the unit tests': audience http://localhost:8080/, Google's issuers, email
 * push@local.iam.gserviceaccount.com, skew 60 s, now 1700000000 (the fixtures' clock).
 *
 * Invariants (abort() on a violation): rc is 0 or one of PW_JWT_E* with a reason (pw_jwt_reason
 * is never "unknown", pw_jwt_error_class is 0 for success only, else PW_EUNAUTH/PW_EFORBIDDEN/PW_EUNAVAIL), err is NUL-terminated and non-empty on
 * failure; res.kid and res.email are NUL-terminated, kid only [A-Za-z0-9._-]; a success has
 * exp >= now - skew and iat <= now + skew; without keys signature mode never succeeds; a
 * token whose signature is not RS256 by the key never passes signature mode; a parsed key set
 * has 1..PW_JWKS_MAX_KEYS keys with distinct non-empty kids that pw_jwks_find returns.
 *
 * The key set is read once in LLVMFuzzerInitialize (read-only afterwards) from
 * $PW_FIXTURES/jwt/jwks.json, ./tests/fixtures/jwt/jwks.json or <binary>/../../tests/fixtures/...,
 * else from the copy below (test-key-1 when this file was written).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/jwt.h"

#define NOW 1700000000
#define SKEW 60
#define AUDIENCE "http://localhost:8080/"
#define EMAIL "push@local.iam.gserviceaccount.com"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #cond);        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char EMBEDDED_JWKS[] =
    "{\"keys\":[{\"kty\":\"RSA\",\"alg\":\"RS256\",\"use\":\"sig\",\"kid\":\"test-key-1\",\"n\":\"0sCH1kcTdhLyvcCF95nFBPQOntM8hvV6qSXMvbk57hKrIwQGVlIoFw4AOJ57ya8B6cWrB6WvMtWCQkRz9JgICGSacxE5_aw0x0Vry94i4leBmo8goAVlGMIXUgJKL7A3vfsY9k-IULXHMRRJ4FQtHV57DfFPfXq1I3pNZjoReZo40vXrnXCzWoW31O4nIMXpHHdayYXYJ0MDxwZ9ZklsD23YoOUJDjbWMbDNsisvjqPGi6kX71FRt848fPGrn14KdXxqHjePya0n0zg4fplcOpQNESutDtEjfWxijNa_CRxl9sHplag8maVcld2bOXWIcx8j_yXO5pggJgeHhEAcqw\",\"e\":\"AQAB\"}]}";

static pw_jwks_t keys; /* read-only after LLVMFuzzerInitialize */

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0, r;
    do {
        if (n == cap) {
            cap = cap ? 2 * cap : 4096;
            buf = realloc(buf, cap);
            CHECK(buf != NULL);
        }
        r = fread(buf + n, 1, cap - n, f);
        n += r;
    } while (r > 0);
    fclose(f);
    *len = n;
    return buf;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char path[4096], err[256];
    const char *candidates[3] = {NULL, "tests/fixtures", NULL};
    char bin_rel[4096];
    const char *fx = getenv("PW_FIXTURES");
    candidates[0] = fx;
    if (*argc > 0) {
        const char *slash = strrchr((*argv)[0], '/');
        if (slash != NULL) {
            snprintf(bin_rel, sizeof bin_rel, "%.*s/../../tests/fixtures", (int)(slash - (*argv)[0]), (*argv)[0]);
            candidates[2] = bin_rel;
        }
    }
    for (int i = 0; i < 3; i++) {
        size_t len;
        char *json;
        if (candidates[i] == NULL)
            continue;
        snprintf(path, sizeof path, "%s/jwt/jwks.json", candidates[i]);
        if ((json = slurp(path, &len)) == NULL)
            continue;
        int rc = pw_jwks_parse(json, len, &keys, err, sizeof err);
        free(json);
        if (rc == 0)
            return 0;
        fprintf(stderr, "fuzz_jwt: %s: %s; trying the next key set\n", path, err);
    }
    if (pw_jwks_parse(EMBEDDED_JWKS, sizeof EMBEDDED_JWKS - 1, &keys, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_jwt: the embedded key set does not parse: %s\n", err);
        abort();
    }
    fprintf(stderr, "fuzz_jwt: using the embedded key set\n");
    return 0;
}

static pw_jwt_policy_t policy(pw_jwt_mode_t mode)
{
    return (pw_jwt_policy_t){.audience = AUDIENCE, .issuers = NULL, .email = EMAIL, .skew_s = SKEW, .now = NOW, .mode = mode};
}

static void check_outcome(int rc, const pw_jwt_result_t *res, const char *err, size_t errlen)
{
    CHECK(rc == 0 || (rc >= PW_JWT_EMALFORMED && rc <= PW_JWT_EUNVERIFIED));
    CHECK(strcmp(pw_jwt_reason(rc), "unknown") != 0);
    int cls = pw_jwt_error_class(rc);
    CHECK(rc == 0 ? cls == 0 : (cls == PW_EUNAUTH || cls == PW_EFORBIDDEN || cls == PW_EUNAVAIL));
    CHECK(memchr(res->kid, '\0', sizeof res->kid) != NULL);
    CHECK(memchr(res->email, '\0', sizeof res->email) != NULL);
    for (const char *k = res->kid; *k != '\0'; k++)
        CHECK((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') || (*k >= '0' && *k <= '9') || *k == '.' || *k == '_' ||
              *k == '-');
    CHECK(memchr(err, '\0', errlen) != NULL);
    if (rc != 0) {
        CHECK(err[0] != '\0');
    } else {
        CHECK(res->exp >= NOW - SKEW);
        CHECK(res->iat <= NOW + SKEW);
    }
}

/* pw_jwt_expired against the sum done in 128 bits, where nothing overflows. */
static int check_expired(int64_t exp, int64_t now, int64_t skew)
{
    int got = pw_jwt_expired(exp, now, skew);
    CHECK(got == ((__int128)now > (__int128)exp + (__int128)skew));
    return got;
}

/* What the verified-token cache asks of a token that passed: still valid now, and at later clocks. */
static void cache_expiry(int64_t exp)
{
    static const int64_t clocks[] = {NOW, NOW + SKEW, NOW + 3600, INT64_MAX - SKEW, INT64_MAX, INT64_MIN, 0};
    CHECK(!check_expired(exp, NOW, SKEW)); /* the verifier and the cache agree on "not expired yet" */
    for (size_t i = 0; i < sizeof clocks / sizeof *clocks; i++) {
        check_expired(exp, clocks[i], SKEW);
        check_expired(exp, clocks[i], 0);
    }
    /* At the end of time only an exp within SKEW of it is still valid (saturation, not wrap-around). */
    CHECK(check_expired(exp, INT64_MAX, SKEW) == ((__int128)exp + SKEW < (__int128)INT64_MAX));
}

static int verify(const char *tok, size_t len, const pw_jwks_t *ks, const pw_jwt_policy_t *pol)
{
    pw_jwt_result_t res;
    char err[160];
    memset(err, 0, sizeof err);
    int rc = pw_jwt_verify(tok, len, ks, pol, &res, err, sizeof err);
    check_outcome(rc, &res, err, sizeof err);
    if (rc == 0)
        cache_expiry(res.exp);
    /* Without a result or an err buffer: the same verdict. */
    CHECK(pw_jwt_verify(tok, len, ks, pol, NULL, NULL, 0) == rc);
    return rc;
}

static size_t b64url(const unsigned char *in, size_t n, char *out)
{
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t g = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = A[g >> 18 & 63];
        out[o++] = A[g >> 12 & 63];
        out[o++] = A[g >> 6 & 63];
        out[o++] = A[g & 63];
    }
    if (n - i == 1) {
        out[o++] = A[in[i] >> 2];
        out[o++] = A[(in[i] & 3) << 4];
    } else if (n - i == 2) {
        uint32_t g = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = A[g >> 18 & 63];
        out[o++] = A[g >> 12 & 63];
        out[o++] = A[g >> 6 & 63];
    }
    return o;
}

static void as_token(const char *s, size_t n)
{
    pw_jwt_policy_t sig = policy(PW_JWT_VERIFY_SIGNATURE), stripped = policy(PW_JWT_SIGNATURE_STRIPPED);
    int rc = verify(s, n, &keys, &sig);
    int rc_nokeys = verify(s, n, NULL, &sig);
    CHECK(rc_nokeys != 0);
    if (rc == 0)
        CHECK(verify(s, n, &keys, &stripped) == PW_JWT_ESTRIPPED);
    else
        verify(s, n, &keys, &stripped);
}

static void as_json(const char *s, size_t n)
{
    static const char DEFAULT_HEADER[] = "{\"alg\":\"RS256\",\"kid\":\"test-key-1\"}";
    const char *header = DEFAULT_HEADER, *claims = s;
    size_t hlen = sizeof DEFAULT_HEADER - 1, clen = n;
    const char *nl = memchr(s, '\n', n);
    if (nl != NULL) {
        header = s;
        hlen = (size_t)(nl - s);
        claims = nl + 1;
        clen = n - hlen - 1;
    }
    const char sigtext[] = "." PW_JWT_STRIPPED_SIGNATURE;
    char *tok = malloc(hlen / 3 * 4 + 4 + 1 + clen / 3 * 4 + 4 + 400);
    CHECK(tok != NULL);
    size_t t = b64url((const unsigned char *)header, hlen, tok);
    tok[t++] = '.';
    t += b64url((const unsigned char *)claims, clen, tok + t);
    size_t signing_len = t;
    memcpy(tok + t, sigtext, sizeof sigtext - 1);
    t += sizeof sigtext - 1;

    pw_jwt_policy_t stripped = policy(PW_JWT_SIGNATURE_STRIPPED);
    verify(tok, t, &keys, &stripped);
    stripped.email = NULL;
    stripped.issuers = " https://accounts.google.com , ,issuer-b,";
    stripped.skew_s = 0;
    verify(tok, t, NULL, &stripped);

    /* A 256-byte "signature" made of claim bytes: the right length for the 2048-bit key, never valid. */
    unsigned char fake[256];
    for (size_t i = 0; i < sizeof fake; i++)
        fake[i] = clen > 0 ? (unsigned char)claims[i % clen] : (unsigned char)i;
    tok[signing_len] = '.';
    t = signing_len + 1 + b64url(fake, sizeof fake, tok + signing_len + 1);
    pw_jwt_policy_t sig = policy(PW_JWT_VERIFY_SIGNATURE);
    CHECK(verify(tok, t, &keys, &sig) != 0);
    free(tok);
}

static void as_jwks(const char *s, size_t n)
{
    pw_jwks_t ks;
    char err[256];
    memset(err, 0, sizeof err);
    int rc = pw_jwks_parse(s, n, &ks, err, sizeof err);
    if (rc != 0) {
        CHECK(rc == PW_EINVAL && err[0] != '\0' && memchr(err, '\0', sizeof err) != NULL);
        CHECK(ks.keys == NULL && ks.count == 0);
        pw_jwks_dispose(&ks);
        return;
    }
    CHECK(ks.count >= 1 && ks.count <= PW_JWKS_MAX_KEYS);
    CHECK(memchr(ks.skip_reason, '\0', sizeof ks.skip_reason) != NULL);
    CHECK((ks.skipped == 0) == (ks.skip_reason[0] == '\0'));
    for (size_t i = 0; i < ks.count; i++) {
        CHECK(ks.keys[i].kid != NULL && ks.keys[i].kid[0] != '\0' && ks.keys[i].pkey != NULL);
        CHECK(pw_jwks_find(&ks, pw_str(ks.keys[i].kid, strlen(ks.keys[i].kid))) == ks.keys[i].pkey);
        int bits = EVP_PKEY_get_bits(ks.keys[i].pkey);
        CHECK(bits >= PW_JWKS_MIN_BITS && bits <= PW_JWKS_MAX_BITS);
    }
    pw_jwks_dispose(&ks);
    pw_jwks_dispose(&ks);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    if (size >= 3 * sizeof(int64_t)) {
        int64_t v[3];
        memcpy(v, data, sizeof v);
        check_expired(v[0], v[1], v[2]);
        check_expired(v[0], v[1], SKEW);
    }
    as_token(s, size);
    if (size <= 3 * PW_JWT_MAX_LEN / 4)
        as_json(s, size);
    as_jwks(s, size);
    return 0;
}
