/* Allocation that never returns NULL (out of memory is fatal) and a growable byte buffer. */
#ifndef PW_UTIL_H
#define PW_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <h2o/linklist.h>

#define pw_xmalloc(n) pw__xmalloc((n), __FILE__, __LINE__)
#define pw_xcalloc(n, sz) pw__xcalloc((n), (sz), __FILE__, __LINE__)
#define pw_xrealloc(p, n) pw__xrealloc((p), (n), __FILE__, __LINE__)
#define pw_xstrndup(s, n) pw__xstrndup((s), (n), __FILE__, __LINE__)

void *pw__xmalloc(size_t n, const char *file, int line);
void *pw__xcalloc(size_t n, size_t sz, const char *file, int line);
void *pw__xrealloc(void *p, size_t n, const char *file, int line);
char *pw__xstrndup(const char *s, size_t n, const char *file, int line);

/* A growable buffer, always NUL-terminated after its len bytes once anything was appended. */
typedef struct {
    char *base;
    size_t len;
    size_t cap;
} pw_buf_t;

/* Grows the storage (pw_buf_grow) when fewer than extra + 1 bytes are free after len. */
void pw_buf_grow(pw_buf_t *b, size_t extra);
static inline void pw_buf_reserve(pw_buf_t *b, size_t extra)
{
    if (b->len + extra + 1 > b->cap)
        pw_buf_grow(b, extra);
}
static inline void pw_buf_append(pw_buf_t *b, const void *p, size_t n)
{
    pw_buf_reserve(b, n);
    memcpy(b->base + b->len, p, n);
    b->len += n;
    b->base[b->len] = '\0';
}
static inline void pw_buf_appendc(pw_buf_t *b, char c)
{
    pw_buf_reserve(b, 1);
    b->base[b->len++] = c;
    b->base[b->len] = '\0';
}
void pw_buf_appendf(pw_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends n in decimal, as "%llu" would, for the per-push path (vfprintf costs about 1,400 instructions a call). */
static inline void pw_buf_append_u64(pw_buf_t *b, uint64_t n)
{
    char digits[20];
    size_t i = sizeof digits;
    do {
        digits[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n != 0);
    pw_buf_append(b, digits + i, sizeof digits - i);
}
static inline void pw_buf_reset(pw_buf_t *b)
{
    b->len = 0;
    if (b->base != NULL)
        b->base[0] = '\0';
}
/* Frees the storage; the buffer is then empty and reusable. Idempotent. */
void pw_buf_dispose(pw_buf_t *b);

/* 32 bits in network byte order (big-endian), as PostgreSQL's binary formats write them (worker/cols.c, worker/db.c). */
static inline void pw_put_be32(char *o, uint32_t v)
{
    o[0] = (char)(v >> 24);
    o[1] = (char)(v >> 16);
    o[2] = (char)(v >> 8);
    o[3] = (char)v;
}
static inline uint32_t pw_get_be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/**
 * Copies the NUL-terminated src into dst (cap bytes, cap > 0), cut at a whole UTF-8 character when
 * it does not fit, so a valid UTF-8 src gives a valid UTF-8 dst. Returns the bytes copied.
 */
size_t pw_utf8_copy(char *dst, size_t cap, const char *src);

/* Milliseconds from a monotonic clock, for durations only. */
double pw_now_ms(void);

/*
 * Empties a list of h2o multithread messages (a receiver's callback must take them all) in one
 * walk, leaving each message unlinked so that it can be sent again; returns 1 when `wanted` was
 * among them. (clang-analyzer cannot follow h2o_linklist_unlink in a loop: make lint.)
 */
int pw_take_messages(h2o_linklist_t *messages, const h2o_linklist_t *wanted);

#endif
