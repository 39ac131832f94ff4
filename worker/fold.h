/*
 * The roll-ups' folder (migration 0014): a thread with a database connection of its own that calls
 * pw_rollup_fold() every ROLLUP_FOLD_MS, moving the signed rows that writes of message_logs left
 * in message_rollup_pending into the folded roll-ups. Off the pushes' path: the executor's
 * transactions only append those rows, and the roll-up views count the pending ones until they
 * are folded, so a fold that is late or fails changes no answer, only how much a reader of the
 * roll-ups sums on the fly.
 */
#ifndef PW_FOLD_H
#define PW_FOLD_H

#include "worker/config.h"
#include "worker/metrics.h"

typedef struct pw_fold pw_fold_t;

/**
 * Starts the folder when cfg->rollup_fold_ms > 0 (else returns NULL and does nothing). It
 * connects when it first folds, and again after an error, at most once per interval. cfg and
 * metrics (a slot for its thread alone) are borrowed until pw_fold_stop.
 */
pw_fold_t *pw_fold_start(const pw_config_t *cfg, pw_metrics_t *metrics);

/*
 * Stops the folder and frees it (NULL: nothing). A fold in progress is cancelled and rolled back
 * (its rows stay pending); a connection attempt in progress is waited for (connect_timeout, 5 s).
 */
void pw_fold_stop(pw_fold_t *f);

#endif
