/* `worker report`: one self-contained HTML file of charts (inline SVG) over the analytics views for a time window. */
#ifndef PW_REPORT_H
#define PW_REPORT_H

#include <stddef.h>

#include "proto/time.h"

/* The longest window a report covers (days): more daily bars than this would not be readable. */
#define PW_REPORT_MAX_DAYS 366

typedef struct {
    pw_time_us_t since; /* the window is since <= sent_at < until (UTC instants) */
    pw_time_us_t until;
    const char *out;  /* the file written; "-": standard output. Borrowed. */
    int top;          /* most engaged recipients listed (default 10) */
    int min_messages; /* fewest messages for a recipient to be ranked (default 5, as pw_engaged_recipients) */
} pw_report_opts_t;

/**
 * Reads the options after `worker report` (argv[0] is the first of them): --since T, --until T,
 * --out FILE (required), --top N, --min-messages N. T is an ISO 8601 date (2024-10-01: midnight
 * UTC) or time (2024-10-01T12:00, 2024-10-01 12:00:00Z, 2024-10-01T17:30+05:30; no zone: UTC).
 * Defaults: until = the next UTC midnight, since = 7 days before until. now_us is the current time.
 * Returns 0, or -1 with the reason in err (the command then exits 2).
 */
int pw_report_parse_args(int argc, char **argv, pw_time_us_t now_us, pw_report_opts_t *opts, char *err, size_t errlen);

/* One --since/--until value as a UTC instant (see pw_report_parse_args). 0, or -1 with the reason in err. */
int pw_report_parse_time(const char *s, pw_time_us_t *out, char *err, size_t errlen);

/**
 * A recipient as shown in the report: a phone number keeps its country code and its last 2 digits
 * ("+919800000001" -> "+91 ••••••••01"); a user id keeps its country prefix and last 2 characters
 * ("US.13491208655302741918" -> "US.••••18"). Written into out (cap bytes, NUL included; cut when
 * it does not fit). Returns out.
 */
char *pw_report_mask(const char *recipient, char *out, size_t cap);

/**
 * Queries the analytics (one read-only snapshot) over conninfo and writes the HTML to opts->out.
 * Blocking (a command). Prints what it wrote on stderr. Returns the exit status: 0 written, 1 the
 * database failed (or lacks the views: run `worker migrate`) or the file could not be written.
 */
int pw_report_run(const char *conninfo, const pw_report_opts_t *opts);

#endif
