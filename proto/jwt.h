/* Google OIDC push tokens: JWKS parsing and RS256 JWT verification (pure: the caller passes the time). */
#ifndef PW_JWT_H
#define PW_JWT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "pw_str.h"

#define PW_JWT_MAX_LEN 8192      /* bytes of a whole token; Google's are about 1 KiB */
#define PW_JWT_DEFAULT_SKEW_S 60 /* seconds of clock skew allowed on exp, iat and nbf */
#define PW_JWKS_MIN_BITS 2048    /* smaller RSA keys are skipped */
#define PW_JWKS_MAX_BITS 8192    /* larger ones too (verify cost) */
#define PW_JWKS_MAX_KEYS 64      /* keys beyond this are skipped; Google publishes 2-3 */
#define PW_JWT_EMAIL_MAX 254     /* longest email copied into the result */
/* What Cloud Run puts in place of the signature when IAM already checked the token. */
#define PW_JWT_STRIPPED_SIGNATURE "SIGNATURE_REMOVED_BY_GOOGLE"
/* Both spellings Google uses, in the comma-separated form pw_jwt_policy_t.issuers takes. */
#define PW_JWT_GOOGLE_ISSUERS "https://accounts.google.com,accounts.google.com"

/* Why a token was rejected. A range of their own below the PW_E* codes; pw_jwt_error_class() maps them to those. */
enum {
    PW_JWT_EMALFORMED = -100, /* not 3 strict base64url parts, or header/claims not a JSON object */
    PW_JWT_ETOOLARGE,         /* longer than policy max_len */
    PW_JWT_EBADALG,           /* header alg is not exactly "RS256" (none, HS256, ES256, PS256...) */
    PW_JWT_ENOKID,            /* header has no string kid */
    PW_JWT_EUNKNOWNKID,       /* no key with that kid in the set (the set may be stale): 503 */
    PW_JWT_ENOKEYS,           /* signature mode without a key set (not fetched yet): 503 */
    PW_JWT_EBADSIG,           /* RS256 signature invalid, or of the wrong length */
    PW_JWT_ESTRIPPED,         /* claims mode: the signature is not the literal SIGNATURE_REMOVED_BY_GOOGLE */
    PW_JWT_ECLAIM,            /* exp or iat missing, or exp/iat/nbf not a number */
    PW_JWT_EEXPIRED,          /* now > exp + skew */
    PW_JWT_EFUTURE,           /* iat > now + skew (issued in the future) */
    PW_JWT_ENOTYET,           /* nbf > now + skew */
    PW_JWT_EISSUER,           /* iss missing, not a string, or not in the list */
    PW_JWT_EAUDIENCE,         /* aud missing, not a string (arrays too), or not exactly the audience */
    PW_JWT_EEMAIL,            /* email missing or another service account: 403 */
    PW_JWT_EUNVERIFIED,       /* email_verified is not JSON true */
};

/* One usable signing key. */
typedef struct {
    char *kid;      /* owned, NUL-terminated */
    EVP_PKEY *pkey; /* owned RSA public key, >= PW_JWKS_MIN_BITS */
} pw_jwk_t;

/* A parsed key set. Immutable after pw_jwks_parse, so any number of threads may read it. */
typedef struct {
    pw_jwk_t *keys;
    size_t count;
    size_t skipped;        /* entries of "keys" that were not usable */
    char skip_reason[128]; /* why the first skipped one was skipped ("" when none) */
} pw_jwks_t;

/**
 * Parses a JWKS document {"keys":[{"kid","kty","alg","use","n","e"},...]} (strict JSON). Keeps
 * entries with kty "RSA", alg "RS256" or absent, use "sig" or absent, a non-empty string kid not
 * seen before, strict base64url n and e, odd e >= 3, and PW_JWKS_MIN_BITS..PW_JWKS_MAX_BITS bits.
 * Others are skipped and counted. On success out must be released with pw_jwks_dispose; on
 * failure (not JSON, no "keys" array, zero usable keys: PW_EINVAL) out is empty and err says why.
 */
int pw_jwks_parse(const char *json, size_t len, pw_jwks_t *out, char *err, size_t errlen);

/* Frees the keys; idempotent, and safe on a zeroed struct. */
void pw_jwks_dispose(pw_jwks_t *jwks);

/* The key with this kid (exact bytes), borrowed from jwks; NULL when there is none. */
const EVP_PKEY *pw_jwks_find(const pw_jwks_t *jwks, pw_str_t kid);

typedef enum {
    PW_JWT_VERIFY_SIGNATURE = 0, /* full check: RS256 signature with a key from the set */
    PW_JWT_SIGNATURE_STRIPPED,   /* Cloud Run IAM checked it: the signature must be the literal */
} pw_jwt_mode_t;

/* What a token must satisfy. All strings are borrowed for the call only. */
typedef struct {
    const char *audience; /* required; compared exactly (case-sensitive, no slash folding) */
    const char *issuers;  /* comma-separated, each compared exactly; NULL = PW_JWT_GOOGLE_ISSUERS */
    const char *email;    /* the push service account; NULL = email and email_verified not checked */
    int64_t skew_s;       /* PW_JWT_DEFAULT_SKEW_S */
    int64_t now;          /* Unix seconds, read by the caller */
    pw_jwt_mode_t mode;
    size_t max_len; /* 0 = PW_JWT_MAX_LEN */
} pw_jwt_policy_t;

typedef struct {
    int64_t exp; /* Unix seconds; a cache of verified tokens may keep them until then */
    int64_t iat;
    int email_verified;               /* 1 when the claim is JSON true */
    char email[PW_JWT_EMAIL_MAX + 1]; /* "" when absent, not a string or too long */
    char kid[65];                     /* header kid when plain ([A-Za-z0-9._-], <= 64), else "";
                                         set even on failure (log it for PW_JWT_EUNKNOWNKID) */
} pw_jwt_result_t;

/**
 * Verifies a compact JWT (the bytes after "Bearer "; need not be NUL-terminated). Checks, in this
 * order: length; exactly three non-empty strict base64url parts; header JSON object with alg exactly
 * "RS256" and a string kid (the header never picks the algorithm or the key type); then in
 * PW_JWT_VERIFY_SIGNATURE mode a key by kid (keys == NULL: PW_JWT_ENOKEYS) and the RS256 signature
 * over the received "header.payload" bytes, or in PW_JWT_SIGNATURE_STRIPPED mode (keys ignored)
 * the literal PW_JWT_STRIPPED_SIGNATURE; then the claims object: exp, iat, nbf, iss, aud, email,
 * email_verified (claims are parsed only after the signature check). Returns 0 and fills res (may
 * be NULL), or one PW_JWT_E* code with a reason in err that never contains token bytes; res then
 * holds what was read before the failure. Thread-safe; keys is only read.
 */
int pw_jwt_verify(const char *token, size_t len, const pw_jwks_t *keys, const pw_jwt_policy_t *pol, pw_jwt_result_t *res, char *err,
                  size_t errlen);

/**
 * The raw RS256 check (RSASSA-PKCS1-v1_5 with SHA-256): 0 when sig is valid for signing_input
 * under key, else PW_JWT_EBADSIG (also when siglen != the key size). Clears OpenSSL's error queue.
 */
int pw_jwt_rs256_verify(const EVP_PKEY *key, const char *signing_input, size_t len, const unsigned char *sig, size_t siglen);

/**
 * The project's error code (proto/pw_str.h) for a pw_jwt_verify result: 0 -> 0; PW_JWT_EEMAIL ->
 * PW_EFORBIDDEN (a valid token of another service account); PW_JWT_EUNKNOWNKID, PW_JWT_ENOKEYS ->
 * PW_EUNAVAIL (our key set is stale or not there yet: try later); everything else -> PW_EUNAUTH.
 */
int pw_jwt_error_class(int rc);

/**
 * 1 when a token with this exp has expired at now, allowing skew_s: now > exp + skew_s, computed
 * without overflow for any values (exp comes from the token). The claim check and any cache of
 * verified tokens use this one predicate, so they cannot disagree.
 */
int pw_jwt_expired(int64_t exp, int64_t now, int64_t skew_s);

/* 1 when rc means "this kid is not in our key set": the caller should ask for a (rate-limited) refetch. */
int pw_jwt_is_unknown_kid(int rc);

/* A short stable name for a code ("expired", "bad_audience"), for logs and metric labels. */
const char *pw_jwt_reason(int rc);

#endif
