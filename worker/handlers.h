/* The handler modules: status events (status.c) and inbound messages (inbound.c), as sections of one statement. */
#ifndef PW_HANDLERS_H
#define PW_HANDLERS_H

#include "worker/dispatch.h"

/*
 * A section of the statement a group of pushes is written with: entries of its WITH list that
 * read array parameters $1..$ncols (numbered from 1 within the section; dispatch.c renumbers them
 * when it puts the sections together) and the function that adds one push's rows.
 */
typedef struct {
    const char *name;
    const char *ctes;
    int ncols;
    void (*append)(pw_cols_t *cols, int base, const pw_push_t *p);
} pw_section_t;

/* status.c: status_events and message_logs. */
extern const pw_section_t pw_status_section;
/* inbound.c: inbound_messages (CTE "ins" returns the new ones, announced with NOTIFY) and contacts. */
extern const pw_section_t pw_inbound_section;
extern const pw_section_t pw_contacts_section;

/*
 * SQL condition: the row (with columns sub, psmid) comes from a push whose receipt this very
 * statement inserted (CTE "rc" returns them), or from a push without a message id. A redelivered
 * push, whose receipt an earlier transaction wrote, changes nothing, even if its content differed.
 */
#define PW_SQL_FROM_NEW_PUSH(alias)                                                                                            \
    "(" alias ".psmid IS NULL OR (" alias ".sub, " alias ".psmid) IN (SELECT subscription, message_id FROM rc))"

/* The NOTIFY channel announcing each new inbound message (payload: small JSON). */
#define PW_INBOUND_CHANNEL "pushworker_inbound"

#endif
