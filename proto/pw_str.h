/* Byte slices and the error convention shared by every proto module. */
#ifndef PW_STR_H
#define PW_STR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A non-owning byte slice: never assumed NUL-terminated. base == NULL means "absent". */
typedef struct {
    const char *base;
    size_t len;
} pw_str_t;

#define PW_STR_NULL ((pw_str_t){NULL, 0})
#define PW_STR_LIT(s) ((pw_str_t){(s), sizeof(s) - 1})

static inline pw_str_t pw_str(const char *s, size_t len)
{
    return (pw_str_t){s, len};
}

static inline int pw_str_present(pw_str_t s)
{
    return s.base != NULL;
}

static inline int pw_str_eq(pw_str_t s, const char *lit)
{
    size_t n = strlen(lit);
    return s.base != NULL && s.len == n && memcmp(s.base, lit, n) == 0;
}

/**
 * Quotes input in a reason: copies at most max bytes of s into out (outlen bytes, always
 * NUL-terminated when outlen > 0) as valid UTF-8 that a person can read and PostgreSQL can store.
 * Whole characters only (a sequence that does not fit in max or in out is left out entirely);
 * '"', '\\' and control characters (U+0000-U+001F, U+007F) escaped as in JSON ("\\n",
 * "\\u0000"); each byte that is not part of well-formed UTF-8 as U+FFFD. Returns out.
 */
const char *pw_str_quote(char *out, size_t outlen, pw_str_t s, size_t max);

/* Cuts a trailing incomplete UTF-8 sequence off NUL-terminated s (what a truncating snprintf
   may leave): what remains ends on a character boundary. */
void pw_str_trim_utf8(char *s);

/*
 * The project's one error convention (libuv style): a fallible function returns 0 or one of
 * these, negative. proto/ uses the first four; worker/ adds what I/O can say. Only worker/http.c
 * turns them into HTTP statuses. (proto/jwt.h details token failures in a range of its own from
 * -100, which worker/auth.c turns into these.)
 */
enum {
    PW_OK = 0,
    PW_EINVAL = -1,    /* malformed input (the err buffer says why) */
    PW_ERANGE = -2,    /* a value out of its allowed range */
    PW_ETOOBIG = -3,   /* input over a size limit */
    PW_EUNSUPP = -4,   /* well-formed but not a format we handle */
    PW_EUNAVAIL = -5,  /* not done now, may be done later: database down or busy, queue full, shutting down */
    PW_EREFUSED = -6,  /* the database refused the data itself (SQLSTATE class 22, 23 or 54): retrying alone cannot help */
    PW_ECONFLICT = -7, /* serialization failure or deadlock (class 40), still so after the retries */
    PW_ETIMEDOUT = -8, /* a lock or the statement took longer than allowed (55P03, 57014), or a push's deadline passed */
    PW_ECANCELED = -9, /* given up by its submitter (its deadline answered it) before it was sent */
    PW_EUNAUTH = -10,  /* no credentials, or credentials that do not verify */
    PW_EFORBIDDEN = -11, /* valid credentials of someone not allowed */
};

/* Writes a printf-style reason into err (when err != NULL && errlen > 0), cut on a UTF-8
   character boundary when it does not fit; returns code. */
int pw_set_err(char *err, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Out of memory is fatal (STYLE.md rule 5): aborts with file:line instead of returning NULL. */
void *pw__proto_xrealloc(void *p, size_t n, const char *file, int line);
#define PW_XMALLOC(n) pw__proto_xrealloc(NULL, (n), __FILE__, __LINE__)
#define PW_XREALLOC(p, n) pw__proto_xrealloc((p), (n), __FILE__, __LINE__)

/* A static description of a PW_E* code. */
const char *pw_strerror(int code);

#endif
