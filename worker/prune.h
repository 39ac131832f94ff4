/* `worker prune`: old receipts, redriven dead letters and (when asked) old status events, removed in small batches; the roll-ups' pending rows folded. */
#ifndef PW_PRUNE_H
#define PW_PRUNE_H

#include <stddef.h>

/* The default ages: 31 days (Pub/Sub's longest retention, a topic's) plus a margin; 30 days after a redrive. */
#define PW_PRUNE_RECEIPTS_DEFAULT "35d"
#define PW_PRUNE_DEAD_LETTERS_DEFAULT "30d"
#define PW_PRUNE_BATCH_DEFAULT 5000
#define PW_PRUNE_BATCH_DEFAULT_TEXT "5000" /* the same, for --help */
/* A pause between batches halves prune's rows/s and most of its cost to pushes meanwhile (BENCHMARKS.md). */
#define PW_PRUNE_PAUSE_MS_DEFAULT 25
#define PW_PRUNE_PAUSE_MS_DEFAULT_TEXT "25"

typedef struct {
    long long receipts_s;      /* pubsub_receipts received more than this many seconds ago go; -1: none */
    long long dead_letters_s;  /* dead letters redriven more than this many seconds ago go; -1: none */
    long long status_events_s; /* status_events received more than this many seconds ago go; -1 (default): none */
    long batch;                /* rows per transaction */
    long pause_ms;             /* sleep between two batches, milliseconds (0: none) */
    int dry_run;               /* count what would go, delete nothing */
} pw_prune_opts_t;

/**
 * Parses an age: a whole number followed by d (days), h (hours), m (minutes) or s (seconds), e.g.
 * "35d", or "off" (-1: that table is kept whole). Returns 0, or -1 when s is neither.
 */
int pw_prune_parse_age(const char *s, long long *seconds);

/**
 * Parses `prune`'s arguments (argv[first..argc-1]) into opts, defaults first. Returns 0, or -1 with
 * the reason in err.
 */
int pw_prune_parse_args(int argc, char **argv, int first, pw_prune_opts_t *opts, char *err, size_t errlen);

/**
 * Removes, table by table, in transactions of at most opts->batch rows each (lock_timeout 2 s,
 * statement_timeout 60 s; a batch that times out is retried, then the run stops): receipts older
 * than the window, dead letters redriven longer ago than their age (never one not redriven), and
 * status events older than theirs. The cut-off times are fixed once, at the start. Safe while
 * workers write, and to run twice at once or again after an interruption (what is left is
 * removed by the next run). Then, in one transaction, folds the roll-ups' pending rows
 * (pw_rollup_fold, migration 0014; with dry_run, counts them). Progress on stderr, one count per
 * table on stdout. Returns 0 when done, 1 on a database error.
 */
int pw_prune_run(const char *conninfo, const pw_prune_opts_t *opts);

#endif
