/* Small helpers every integration test wants: allocation that cannot fail, the clock, files, ports, the repository's paths. */
#include "tests/integration/util.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/integration/harness.h"

static void out_of_memory(void)
{
    fprintf(stderr, "test: out of memory\n");
    abort();
}

void *pwt_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        out_of_memory();
    return p;
}

void *pwt_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        out_of_memory();
    return q;
}

char *pwt_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(pwt_xmalloc(n), s, n);
}

char *pwt_xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        out_of_memory();
    return s;
}

long long pwt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void pwt_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

char *pwt_read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 65536, len = 0, n;
    char *p = pwt_xmalloc(cap);
    while ((n = fread(p + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2048)
            p = pwt_xrealloc(p, cap *= 2);
    }
    fclose(f);
    p[len] = '\0';
    if (len_out != NULL)
        *len_out = len;
    return p;
}

char *pwt_read_text(const char *path)
{
    return pwt_read_file(path, NULL);
}

int pwt_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    int ok = fputs(text, f) >= 0;
    ok &= fclose(f) == 0;
    return ok ? 0 : -1;
}

int pwt_copy_file(const char *from, const char *to)
{
    char *text = pwt_read_text(from);
    if (text == NULL)
        return -1;
    int rc = pwt_write_text(to, text);
    free(text);
    return rc;
}

void pwt_print_file_tail(const char *title, const char *path, int max_lines)
{
    char *text = pwt_read_text(path);
    fprintf(stderr, "---- %s (%s), last %d lines ----\n", title, path, max_lines);
    if (text == NULL) {
        fprintf(stderr, "(unreadable: %s)\n", strerror(errno));
        return;
    }
    size_t len = strlen(text), start = len;
    int lines = 0;
    while (start > 0) {
        if (text[start - 1] == '\n' && start != len && ++lines >= max_lines)
            break;
        start--;
    }
    fprintf(stderr, "%s%s", text + start, len > 0 && text[len - 1] != '\n' ? "\n" : "");
    fprintf(stderr, "---- end of %s ----\n", title);
    free(text);
}

int pwt_count_substr(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; p != NULL && (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

char *pwt_hex(const void *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *u = p;
    char *out = pwt_xmalloc(2 * n + 1);
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[u[i] >> 4];
        out[2 * i + 1] = digits[u[i] & 15];
    }
    out[2 * n] = '\0';
    return out;
}

void pwt__assert_contains(const char *file, int line, const char *haystack, const char *needle)
{
    if (strstr(haystack, needle) == NULL)
        pwt_fail(file, line, "expected the output to contain\n%s\noutput:\n%s", needle, haystack);
}

int pwt_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = 0};
    socklen_t salen = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && getsockname(fd, (struct sockaddr *)&sa, &salen) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

const char *pwt_repo_root(void)
{
    static char root[PATH_MAX];
    if (root[0] != '\0')
        return root;
    const char *fx = getenv("PW_FIXTURES");
    char guess[PATH_MAX];
    snprintf(guess, sizeof guess, "%s/../..", fx != NULL && *fx != '\0' ? fx : "tests/fixtures");
    if (realpath(guess, root) == NULL) {
        fprintf(stderr, "test: cannot find the repository from PW_FIXTURES=%s\n", fx ? fx : "(unset)");
        root[0] = '\0';
        return NULL;
    }
    return root;
}

char *pwt_repo_path(const char *rel)
{
    const char *root = pwt_repo_root();
    return root != NULL ? pwt_xasprintf("%s/%s", root, rel) : NULL;
}

int pwt_make_work_dir(const char *prefix, char *out, size_t outlen)
{
    snprintf(out, outlen, "/tmp/%s-XXXXXX", prefix);
    if (mkdtemp(out) == NULL || chmod(out, 0755) != 0) {
        fprintf(stderr, "test: mkdtemp/chmod %s: %s\n", out, strerror(errno));
        out[0] = '\0';
        return -1;
    }
    return 0;
}

void pwt_slots_track(void **slots, size_t n, void *p, int on)
{
    for (size_t i = 0; i < n; i++) {
        if (on && slots[i] == NULL) {
            slots[i] = p;
            return;
        }
        if (!on && slots[i] == p)
            slots[i] = NULL;
    }
}

void pwt_on_fatal_signals(void (*handler)(int))
{
    static const int fatal[] = {SIGINT, SIGTERM, SIGHUP, SIGSEGV, SIGABRT, SIGBUS, SIGFPE};
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
        signal(fatal[i], handler);
}
