/*
 * Http: WORKER_THREADS h2o event loops on one port. Each authenticates a push (worker/auth.h)
 * and writes it through its own loop of the process's Dispatch (worker/dispatch.h), then answers
 * it; Http never sees the database.
 */
#ifndef PW_HTTP_H
#define PW_HTTP_H

#include "worker/config.h"
#include "worker/dispatch.h"
#include "worker/metrics.h"

/**
 * Binds 0.0.0.0:cfg->port (one listening socket, watched by every loop), serves until SIGTERM or
 * SIGINT, then stops accepting, drains dispatch (PW_HTTP_DRAIN_MS: what is not committed by then
 * is answered 503), waits until each loop has answered its pushes, closes the connections and
 * returns 0; returns -1 when it cannot start (the port is taken...), after logging why.
 * Loop i writes metrics slot i (the registry has at least cfg->threads slots); GET /metrics
 * renders every slot. dispatch and metrics are borrowed; when this returns, no loop uses either.
 * Call from the main thread, with SIGTERM and SIGINT blocked in every thread already running.
 */
int pw_http_serve(const pw_config_t *cfg, pw_dispatch_t *dispatch, pw_metrics_registry_t *metrics);

/* How long a stop waits for in-flight pushes, below Cloud Run's 10 s before SIGKILL... */
#define PW_HTTP_DRAIN_MS 8500
/* ...and then for idle connections to close once told to. */
#define PW_HTTP_CLOSE_MS 500

#endif
