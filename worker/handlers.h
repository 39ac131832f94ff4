/* The two handler modules: status events (status.c) and inbound messages (inbound.c). */
#ifndef PW_HANDLERS_H
#define PW_HANDLERS_H

#include "worker/dispatch.h"

/* status.c: status_events + message_logs in one statement. */
extern const pw_stmt_t pw_status_stmt;
/* inbound.c: inbound_messages (+ NOTIFY of new ones) and contacts. */
extern const pw_stmt_t pw_inbound_stmt;
extern const pw_stmt_t pw_contacts_stmt;

/*
 * SQL condition: the row (with columns sub, psmid) comes from a push whose receipt THIS
 * transaction inserted (or a push without a message id). A redelivered push, whose receipt an
 * earlier transaction wrote, changes nothing, even if its content differed. The receipts
 * statement runs first in the same transaction, so its row is visible here.
 */
#define PW_SQL_FROM_NEW_PUSH(alias)                                                                                            \
    "(" alias ".psmid IS NULL OR EXISTS (SELECT 1 FROM pubsub_receipts r WHERE r.subscription = " alias ".sub"               \
    " AND r.message_id = " alias ".psmid AND r.xmin = pg_current_xact_id()::xid))"

/* The NOTIFY channel announcing each new inbound message (payload: small JSON). */
#define PW_INBOUND_CHANNEL "pushworker_inbound"

#endif
