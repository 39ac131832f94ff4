/* Allocation helpers and the growable buffer used by every worker module. */
#include "worker/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void out_of_memory(size_t n, const char *file, int line)
{
    fprintf(stderr, "{\"severity\":\"CRITICAL\",\"message\":\"out of memory allocating %zu bytes at %s:%d\"}\n", n, file,
            line);
    abort();
}

void *pw__xmalloc(size_t n, const char *file, int line)
{
    void *p = malloc(n == 0 ? 1 : n);
    if (p == NULL)
        out_of_memory(n, file, line);
    return p;
}

void *pw__xcalloc(size_t n, size_t sz, const char *file, int line)
{
    void *p = calloc(n == 0 ? 1 : n, sz == 0 ? 1 : sz);
    if (p == NULL)
        out_of_memory(n * sz, file, line);
    return p;
}

void *pw__xrealloc(void *p, size_t n, const char *file, int line)
{
    void *q = realloc(p, n == 0 ? 1 : n);
    if (q == NULL)
        out_of_memory(n, file, line);
    return q;
}

char *pw__xstrndup(const char *s, size_t n, const char *file, int line)
{
    char *p = pw__xmalloc(n + 1, file, line);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void pw_buf_grow(pw_buf_t *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap < 256 ? 256 : b->cap;
    while (cap < need)
        cap *= 2;
    b->base = pw_xrealloc(b->base, cap);
    b->cap = cap;
}

void pw_buf_appendf(pw_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    pw_buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->base + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void pw_buf_dispose(pw_buf_t *b)
{
    free(b->base);
    b->base = NULL;
    b->len = b->cap = 0;
}

double pw_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

size_t pw_utf8_copy(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        /* src[n] is the first byte left out: back off while it continues the character before it. */
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
    return n;
}

int pw_take_messages(h2o_linklist_t *messages, const h2o_linklist_t *wanted)
{
    int found = 0;
    for (h2o_linklist_t *m = messages->next, *next; m != messages; m = next) {
        next = m->next;
        found |= m == wanted;
        m->next = m->prev = NULL;
    }
    h2o_linklist_init_anchor(messages);
    return found;
}
