/* The HTTP side: WORKER_THREADS h2o event loops on one port, sharing the database of the first (worker/db.h). */
#ifndef PW_HTTP_H
#define PW_HTTP_H

#include "worker/config.h"

/**
 * Binds 0.0.0.0:cfg->port (one listening socket, watched by every thread), serves until SIGTERM or SIGINT,
 * then stops accepting, finishes or answers 503 what is in flight (within PW_HTTP_DRAIN_MS) and
 * returns 0; returns -1 when it cannot start (the port is taken...), after logging why.
 * Call from the main thread with no other threads running.
 */
int pw_http_serve(const pw_config_t *cfg);

/* How long a stop waits for in-flight pushes, below Cloud Run's 10 s before SIGKILL... */
#define PW_HTTP_DRAIN_MS 8500
/* ...and then for idle connections to close once told to. */
#define PW_HTTP_CLOSE_MS 500

#endif
