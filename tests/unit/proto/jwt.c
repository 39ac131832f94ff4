/* Unit tests for proto/jwt.c: JWKS parsing, every rejection with its exact reason, claims mode, RFC 7515 A.2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/base64.h"
#include "proto/jwt.h"

/* The tokens in tests/fixtures/jwt were minted by tests/fixtures/jwt/generate (scripts/mint-token,
   openssl CLI) counting from this instant, so nothing here reads the clock. */
#define NOW 1700000000
#define AUDIENCE "http://localhost:8080/"
#define EMAIL "push@local.iam.gserviceaccount.com"

static pw_jwks_t keys;

static char *read_file(const char *name, size_t *len)
{
    char path[512];
    const char *base = getenv("PW_FIXTURES");
    FILE *f;
    char *buf;
    long n;

    snprintf(path, sizeof(path), "%s/jwt/%s", base != NULL ? base : "tests/fixtures", name);
    f = fopen(path, "rb");
    if (f == NULL) {
        print_error("cannot open fixture %s (run from the repository root or set PW_FIXTURES)\n", path);
        fail();
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

static pw_jwt_policy_t policy(pw_jwt_mode_t mode)
{
    return (pw_jwt_policy_t){.audience = AUDIENCE,
                             .issuers = NULL,
                             .email = EMAIL,
                             .skew_s = PW_JWT_DEFAULT_SKEW_S,
                             .now = NOW,
                             .mode = mode,
                             .max_len = 0};
}

/* Verifies the bytes and asserts the exact code; err must be set on failure and free of token bytes. */
static void expect_bytes(const char *what, const char *tok, size_t len, const pw_jwt_policy_t *pol, int want, pw_jwt_result_t *res)
{
    char err[160] = "";
    pw_jwt_result_t scratch;
    int rc = pw_jwt_verify(tok, len, &keys, pol, res != NULL ? res : &scratch, err, sizeof(err));
    if (rc != want) {
        print_error("%s: got %d (%s: %s), want %d (%s)\n", what, rc, pw_jwt_reason(rc), err, want, pw_jwt_reason(want));
        fail();
    }
    if (want != 0) {
        assert_true(strlen(err) > 0);
        /* No token content in the reason: none of the attacker's strings, no base64. */
        assert_null(strstr(err, "evil"));
        assert_null(strstr(err, "other.example"));
        assert_null(strstr(err, "eyJ"));
        assert_null(strstr(err, "LocalHost"));
    }
}

static void expect_file(const char *name, const pw_jwt_policy_t *pol, int want)
{
    size_t len;
    char *tok = read_file(name, &len);
    expect_bytes(name, tok, len, pol, want, NULL);
    free(tok);
}

static int setup(void **state)
{
    size_t len;
    char err[160] = "";
    char *json = read_file("jwks.json", &len);
    (void)state;
    int rc = pw_jwks_parse(json, len, &keys, err, sizeof(err));
    free(json);
    if (rc != 0)
        print_error("jwks.json: %s\n", err);
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    pw_jwks_dispose(&keys);
    pw_jwks_dispose(&keys); /* idempotent */
    return 0;
}

/* ------------------------------------------------------------------------------------------ */

static void test_jwks_fixture(void **state)
{
    (void)state;
    assert_int_equal(keys.count, 1);
    assert_int_equal(keys.skipped, 0);
    assert_string_equal(keys.keys[0].kid, "test-key-1");
    assert_int_equal(EVP_PKEY_get_bits(keys.keys[0].pkey), 2048);
    assert_non_null(pw_jwks_find(&keys, PW_STR_LIT("test-key-1")));
    assert_null(pw_jwks_find(&keys, PW_STR_LIT("test-key-")));
    assert_null(pw_jwks_find(&keys, PW_STR_LIT("test-key-12")));
    assert_null(pw_jwks_find(&keys, PW_STR_NULL));
    assert_null(pw_jwks_find(NULL, PW_STR_LIT("test-key-1")));
}

/* Builds a JWK from the fixture key's n and e with other members around them. */
static void append_jwk(char *out, size_t cap, const char *n, const char *e, const char *members)
{
    size_t used = strlen(out);
    snprintf(out + used, cap - used, "%s{%s\"n\":\"%s\",\"e\":\"%s\"}", used > 9 ? "," : "", members, n, e);
}

static void test_jwks_skips_unusable_keys(void **state)
{
    size_t len;
    char *jwk = read_file("test-key-1.jwk", &len), *small_json = read_file("small/jwks.json", &len);
    char n[1024], json[16384] = "{\"keys\":[", err[160] = "";
    const char *p = strstr(jwk, "\"n\":\"") + 5;
    pw_jwks_t s;
    (void)state;

    snprintf(n, sizeof(n), "%.*s", (int)(strchr(p, '"') - p), p);
    append_jwk(json, sizeof(json), n, "AQAB", "\"kty\":\"EC\",\"kid\":\"a\",");
    append_jwk(json, sizeof(json), n, "AQAB", "\"kty\":\"RSA\",\"alg\":\"RS512\",\"kid\":\"b\",");
    append_jwk(json, sizeof(json), n, "AQAB", "\"kty\":\"RSA\",\"use\":\"enc\",\"kid\":\"c\",");
    append_jwk(json, sizeof(json), n, "AQAB", "\"kty\":\"RSA\",");                       /* no kid */
    append_jwk(json, sizeof(json), n, "AQAB", "\"kty\":\"RSA\",\"kid\":\"\",");          /* empty kid */
    append_jwk(json, sizeof(json), n, "AQ", "\"kty\":\"RSA\",\"kid\":\"e1\",");          /* e = 1 */
    append_jwk(json, sizeof(json), n, "Ag", "\"kty\":\"RSA\",\"kid\":\"e2\",");          /* e = 2 */
    append_jwk(json, sizeof(json), n, "AQAB=", "\"kty\":\"RSA\",\"kid\":\"pad\",");      /* padded */
    append_jwk(json, sizeof(json), "AQAB", "AQAB", "\"kty\":\"RSA\",\"kid\":\"tiny\","); /* 17 bits */
    append_jwk(json, sizeof(json), n, "AQAB", "\"kty\":\"RSA\",\"kid\":\"good\",");      /* alg, use absent */
    append_jwk(json, sizeof(json), n, "AQAB", "\"kty\":\"RSA\",\"kid\":\"good\",");      /* duplicate kid */
    append_jwk(json, sizeof(json), n, "AQAB", "\"kty\":\"RSA\",\"alg\":\"RS256\",\"use\":\"sig\",\"kid\":\"good2\",");
    strcat(json, ",7]}");

    assert_int_equal(pw_jwks_parse(json, strlen(json), &s, err, sizeof(err)), 0);
    assert_int_equal(s.count, 2);
    assert_int_equal(s.skipped, 11);
    assert_string_equal(s.skip_reason, "keys[0]: kty is not \"RSA\"");
    assert_non_null(pw_jwks_find(&s, PW_STR_LIT("good")));
    assert_non_null(pw_jwks_find(&s, PW_STR_LIT("good2")));
    assert_null(pw_jwks_find(&s, PW_STR_LIT("tiny")));
    pw_jwks_dispose(&s);

    /* Zero usable keys is an error: a 1024-bit key alone, an empty set, no set, not JSON. */
    assert_int_equal(pw_jwks_parse(small_json, strlen(small_json), &s, err, sizeof(err)), PW_EINVAL);
    assert_string_equal(err, "JWKS: no usable key among 1 (keys[0]: modulus of 1024 bits (need 2048..8192))");
    assert_int_equal(s.count, 0);
    assert_null(s.keys);
    assert_int_equal(pw_jwks_parse("{\"keys\":[]}", 11, &s, err, sizeof(err)), PW_EINVAL);
    assert_string_equal(err, "JWKS: \"keys\" is empty");
    assert_int_equal(pw_jwks_parse("{}", 2, &s, err, sizeof(err)), PW_EINVAL);
    assert_string_equal(err, "JWKS: no \"keys\" array");
    assert_int_equal(pw_jwks_parse("<html>", 6, &s, err, sizeof(err)), PW_EINVAL);
    assert_int_equal(pw_jwks_parse("{\"keys\":[]} x", 13, &s, err, sizeof(err)), PW_EINVAL);
    pw_jwks_dispose(&s);
    free(jwk);
    free(small_json);
}

static void test_valid_token(void **state)
{
    pw_jwt_policy_t pol = policy(PW_JWT_VERIFY_SIGNATURE);
    pw_jwt_result_t res;
    size_t len;
    char *tok = read_file("valid.jwt", &len);
    (void)state;

    expect_bytes("valid", tok, len, &pol, 0, &res);
    assert_int_equal(res.exp, NOW + 3600);
    assert_int_equal(res.iat, NOW);
    assert_string_equal(res.email, EMAIL);
    assert_int_equal(res.email_verified, 1);
    assert_string_equal(res.kid, "test-key-1");
    /* No NUL needed after the token, and err/res may be NULL. */
    assert_int_equal(pw_jwt_verify(tok, len, &keys, &pol, NULL, NULL, 0), 0);
    /* Exactly at the size limit is fine; one byte over is not. */
    pol.max_len = len;
    expect_bytes("valid at max_len", tok, len, &pol, 0, NULL);
    pol.max_len = len - 1;
    expect_bytes("valid over max_len", tok, len, &pol, PW_JWT_ETOOLARGE, NULL);
    free(tok);
}

static void test_rejections(void **state)
{
    static const struct {
        const char *file;
        int want;
    } cases[] = {
        {"alg_none.jwt", PW_JWT_EBADALG},
        {"alg_hs256_pubkey.jwt", PW_JWT_EBADALG},
        {"alg_es256.jwt", PW_JWT_EBADALG},
        {"alg_ps256.jwt", PW_JWT_EBADALG},
        {"alg_lowercase.jwt", PW_JWT_EBADALG},
        {"no_kid.jwt", PW_JWT_ENOKID},
        {"kid_not_string.jwt", PW_JWT_ENOKID},
        {"unknown_kid.jwt", PW_JWT_EUNKNOWNKID},
        {"crit_header.jwt", PW_JWT_EMALFORMED},
        {"other_key.jwt", PW_JWT_EBADSIG},
        {"expired.jwt", PW_JWT_EEXPIRED},
        {"expired_within_skew.jwt", 0},
        {"iat_future.jwt", PW_JWT_EFUTURE},
        {"iat_within_skew.jwt", 0},
        {"nbf_future.jwt", PW_JWT_ENOTYET},
        {"nbf_within_skew.jwt", 0},
        {"iss_wrong.jwt", PW_JWT_EISSUER},
        {"iss_short.jwt", 0},
        {"iss_http.jwt", PW_JWT_EISSUER},
        {"aud_wrong.jwt", PW_JWT_EAUDIENCE},
        {"aud_case.jwt", PW_JWT_EAUDIENCE},
        {"aud_no_slash.jwt", PW_JWT_EAUDIENCE},
        {"aud_extra_slash.jwt", PW_JWT_EAUDIENCE},
        {"aud_array.jwt", PW_JWT_EAUDIENCE},
        {"email_wrong.jwt", PW_JWT_EEMAIL},
        {"email_missing.jwt", PW_JWT_EEMAIL},
        {"email_unverified.jwt", PW_JWT_EUNVERIFIED},
        {"email_verified_missing.jwt", PW_JWT_EUNVERIFIED},
        {"email_verified_string.jwt", PW_JWT_EUNVERIFIED},
        {"exp_missing.jwt", PW_JWT_ECLAIM},
        {"exp_string.jwt", PW_JWT_ECLAIM},
        {"iat_missing.jwt", PW_JWT_ECLAIM},
        {"exp_huge.jwt", 0}, /* 1e20 saturates: far future, and no overflow in the skew sums */
        {"claims_trailing.jwt", PW_JWT_EMALFORMED},
        {"claims_array.jwt", PW_JWT_EMALFORMED},
        {"stripped.jwt", PW_JWT_EBADSIG}, /* a stripped token in signature mode: 20 bytes, not 256 */
    };
    pw_jwt_policy_t pol = policy(PW_JWT_VERIFY_SIGNATURE);
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_file(cases[i].file, &pol, cases[i].want);
}

static void test_http_status(void **state)
{
    (void)state;
    assert_int_equal(pw_jwt_error_class(0), 0);
    assert_int_equal(pw_jwt_error_class(PW_JWT_EEMAIL), PW_EFORBIDDEN);
    assert_int_equal(pw_jwt_error_class(PW_JWT_EUNKNOWNKID), PW_EUNAVAIL);
    assert_int_equal(pw_jwt_error_class(PW_JWT_ENOKEYS), PW_EUNAVAIL);
    for (int rc = PW_JWT_EMALFORMED; rc <= PW_JWT_EUNVERIFIED; rc++) {
        assert_string_not_equal(pw_jwt_reason(rc), "unknown");
        if (rc != PW_JWT_EEMAIL && rc != PW_JWT_EUNKNOWNKID && rc != PW_JWT_ENOKEYS)
            assert_int_equal(pw_jwt_error_class(rc), PW_EUNAUTH);
    }
    assert_true(pw_jwt_is_unknown_kid(PW_JWT_EUNKNOWNKID));
    assert_false(pw_jwt_is_unknown_kid(PW_JWT_EBADSIG));
    assert_false(pw_jwt_is_unknown_kid(0));
    assert_string_equal(pw_jwt_reason(PW_JWT_EEXPIRED), "expired");
}

/* Byte-level damage to the valid token. */
static void test_mangled_tokens(void **state)
{
    pw_jwt_policy_t pol = policy(PW_JWT_VERIFY_SIGNATURE);
    size_t len;
    char *tok = read_file("valid.jwt", &len);
    char *buf = malloc(PW_JWT_MAX_LEN + 64);
    const char *dot1 = strchr(tok, '.'), *dot2 = strrchr(tok, '.');
    size_t h = (size_t)(dot1 - tok), s = (size_t)(dot2 - tok) + 1;
    (void)state;
    assert_non_null(buf);

    /* A flipped signature byte (a middle character: always canonical base64url). */
    memcpy(buf, tok, len);
    buf[s + 100] = buf[s + 100] == 'A' ? 'B' : 'A';
    expect_bytes("flipped signature", buf, len, &pol, PW_JWT_EBADSIG, NULL);
    /* A flipped payload byte: the signature covers the received bytes. */
    memcpy(buf, tok, len);
    buf[h + 10] = buf[h + 10] == 'A' ? 'B' : 'A';
    expect_bytes("flipped payload", buf, len, &pol, PW_JWT_EBADSIG, NULL);
    /* Truncations: 2 characters (342 -> 340: 255 bytes, always canonical), 1 character (341 % 4 == 1
       is never base64url), the whole signature, into the payload. */
    assert_int_equal(len - s, 342);
    expect_bytes("truncated by 2", tok, len - 2, &pol, PW_JWT_EBADSIG, NULL);
    expect_bytes("truncated by 1", tok, len - 1, &pol, PW_JWT_EMALFORMED, NULL);
    expect_bytes("no signature", tok, s, &pol, PW_JWT_EMALFORMED, NULL);
    expect_bytes("two parts", tok, s - 1, &pol, PW_JWT_EMALFORMED, NULL);
    expect_bytes("cut in the payload", tok, h + 20, &pol, PW_JWT_EMALFORMED, NULL);
    expect_bytes("empty", "", 0, &pol, PW_JWT_EMALFORMED, NULL);
    expect_bytes("dots only", "..", 2, &pol, PW_JWT_EMALFORMED, NULL);
    /* '=' padding on the signature, on the header. */
    memcpy(buf, tok, len);
    buf[len] = '=';
    expect_bytes("padded signature", buf, len + 1, &pol, PW_JWT_EMALFORMED, NULL);
    memcpy(buf, tok, h);
    buf[h] = '=';
    memcpy(buf + h + 1, tok + h, len - h);
    expect_bytes("padded header", buf, len + 1, &pol, PW_JWT_EMALFORMED, NULL);
    /* Four parts. */
    memcpy(buf, tok, len);
    memcpy(buf + len, ".AAAA", 5);
    expect_bytes("four parts", buf, len + 5, &pol, PW_JWT_EMALFORMED, NULL);
    /* Stray characters: standard-alphabet '+', a space, a NUL. */
    memcpy(buf, tok, len);
    buf[h + 8] = '+';
    expect_bytes("plus in payload", buf, len, &pol, PW_JWT_EMALFORMED, NULL);
    memcpy(buf, tok, len);
    buf[s + 8] = ' ';
    expect_bytes("space in signature", buf, len, &pol, PW_JWT_EMALFORMED, NULL);
    memcpy(buf, tok, len);
    buf[4] = '\0';
    expect_bytes("NUL in header", buf, len, &pol, PW_JWT_EMALFORMED, NULL);
    /* Oversized: checked before anything else, so the rest may be anything. */
    memset(buf, 'A', PW_JWT_MAX_LEN + 1);
    expect_bytes("oversized", buf, PW_JWT_MAX_LEN + 1, &pol, PW_JWT_ETOOLARGE, NULL);
    memcpy(buf, tok, len);
    memset(buf + len, 'A', PW_JWT_MAX_LEN + 1 - len);
    expect_bytes("oversized signature", buf, PW_JWT_MAX_LEN + 1, &pol, PW_JWT_ETOOLARGE, NULL);
    free(buf);
    free(tok);
}

static void test_policy_variants(void **state)
{
    pw_jwt_policy_t pol = policy(PW_JWT_VERIFY_SIGNATURE);
    size_t len;
    char *tok = read_file("valid.jwt", &len);
    char err[160];
    (void)state;

    /* No key set yet. */
    assert_int_equal(pw_jwt_verify(tok, len, NULL, &pol, NULL, err, sizeof(err)), PW_JWT_ENOKEYS);
    assert_int_equal(pw_jwt_error_class(PW_JWT_ENOKEYS), PW_EUNAVAIL);
    /* The clock: one second past exp + skew. */
    pol.now = NOW + 3600 + 60;
    expect_bytes("at exp + skew", tok, len, &pol, 0, NULL);
    pol.now = NOW + 3600 + 61;
    expect_bytes("past exp + skew", tok, len, &pol, PW_JWT_EEXPIRED, NULL);
    pol.skew_s = 0;
    pol.now = NOW + 3601;
    expect_bytes("no skew", tok, len, &pol, PW_JWT_EEXPIRED, NULL);
    pol = policy(PW_JWT_VERIFY_SIGNATURE);
    /* Issuer lists. */
    pol.issuers = "https://accounts.google.com";
    expect_file("iss_short.jwt", &pol, PW_JWT_EISSUER);
    expect_file("valid.jwt", &pol, 0);
    pol.issuers = " accounts.google.com ,https://example.com";
    expect_file("iss_short.jwt", &pol, 0);
    expect_file("valid.jwt", &pol, PW_JWT_EISSUER);
    pol.issuers = "";
    expect_file("valid.jwt", &pol, PW_JWT_EISSUER);
    pol = policy(PW_JWT_VERIFY_SIGNATURE);
    /* Without an expected email, email and email_verified are not checked. */
    pol.email = NULL;
    expect_file("email_wrong.jwt", &pol, 0);
    expect_file("email_unverified.jwt", &pol, 0);
    /* The audience as configured without the slash. */
    pol.audience = "http://localhost:8080";
    expect_file("aud_no_slash.jwt", &pol, 0);
    expect_file("valid.jwt", &pol, PW_JWT_EAUDIENCE);
    free(tok);
}

static void test_claims_mode(void **state)
{
    pw_jwt_policy_t pol = policy(PW_JWT_SIGNATURE_STRIPPED);
    pw_jwt_result_t res;
    size_t len;
    char *tok = read_file("stripped.jwt", &len);
    (void)state;

    expect_bytes("stripped", tok, len, &pol, 0, &res);
    assert_string_equal(res.email, EMAIL);
    assert_int_equal(res.exp, NOW + 3600);
    /* Keys are not needed (nor used) in claims mode. */
    assert_int_equal(pw_jwt_verify(tok, len, NULL, &pol, NULL, NULL, 0), 0);
    expect_file("stripped_aud_wrong.jwt", &pol, PW_JWT_EAUDIENCE);
    expect_file("stripped_expired.jwt", &pol, PW_JWT_EEXPIRED);
    expect_file("stripped_alg_none.jwt", &pol, PW_JWT_EBADALG);
    expect_file("stripped_lowercase.jwt", &pol, PW_JWT_ESTRIPPED);
    /* A normally signed token is not what Cloud Run IAM forwards. */
    expect_file("valid.jwt", &pol, PW_JWT_ESTRIPPED);
    expect_file("alg_none.jwt", &pol, PW_JWT_EBADALG);
    expect_bytes("stripped, no signature", tok, len - 27, &pol, PW_JWT_ESTRIPPED, NULL);
    free(tok);
}

/* RFC 7515 appendix A.2: the published RS256 example, with the published key. */
static const char a2_n[] = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4"
                           "d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5re"
                           "xMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxX"
                           "FvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
static const char a2_input[] = "eyJhbGciOiJSUzI1NiJ9"
                               ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
static const char a2_sig[] = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5"
                             "jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L"
                             "07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEU"
                             "ipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

static void test_rfc7515_a2(void **state)
{
    char json[1024], err[160] = "", compact[2048];
    unsigned char sig[512];
    size_t siglen = 0;
    pw_jwks_t a2;
    const EVP_PKEY *key;
    pw_jwt_policy_t pol = policy(PW_JWT_VERIFY_SIGNATURE);
    (void)state;

    snprintf(json, sizeof(json), "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a2\",\"n\":\"%s\",\"e\":\"AQAB\"}]}", a2_n);
    assert_int_equal(pw_jwks_parse(json, strlen(json), &a2, err, sizeof(err)), 0);
    key = pw_jwks_find(&a2, PW_STR_LIT("a2"));
    assert_non_null(key);
    assert_int_equal(EVP_PKEY_get_bits(key), 2048);
    assert_int_equal(pw_base64url_decode(a2_sig, strlen(a2_sig), sig, &siglen, NULL, 0), 0);
    assert_int_equal(siglen, 256);

    assert_int_equal(pw_jwt_rs256_verify(key, a2_input, strlen(a2_input), sig, siglen), 0);
    /* One bit off anywhere, one byte short, another input: rejected. */
    sig[17] ^= 0x01;
    assert_int_equal(pw_jwt_rs256_verify(key, a2_input, strlen(a2_input), sig, siglen), PW_JWT_EBADSIG);
    sig[17] ^= 0x01;
    assert_int_equal(pw_jwt_rs256_verify(key, a2_input, strlen(a2_input), sig, siglen - 1), PW_JWT_EBADSIG);
    assert_int_equal(pw_jwt_rs256_verify(key, a2_input, strlen(a2_input) - 1, sig, siglen), PW_JWT_EBADSIG);
    assert_int_equal(pw_jwt_rs256_verify(NULL, a2_input, strlen(a2_input), sig, siglen), PW_JWT_EBADSIG);
    /* Our fixture key does not verify it. */
    assert_int_equal(pw_jwt_rs256_verify(keys.keys[0].pkey, a2_input, strlen(a2_input), sig, siglen), PW_JWT_EBADSIG);

    /* As a whole token it has no kid, so pw_jwt_verify stops there. */
    snprintf(compact, sizeof(compact), "%s.%s", a2_input, a2_sig);
    assert_int_equal(pw_jwt_verify(compact, strlen(compact), &a2, &pol, NULL, err, sizeof(err)), PW_JWT_ENOKID);
    pw_jwks_dispose(&a2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jwks_fixture),    cmocka_unit_test(test_jwks_skips_unusable_keys),
        cmocka_unit_test(test_valid_token),     cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_http_status),     cmocka_unit_test(test_mangled_tokens),
        cmocka_unit_test(test_policy_variants), cmocka_unit_test(test_claims_mode),
        cmocka_unit_test(test_rfc7515_a2),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
