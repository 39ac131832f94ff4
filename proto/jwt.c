/* Google OIDC push tokens: JWKS parsing and RS256 JWT verification (pure: the caller passes the time). */
#include "jwt.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>

#include "base64.h"
#include "pw_json.h"


/* Decodes one strict base64url part into a new buffer (freed by the caller, also on failure). */
static int b64url_part(pw_str_t in, unsigned char **out, size_t *outlen)
{
    *out = PW_XMALLOC(pw_base64_decoded_max(in.len));
    return pw_base64url_decode(in.base, in.len, *out, outlen, NULL, 0);
}

static int slice_eq(pw_str_t a, pw_str_t b)
{
    return a.base != NULL && b.base != NULL && a.len == b.len && memcmp(a.base, b.base, a.len) == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Key sets                                                                                    */

/* Builds an RSA public key from big-endian n and e; NULL when OpenSSL refuses them. */
static EVP_PKEY *rsa_from_ne(const BIGNUM *n, const BIGNUM *e)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *kctx = NULL;
    EVP_PKEY *pkey = NULL;

    if (bld == NULL || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) || (params = OSSL_PARAM_BLD_to_param(bld)) == NULL)
        goto out;
    if ((kctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL)
        goto out;
    if (EVP_PKEY_fromdata_init(kctx) <= 0 || EVP_PKEY_fromdata(kctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
out:
    EVP_PKEY_CTX_free(kctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    ERR_clear_error();
    return pkey;
}

/* Reads one JWKS entry; 0 and *pkey on success, else -1 with the reason in why. */
static int parse_jwk(json_object *k, const pw_jwks_t *sofar, char **kid_out, EVP_PKEY **pkey, char *why, size_t whylen)
{
    json_object *v;
    pw_str_t kty, kid, n_b64, e_b64;
    unsigned char *nbuf = NULL, *ebuf = NULL;
    size_t nlen = 0, elen = 0;
    BIGNUM *n = NULL, *e = NULL;
    int rc = -1;

    *pkey = NULL;
    *kid_out = NULL;
    if (!json_object_is_type(k, json_type_object)) {
        snprintf(why, whylen, "not an object");
        return -1;
    }
    kty = pw_json_str(pw_json_member(k, "kty"));
    if (!pw_str_eq(kty, "RSA")) {
        snprintf(why, whylen, "kty is not \"RSA\"");
        return -1;
    }
    if ((v = pw_json_member(k, "alg")) != NULL && !pw_str_eq(pw_json_str(v), "RS256")) {
        snprintf(why, whylen, "alg is not \"RS256\"");
        return -1;
    }
    if ((v = pw_json_member(k, "use")) != NULL && !pw_str_eq(pw_json_str(v), "sig")) {
        snprintf(why, whylen, "use is not \"sig\"");
        return -1;
    }
    kid = pw_json_str(pw_json_member(k, "kid"));
    if (kid.base == NULL || kid.len == 0 || strlen(kid.base) != kid.len) {
        snprintf(why, whylen, "no usable kid");
        return -1;
    }
    if (pw_jwks_find(sofar, kid) != NULL) {
        snprintf(why, whylen, "duplicate kid");
        return -1;
    }
    n_b64 = pw_json_str(pw_json_member(k, "n"));
    e_b64 = pw_json_str(pw_json_member(k, "e"));
    if (n_b64.base == NULL || e_b64.base == NULL) {
        snprintf(why, whylen, "n or e missing");
        return -1;
    }
    if (n_b64.len > 2 * PW_JWKS_MAX_BITS / 8 || e_b64.len > 16) {
        snprintf(why, whylen, "n or e too long");
        return -1;
    }
    if (b64url_part(n_b64, &nbuf, &nlen) != 0 || b64url_part(e_b64, &ebuf, &elen) != 0) {
        snprintf(why, whylen, "n or e is not strict base64url");
        goto out;
    }
    n = BN_bin2bn(nbuf, (int)nlen, NULL);
    e = BN_bin2bn(ebuf, (int)elen, NULL);
    if (n == NULL || e == NULL) {
        fprintf(stderr, "%s:%d: out of memory\n", __FILE__, __LINE__);
        abort();
    }
    /* e = 1 would make every "signature" valid; even exponents are not RSA. */
    if (BN_num_bits(e) > 32 || !BN_is_odd(e) || BN_is_one(e)) {
        snprintf(why, whylen, "unusable exponent");
        goto out;
    }
    if (BN_num_bits(n) < PW_JWKS_MIN_BITS || BN_num_bits(n) > PW_JWKS_MAX_BITS) {
        snprintf(why, whylen, "modulus of %d bits (need %d..%d)", BN_num_bits(n), PW_JWKS_MIN_BITS, PW_JWKS_MAX_BITS);
        goto out;
    }
    if ((*pkey = rsa_from_ne(n, e)) == NULL || EVP_PKEY_get_bits(*pkey) < PW_JWKS_MIN_BITS) {
        EVP_PKEY_free(*pkey);
        *pkey = NULL;
        snprintf(why, whylen, "OpenSSL refused the key");
        goto out;
    }
    *kid_out = strdup(kid.base);
    if (*kid_out == NULL) {
        fprintf(stderr, "%s:%d: out of memory\n", __FILE__, __LINE__);
        abort();
    }
    rc = 0;
out:
    BN_free(n);
    BN_free(e);
    free(nbuf);
    free(ebuf);
    return rc;
}

int pw_jwks_parse(const char *json, size_t len, pw_jwks_t *out, char *err, size_t errlen)
{
    json_object *root = NULL, *arr;
    size_t total;
    int rc = 0;
    char jerr[128];

    memset(out, 0, sizeof(*out));
    if (pw_json_parse_strict(json, len, &root, jerr, sizeof(jerr)) != 0)
        return pw_set_err(err, errlen, PW_EINVAL, "JWKS: %s", jerr);
    arr = pw_json_member(root, "keys");
    if (!json_object_is_type(arr, json_type_array)) {
        rc = pw_set_err(err, errlen, PW_EINVAL, "JWKS: no \"keys\" array");
        goto out;
    }
    total = json_object_array_length(arr);
    out->keys = PW_XMALLOC(sizeof(*out->keys) * (total < PW_JWKS_MAX_KEYS ? total : PW_JWKS_MAX_KEYS));
    for (size_t i = 0; i < total; i++) {
        char why[96] = "";
        char *kid;
        EVP_PKEY *pkey;
        if (out->count == PW_JWKS_MAX_KEYS)
            snprintf(why, sizeof(why), "over %d keys", PW_JWKS_MAX_KEYS);
        else if (parse_jwk(json_object_array_get_idx(arr, i), out, &kid, &pkey, why, sizeof(why)) == 0) {
            out->keys[out->count].kid = kid;
            out->keys[out->count].pkey = pkey;
            out->count++;
            continue;
        }
        if (out->skipped++ == 0)
            snprintf(out->skip_reason, sizeof(out->skip_reason), "keys[%zu]: %s", i, why);
    }
    if (out->count == 0) {
        if (out->skipped == 0)
            rc = pw_set_err(err, errlen, PW_EINVAL, "JWKS: \"keys\" is empty");
        else
            rc = pw_set_err(err, errlen, PW_EINVAL, "JWKS: no usable key among %zu (%s)", out->skipped, out->skip_reason);
        pw_jwks_dispose(out);
    }
out:
    json_object_put(root);
    return rc;
}

void pw_jwks_dispose(pw_jwks_t *jwks)
{
    for (size_t i = 0; i < jwks->count; i++) {
        free(jwks->keys[i].kid);
        EVP_PKEY_free(jwks->keys[i].pkey);
    }
    free(jwks->keys);
    memset(jwks, 0, sizeof(*jwks));
}

const EVP_PKEY *pw_jwks_find(const pw_jwks_t *jwks, pw_str_t kid)
{
    if (jwks == NULL || kid.base == NULL)
        return NULL;
    for (size_t i = 0; i < jwks->count; i++)
        if (slice_eq(pw_str(jwks->keys[i].kid, strlen(jwks->keys[i].kid)), kid))
            return jwks->keys[i].pkey;
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Tokens                                                                                      */

int pw_jwt_rs256_verify(const EVP_PKEY *key, const char *signing_input, size_t len, const unsigned char *sig, size_t siglen)
{
    /* EVP_DigestVerifyInit_ex takes a non-const key but only reads it (and takes a reference). */
    EVP_PKEY *pkey = (EVP_PKEY *)key;
    EVP_MD_CTX *md;
    int ok = 0;

    if (pkey == NULL || !EVP_PKEY_is_a(pkey, "RSA") || EVP_PKEY_get_size(pkey) <= 0 || siglen != (size_t)EVP_PKEY_get_size(pkey))
        return PW_JWT_EBADSIG;
    if ((md = EVP_MD_CTX_new()) == NULL) {
        fprintf(stderr, "%s:%d: out of memory\n", __FILE__, __LINE__);
        abort();
    }
    /* Only 1 is a valid signature: 0 is a bad one and negative values are errors. */
    ok = EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, NULL, pkey, NULL) == 1 &&
         EVP_DigestVerify(md, sig, siglen, (const unsigned char *)signing_input, len) == 1;
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return ok ? 0 : PW_JWT_EBADSIG;
}

/* Reads a NumericDate: 1 with *out when v is a JSON number, else 0. Fractions are truncated. */
static int numeric_date(json_object *v, int64_t *out)
{
    if (json_object_is_type(v, json_type_int)) {
        *out = json_object_get_int64(v); /* saturates at INT64_MAX for huge values */
        return 1;
    }
    if (json_object_is_type(v, json_type_double)) {
        double d = json_object_get_double(v);
        if (!isfinite(d) || d > 9.0e18 || d < -9.0e18)
            return 0;
        *out = (int64_t)d;
        return 1;
    }
    return 0;
}

/* 1 when iss equals one of the comma-separated items of list (spaces around items ignored). */
static int issuer_listed(pw_str_t iss, const char *list)
{
    const char *p = list;
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        const char *b = p, *e = end != NULL ? end : p + strlen(p);
        while (b < e && *b == ' ')
            b++;
        while (e > b && e[-1] == ' ')
            e--;
        if (e > b && slice_eq(iss, pw_str(b, (size_t)(e - b))))
            return 1;
        if (end == NULL)
            break;
        p = end + 1;
    }
    return 0;
}

/* Copies a kid into res when it is short and plain enough to log. */
static void keep_kid(pw_str_t kid, char *dst, size_t cap)
{
    dst[0] = '\0';
    if (kid.len == 0 || kid.len >= cap)
        return;
    for (size_t i = 0; i < kid.len; i++) {
        char c = kid.base[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
            return;
    }
    memcpy(dst, kid.base, kid.len);
    dst[kid.len] = '\0';
}

int pw_jwt_expired(int64_t exp, int64_t now, int64_t skew_s)
{
    int64_t last;
    /* exp comes from the token and may be anything (INT64_MAX): the sum saturates instead of overflowing. */
    if (__builtin_add_overflow(exp, skew_s, &last))
        return skew_s < 0; /* past INT64_MAX: never expired; below INT64_MIN: always */
    return now > last;
}

/* Checks the claims object; fills res. */
static int check_claims(json_object *claims, const pw_jwt_policy_t *pol, pw_jwt_result_t *res, char *err, size_t errlen)
{
    json_object *v;
    int64_t exp, iat, nbf;
    pw_str_t s;

    if ((v = pw_json_member(claims, "exp")) == NULL)
        return pw_set_err(err, errlen, PW_JWT_ECLAIM, "token has no exp claim");
    if (!numeric_date(v, &exp))
        return pw_set_err(err, errlen, PW_JWT_ECLAIM, "exp claim is not a number");
    if ((v = pw_json_member(claims, "iat")) == NULL)
        return pw_set_err(err, errlen, PW_JWT_ECLAIM, "token has no iat claim");
    if (!numeric_date(v, &iat))
        return pw_set_err(err, errlen, PW_JWT_ECLAIM, "iat claim is not a number");
    res->exp = exp;
    res->iat = iat;

    s = pw_json_str(pw_json_member(claims, "email"));
    if (s.base != NULL && s.len <= PW_JWT_EMAIL_MAX && strlen(s.base) == s.len)
        memcpy(res->email, s.base, s.len + 1);
    res->email_verified = json_object_is_type(pw_json_member(claims, "email_verified"), json_type_boolean) &&
                          json_object_get_boolean(pw_json_member(claims, "email_verified"));

    /* Written so that no sum can overflow: exp and iat come from the token, now and skew do not. */
    if (pw_jwt_expired(exp, pol->now, pol->skew_s)) {
        int64_t ago;
        if (__builtin_sub_overflow(pol->now, exp, &ago))
            ago = INT64_MAX; /* an exp far in the past (down to INT64_MIN): say so, without overflowing */
        return pw_set_err(err, errlen, PW_JWT_EEXPIRED, "token expired %lld s ago (skew %lld s)", (long long)ago,
                          (long long)pol->skew_s);
    }
    if (iat > pol->now + pol->skew_s)
        return pw_set_err(err, errlen, PW_JWT_EFUTURE, "token issued %lld s in the future (skew %lld s)",
                          (long long)(iat - pol->now), (long long)pol->skew_s);
    if ((v = pw_json_member(claims, "nbf")) != NULL) {
        if (!numeric_date(v, &nbf))
            return pw_set_err(err, errlen, PW_JWT_ECLAIM, "nbf claim is not a number");
        if (nbf > pol->now + pol->skew_s)
            return pw_set_err(err, errlen, PW_JWT_ENOTYET, "token not valid for another %lld s (skew %lld s)",
                              (long long)(nbf - pol->now), (long long)pol->skew_s);
    }

    s = pw_json_str(pw_json_member(claims, "iss"));
    if (s.base == NULL)
        return pw_set_err(err, errlen, PW_JWT_EISSUER, "iss claim missing or not a string");
    if (!issuer_listed(s, pol->issuers != NULL ? pol->issuers : PW_JWT_GOOGLE_ISSUERS))
        return pw_set_err(err, errlen, PW_JWT_EISSUER, "issuer not accepted");

    v = pw_json_member(claims, "aud");
    if (v == NULL)
        return pw_set_err(err, errlen, PW_JWT_EAUDIENCE, "aud claim missing");
    s = pw_json_str(v);
    if (s.base == NULL) /* Google sends one string; an array is someone else's token format */
        return pw_set_err(err, errlen, PW_JWT_EAUDIENCE, "aud claim is not a string");
    if (!slice_eq(s, pw_str(pol->audience, strlen(pol->audience))))
        return pw_set_err(err, errlen, PW_JWT_EAUDIENCE, "audience does not match");

    if (pol->email != NULL) {
        s = pw_json_str(pw_json_member(claims, "email"));
        if (s.base == NULL)
            return pw_set_err(err, errlen, PW_JWT_EEMAIL, "email claim missing");
        if (!slice_eq(s, pw_str(pol->email, strlen(pol->email))))
            return pw_set_err(err, errlen, PW_JWT_EEMAIL, "token of another service account");
        if (!res->email_verified)
            return pw_set_err(err, errlen, PW_JWT_EUNVERIFIED, "email_verified is not true");
    }
    return 0;
}

int pw_jwt_verify(const char *token, size_t len, const pw_jwks_t *keys, const pw_jwt_policy_t *pol, pw_jwt_result_t *res, char *err,
                  size_t errlen)
{
    pw_jwt_result_t scratch;
    size_t max_len = pol->max_len != 0 ? pol->max_len : PW_JWT_MAX_LEN;
    const char *dot1, *dot2;
    pw_str_t h64, p64, s64, alg, kid;
    unsigned char *hbuf = NULL, *pbuf = NULL, *sbuf = NULL;
    size_t hlen = 0, plen = 0, slen = 0;
    json_object *header = NULL, *claims = NULL;
    int rc;

    assert(pol->audience != NULL);
    if (res == NULL)
        res = &scratch;
    memset(res, 0, sizeof(*res));

    if (len > max_len)
        return pw_set_err(err, errlen, PW_JWT_ETOOLARGE, "token of %zu bytes is over the limit of %zu", len, max_len);
    /* Exactly three parts: two dots, none of them empty (the signature part is checked below). */
    dot1 = memchr(token, '.', len);
    dot2 = dot1 != NULL ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL)
        return pw_set_err(err, errlen, PW_JWT_EMALFORMED, "token is not three dot-separated parts");
    h64 = pw_str(token, (size_t)(dot1 - token));
    p64 = pw_str(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    s64 = pw_str(dot2 + 1, len - (size_t)(dot2 + 1 - token));
    if (h64.len == 0 || p64.len == 0)
        return pw_set_err(err, errlen, PW_JWT_EMALFORMED, "token has an empty part");

    /* The header: only RS256, whatever else it says. */
    if (b64url_part(h64, &hbuf, &hlen) != 0) {
        rc = pw_set_err(err, errlen, PW_JWT_EMALFORMED, "header is not strict base64url");
        goto out;
    }
    if (pw_json_parse_strict((const char *)hbuf, hlen, &header, NULL, 0) != 0 || !json_object_is_type(header, json_type_object)) {
        rc = pw_set_err(err, errlen, PW_JWT_EMALFORMED, "header is not a JSON object");
        goto out;
    }
    alg = pw_json_str(pw_json_member(header, "alg"));
    if (!pw_str_eq(alg, "RS256")) {
        rc = pw_set_err(err, errlen, PW_JWT_EBADALG, "alg is not RS256");
        goto out;
    }
    if (json_object_object_get_ex(header, "crit", NULL)) {
        rc = pw_set_err(err, errlen, PW_JWT_EMALFORMED, "header has crit extensions");
        goto out;
    }
    kid = pw_json_str(pw_json_member(header, "kid"));
    if (kid.base == NULL || kid.len == 0) {
        rc = pw_set_err(err, errlen, PW_JWT_ENOKID, "header has no kid");
        goto out;
    }
    keep_kid(kid, res->kid, sizeof(res->kid));

    if (b64url_part(p64, &pbuf, &plen) != 0) {
        rc = pw_set_err(err, errlen, PW_JWT_EMALFORMED, "payload is not strict base64url");
        goto out;
    }

    /* The signature over the received bytes "header.payload", before any claim is looked at. */
    if (pol->mode == PW_JWT_SIGNATURE_STRIPPED) {
        if (!pw_str_eq(s64, PW_JWT_STRIPPED_SIGNATURE)) {
            rc = pw_set_err(err, errlen, PW_JWT_ESTRIPPED, "signature is not " PW_JWT_STRIPPED_SIGNATURE);
            goto out;
        }
    } else {
        const EVP_PKEY *key;
        if (s64.len == 0) {
            rc = pw_set_err(err, errlen, PW_JWT_EMALFORMED, "token has an empty part");
            goto out;
        }
        if (b64url_part(s64, &sbuf, &slen) != 0) {
            rc = pw_set_err(err, errlen, PW_JWT_EMALFORMED, "signature is not strict base64url");
            goto out;
        }
        if (keys == NULL) {
            rc = pw_set_err(err, errlen, PW_JWT_ENOKEYS, "no signing keys yet");
            goto out;
        }
        if ((key = pw_jwks_find(keys, kid)) == NULL) {
            rc = pw_set_err(err, errlen, PW_JWT_EUNKNOWNKID, "no key with this kid");
            goto out;
        }
        if (pw_jwt_rs256_verify(key, token, (size_t)(dot2 - token), sbuf, slen) != 0) {
            rc = pw_set_err(err, errlen, PW_JWT_EBADSIG, "bad signature");
            goto out;
        }
    }

    if (pw_json_parse_strict((const char *)pbuf, plen, &claims, NULL, 0) != 0 || !json_object_is_type(claims, json_type_object)) {
        rc = pw_set_err(err, errlen, PW_JWT_EMALFORMED, "claims are not a JSON object");
        goto out;
    }
    rc = check_claims(claims, pol, res, err, errlen);
out:
    json_object_put(claims);
    json_object_put(header);
    free(sbuf);
    free(pbuf);
    free(hbuf);
    return rc;
}

int pw_jwt_error_class(int rc)
{
    switch (rc) {
    case 0:
        return 0;
    case PW_JWT_EEMAIL:
        return PW_EFORBIDDEN;
    case PW_JWT_EUNKNOWNKID:
    case PW_JWT_ENOKEYS:
        return PW_EUNAVAIL;
    default:
        return PW_EUNAUTH;
    }
}

int pw_jwt_is_unknown_kid(int rc)
{
    return rc == PW_JWT_EUNKNOWNKID;
}

const char *pw_jwt_reason(int rc)
{
    switch (rc) {
    case 0:
        return "ok";
    case PW_JWT_EMALFORMED:
        return "malformed";
    case PW_JWT_ETOOLARGE:
        return "too_large";
    case PW_JWT_EBADALG:
        return "bad_alg";
    case PW_JWT_ENOKID:
        return "no_kid";
    case PW_JWT_EUNKNOWNKID:
        return "unknown_kid";
    case PW_JWT_ENOKEYS:
        return "no_keys";
    case PW_JWT_EBADSIG:
        return "bad_signature";
    case PW_JWT_ESTRIPPED:
        return "not_stripped";
    case PW_JWT_ECLAIM:
        return "bad_claim";
    case PW_JWT_EEXPIRED:
        return "expired";
    case PW_JWT_EFUTURE:
        return "issued_in_future";
    case PW_JWT_ENOTYET:
        return "not_yet_valid";
    case PW_JWT_EISSUER:
        return "bad_issuer";
    case PW_JWT_EAUDIENCE:
        return "bad_audience";
    case PW_JWT_EEMAIL:
        return "wrong_email";
    case PW_JWT_EUNVERIFIED:
        return "email_unverified";
    default:
        return "unknown";
    }
}
