/* Small helpers every integration test wants: allocation that cannot fail, the clock, files, ports, the repository's paths. */
#ifndef PWT_UTIL_H
#define PWT_UTIL_H

#include <stddef.h>

/* ---- memory (out of memory aborts: no caller checks) ---------------------------------------------- */

void *pwt_xmalloc(size_t n);
void *pwt_xrealloc(void *p, size_t n);
char *pwt_xstrdup(const char *s);
/* vasprintf that aborts on failure; the result is malloc'd. */
char *pwt_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- time -------------------------------------------------------------------------------------- */

/* CLOCK_MONOTONIC in milliseconds. */
long long pwt_now_ms(void);
/* Sleeps ms milliseconds, resuming after a signal. */
void pwt_sleep_ms(long ms);

/* ---- text and files ---------------------------------------------------------------------------- */

/* The whole file, malloc'd and NUL-terminated, its length in *len (may be NULL); NULL when it cannot be opened. */
char *pwt_read_file(const char *path, size_t *len);
/* pwt_read_file without the length. */
char *pwt_read_text(const char *path);
/* Writes text (creating or truncating path); 0 or -1. */
int pwt_write_text(const char *path, const char *text);
/* Copies a text file; 0 or -1. */
int pwt_copy_file(const char *from, const char *to);
/* Prints the last max_lines lines of path to stderr, between "---- title (path) ----" lines. */
void pwt_print_file_tail(const char *title, const char *path, int max_lines);
/* Number of non-overlapping occurrences of needle in hay. */
int pwt_count_substr(const char *hay, const char *needle);
/* Lower-case hex of n bytes, malloc'd. */
char *pwt_hex(const void *p, size_t n);

/* Fails the test at the caller's line unless haystack contains needle (both printed). */
#define pwt_assert_contains(haystack, needle) pwt__assert_contains(__FILE__, __LINE__, (haystack), (needle))
void pwt__assert_contains(const char *file, int line, const char *haystack, const char *needle);

/* ---- ports and paths --------------------------------------------------------------------------- */

/* A loopback TCP port nothing listens on right now (the kernel's pick for an ephemeral bind); -1 on error. */
int pwt_free_port(void);

/* The repository's root (PW_FIXTURES is <root>/tests/fixtures), resolved; NULL (printed) when not found. Borrowed. */
const char *pwt_repo_root(void);

/* <repo root>/rel, e.g. "scripts/dev-db", malloc'd; NULL (printed) when the root is not found. */
char *pwt_repo_path(const char *rel);

/* mkdtemp of "/tmp/<prefix>-XXXXXX" into out (size outlen), then chmod 0755 (a cluster run as `postgres` must reach it). 0, or -1
 * printed (out is then ""). */
int pwt_make_work_dir(const char *prefix, char *out, size_t outlen);

/* ---- registries ------------------------------------------------------------------------------------ */

/* A fixed table of live objects (NULL: a free slot): on, p into the first free slot of slots[0..n) (dropped when none is free);
 * else every slot holding p emptied. For the harness's lists of what to stop at exit. */
void pwt_slots_track(void **slots, size_t n, void *p, int on);

/* Installs handler for the signals that end a test binary abnormally (SIGINT, SIGTERM, SIGHUP, SIGSEGV, SIGABRT, SIGBUS, SIGFPE). */
void pwt_on_fatal_signals(void (*handler)(int));

#endif
