/* `worker redrive`: stored dead letters through today's parsers and handlers, once each. */
#ifndef PW_REDRIVE_H
#define PW_REDRIVE_H

typedef struct {
    const char *since;  /* only dead letters received at or after this timestamptz text; NULL: all */
    const char *reason; /* only those whose reason contains this text (case-insensitive); NULL: all */
    int dry_run;        /* decode and count, write nothing */
} pw_redrive_opts_t;

/**
 * Takes every dead letter not yet redriven (oldest first), decodes its stored body as a live push
 * would be, and for each one that is now fully understood writes it through Dispatch, as a live
 * push is written: the same executor, statement and idempotency; in its transaction its old
 * dead_letter receipt is replaced and the dead letter marked redriven (two runs at once write
 * each one once). The rest are left as they are.
 * Prints progress and counts on stdout. Blocking (a command, not the server). Returns 0 when it
 * ran (whatever it found), 1 on a database error.
 */
int pw_redrive_run(const char *conninfo, const pw_redrive_opts_t *opts);

#endif
