-- 0014: the roll-ups leave the write path. A write of message_logs appends its signed rows to
-- message_rollup_pending; pw_rollup_fold adds what is pending to the roll-ups later, on a
-- connection of its own (the worker's folder: ROLLUP_FOLD_MS; `worker prune`); the roll-ups read
-- as before, exact at every moment, because each is now a view of what is folded plus what is
-- pending (BENCHMARKS.md, "The roll-ups folded off the write path").
--
-- Why: since 0008 each group of pushes with a status ran the roll-up statement in its two
-- statement triggers (INSERT and UPDATE of message_logs): three upserts each, a roll-up slot
-- claimed, the shares computed and grouped, in the transaction the pushes wait for. Paced at
-- 3,000 pushes/s that was about a third of a push's latency; appending the same signed rows to a
-- table without an index costs the group one INSERT per trigger, and the fold does the grouping
-- and the upserts for a second of traffic at once.
--
-- What changes for a reader: nothing in any view or function's columns or answers.
-- message_status_rollup, message_latency_rollup and message_failure_rollup keep their names and
-- columns as views: the folded rows (the tables, renamed to *_folded), plus the pending rows'
-- sums in slot -1. A plain view of the three tables (the daily views, or a user's own) is
-- defined again over the view of the same name, so it counts the pending rows too (a
-- materialized view is not: it reads the *_folded table, the folded rows alone, until it is
-- defined again). Functions (pw_latency_days, pw_message_summary) name the roll-ups in their
-- text and read the views from now on. The tables' grants stay on the *_folded tables; a role
-- that read the roll-ups directly needs SELECT on the views and on message_rollup_pending.
--
-- Exactly once in effect: a pending row is folded by the transaction that deletes it, which adds
-- it to the folded rows in the same commit, so any snapshot sees it on exactly one side. One fold
-- at a time (advisory lock 725372696, 16; the slots of pw_rollup_slot are 0-15): another caller
-- returns 0 at once instead of waiting.
--
-- Applied in place: three tables and their keys renamed, one table and three views created, the
-- dependent views defined again, four functions replaced. Nothing is copied or rebuilt; writes of
-- message_logs wait for the instant it takes to commit.
DO $migration$
DECLARE
    -- Each row's share (0009's pw_rollup_times) with its sign; %1$s: the signed rows (sign,
    -- sent_at, delivered_at, read_at, failed_at, last_error).
    shares constant text := $sql$
        SELECT x.sign, x.last_error, s.*
        FROM (%1$s) x
        CROSS JOIN LATERAL pw_rollup_times(x.sent_at, x.delivered_at, x.read_at, x.failed_at) s$sql$;
    -- The three roll-ups' sums over the shares %1$s (a relation with its alias c), in slot %2$s:
    -- the grouping of 0008-0012's roll-up statement, written once for the fold and the views.
    status_sums constant text := $sql$
        SELECT c.day, %2$s::smallint AS slot, sum(c.sign)::bigint AS messages,
               sum(c.sign * c.delivered)::bigint AS delivered, sum(c.sign * c.read)::bigint AS read,
               sum(c.sign * c.failed)::bigint AS failed
        FROM %1$s
        GROUP BY c.day
        HAVING sum(c.sign) <> 0 OR sum(c.sign * c.delivered) <> 0 OR sum(c.sign * c.read) <> 0
            OR sum(c.sign * c.failed) <> 0$sql$;
    latency_sums constant text := $sql$
        SELECT c.day, v.kind, pw_latency_bucket(v.s::float8) AS bucket, %2$s::smallint AS slot,
               sum(c.sign)::bigint AS n, sum(c.sign * v.s) AS total
        FROM %1$s
        CROSS JOIN LATERAL (VALUES (1::smallint, c.delivery), (2::smallint, c.read_s),
                                   (3::smallint, c.read_after_sent)) v(kind, s)
        WHERE v.s IS NOT NULL
        GROUP BY 1, 2, 3
        HAVING sum(c.sign) <> 0 OR sum(c.sign * v.s) <> 0$sql$;
    failure_sums constant text := $sql$
        SELECT c.day, jsonb_build_array(e.error_code, e.error_title)::text AS error_key, %2$s::smallint AS slot,
               e.error_code, e.error_title, sum(c.sign)::bigint AS messages
        FROM %1$s
        CROSS JOIN LATERAL pw_failure_keys(c.last_error) e
        WHERE c.failed = 1
        GROUP BY 1, 2, 3, 4, 5
        HAVING sum(c.sign) <> 0$sql$;
    pending_shares text := format('(%s) c', format(shares, 'SELECT * FROM message_rollup_pending'));
    dependent_views text[];
    v text;
BEGIN
    -- The plain views over the roll-up tables (0008's three daily views, and any of a user's), as
    -- they read now: defined again below, once the names are views.
    SELECT coalesce(array_agg(format('CREATE OR REPLACE VIEW %s AS %s', r.ev_class::regclass,
                                     pg_get_viewdef(r.ev_class))
                              ORDER BY r.ev_class), '{}')
    INTO dependent_views
    FROM (SELECT DISTINCT rw.ev_class
          FROM pg_depend d
          JOIN pg_rewrite rw ON rw.oid = d.objid
          JOIN pg_class vc ON vc.oid = rw.ev_class AND vc.relkind = 'v'
          WHERE d.classid = 'pg_rewrite'::regclass
            AND d.refobjid IN ('message_status_rollup'::regclass, 'message_latency_rollup'::regclass,
                               'message_failure_rollup'::regclass)) r;

    ALTER TABLE message_status_rollup RENAME TO message_status_rollup_folded;
    ALTER INDEX message_status_rollup_pkey RENAME TO message_status_rollup_folded_pkey;
    ALTER TABLE message_latency_rollup RENAME TO message_latency_rollup_folded;
    ALTER INDEX message_latency_rollup_pkey RENAME TO message_latency_rollup_folded_pkey;
    ALTER TABLE message_failure_rollup RENAME TO message_failure_rollup_folded;
    ALTER INDEX message_failure_rollup_pkey RENAME TO message_failure_rollup_folded_pkey;

    -- The signed rows not yet folded: +1 a message_logs row as it is now, -1 as it was. No index
    -- (appended to, then read whole and emptied); vacuumed once a thousand rows are dead, not
    -- after a fifth of the table (it is emptied every second).
    CREATE TABLE message_rollup_pending (
        sign         smallint NOT NULL,
        sent_at      timestamptz,
        delivered_at timestamptz,
        read_at      timestamptz,
        failed_at    timestamptz,
        last_error   jsonb -- only with failed_at: the failure roll-up reads it for failed messages alone
    ) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
            autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 1000);

    EXECUTE format($v$
CREATE VIEW message_status_rollup AS
SELECT day, slot, messages, delivered, read, failed FROM message_status_rollup_folded
UNION ALL
%s
$v$, format(status_sums, pending_shares, '-1'));
    EXECUTE format($v$
CREATE VIEW message_latency_rollup AS
SELECT day, kind, bucket, slot, n, total FROM message_latency_rollup_folded
UNION ALL
%s
$v$, format(latency_sums, pending_shares, '-1'));
    EXECUTE format($v$
CREATE VIEW message_failure_rollup AS
SELECT day, error_key, slot, error_code, error_title, messages FROM message_failure_rollup_folded
UNION ALL
%s
$v$, format(failure_sums, pending_shares, '-1'));

    FOREACH v IN ARRAY dependent_views LOOP
        EXECUTE v;
    END LOOP;

    -- The fold: every pending row this transaction sees, deleted and added to the folded roll-ups
    -- in the transaction's slot, in key order. Returns how many rows it folded (0 while another
    -- fold runs).
    EXECUTE format($f$
CREATE OR REPLACE FUNCTION pw_rollup_fold() RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    my_slot smallint;
    folded bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(725372696, 16) THEN
        RETURN 0;
    END IF;
    my_slot := pw_rollup_slot();
    WITH d AS (
        DELETE FROM message_rollup_pending
        RETURNING sign, sent_at, delivered_at, read_at, failed_at, last_error
    ), c AS MATERIALIZED (%s
    ), st AS (
        INSERT INTO message_status_rollup_folded AS r (day, slot, messages, delivered, read, failed)
        %s
        ORDER BY 1
        ON CONFLICT (day, slot) DO UPDATE SET
            messages = r.messages + excluded.messages, delivered = r.delivered + excluded.delivered,
            read = r.read + excluded.read, failed = r.failed + excluded.failed
    ), lat AS (
        INSERT INTO message_latency_rollup_folded AS r (day, kind, bucket, slot, n, total)
        %s
        ORDER BY 1, 2, 3
        ON CONFLICT (day, kind, bucket, slot) DO UPDATE SET
            n = r.n + excluded.n, total = r.total + excluded.total
    ), fl AS (
        INSERT INTO message_failure_rollup_folded AS r (day, error_key, slot, error_code, error_title, messages)
        %s
        ORDER BY 1, 2, 3
        ON CONFLICT (day, error_key, slot) DO UPDATE SET messages = r.messages + excluded.messages
    )
    SELECT count(*) INTO folded FROM d;
    RETURN folded;
END
$fn$;
$f$, format(shares, 'SELECT * FROM d'), format(status_sums, 'c', 'my_slot'),
     format(latency_sums, 'c', 'my_slot'), format(failure_sums, 'c', 'my_slot'));
END
$migration$;

-- The statement triggers of message_logs (0008) append the rows they saw to the pending rows: +1
-- each new row, -1 each old one. TRUNCATE empties the roll-ups, folded and pending.
CREATE OR REPLACE FUNCTION pw_rollup_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO message_rollup_pending (sign, sent_at, delivered_at, read_at, failed_at, last_error)
        SELECT 1, n.sent_at, n.delivered_at, n.read_at, n.failed_at,
               CASE WHEN n.failed_at IS NOT NULL THEN n.last_error END
        FROM pw_new n WHERE n.bsp_msg_id IS NOT NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO message_rollup_pending (sign, sent_at, delivered_at, read_at, failed_at, last_error)
        SELECT -1, o.sent_at, o.delivered_at, o.read_at, o.failed_at,
               CASE WHEN o.failed_at IS NOT NULL THEN o.last_error END
        FROM pw_old o WHERE o.bsp_msg_id IS NOT NULL
        UNION ALL
        SELECT 1, n.sent_at, n.delivered_at, n.read_at, n.failed_at,
               CASE WHEN n.failed_at IS NOT NULL THEN n.last_error END
        FROM pw_new n WHERE n.bsp_msg_id IS NOT NULL;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO message_rollup_pending (sign, sent_at, delivered_at, read_at, failed_at, last_error)
        SELECT -1, o.sent_at, o.delivered_at, o.read_at, o.failed_at,
               CASE WHEN o.failed_at IS NOT NULL THEN o.last_error END
        FROM pw_old o WHERE o.bsp_msg_id IS NOT NULL;
    ELSE -- TRUNCATE
        DELETE FROM message_status_rollup_folded;
        DELETE FROM message_latency_rollup_folded;
        DELETE FROM message_failure_rollup_folded;
        DELETE FROM message_rollup_pending;
    END IF;
    RETURN NULL;
END
$$;

-- pw_rollup_apply (0009: 0008's backfill and pw_rollup_add hand it rows) appends them to the
-- pending rows too.
CREATE OR REPLACE FUNCTION pw_rollup_apply(changes pw_rollup_row[]) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO message_rollup_pending (sign, sent_at, delivered_at, read_at, failed_at, last_error)
    SELECT x.sign, x.sent_at, x.delivered_at, x.read_at, x.failed_at,
           CASE WHEN x.failed_at IS NOT NULL THEN x.last_error END
    FROM unnest(changes) x;
$$;
