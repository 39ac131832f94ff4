/* The two handler modules: status events (status.c) and inbound messages (inbound.c). */
#ifndef PW_HANDLERS_H
#define PW_HANDLERS_H

#include "worker/dispatch.h"

/* status.c: status_events + message_logs in one statement. */
extern const pw_stmt_t pw_status_stmt;
/* inbound.c: inbound_messages (+ NOTIFY of new ones) and contacts. */
extern const pw_stmt_t pw_inbound_stmt;
extern const pw_stmt_t pw_contacts_stmt;

/* The NOTIFY channel announcing each new inbound message (payload: small JSON). */
#define PW_INBOUND_CHANNEL "pushworker_inbound"

#endif
