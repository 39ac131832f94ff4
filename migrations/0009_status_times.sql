-- 0009: each message's status times as stored columns of message_logs, so that no analytics query,
-- index or roll-up trigger parses whatsapp_status again (BENCHMARKS.md, "Analytics at 10 million
-- messages", has the times before and after, the migration's own time and its cost to the writes;
-- docs/analytics.md, "Stored times").
--
-- Until now every reader computed a message's times from its whatsapp_status JSON: the views at each
-- query (a 30-day window at 10 million messages is 3.3 million rows: message_status_times took 5 s
-- and pw_engaged_recipients 10 s), the partial days of pw_message_summary's window, 0007's and
-- 0008's index expressions and predicates at each write (up to six times per written row), and
-- 0008's roll-up triggers for each old and new row (eight times). Now four generated columns hold
-- them, computed once per written row by PostgreSQL itself from whatsapp_status and created_at, so
-- they can never disagree with the JSON, whatever writes the row (the worker, redrive, a hand-written
-- UPDATE):
--   sent_at       coalesce(whatsapp_status->>'sent', created_at): message_status_times.sent_at
--   delivered_at  whatsapp_status->>'delivered'
--   read_at       whatsapp_status->>'read'
--   failed_at     whatsapp_status->>'failed'
-- each read with pw_status_instant (0007: pw_status_time's answers, IMMUTABLE, as a generated column
-- must be). played_at, which nothing aggregates, is still parsed where it is selected.
--
-- Every view and function keeps its name, columns and answers; they now read these columns, and the
-- indexes of 0007 and 0008 that were expressions over whatsapp_status are made again over them:
--   message_logs_sent_day      the UTC sent day (message_status_times.sent_day, as before)
--   message_logs_sent_at       sent_at, with the three other times beside it (INCLUDE), only for
--                              rows with a bsp_msg_id (all of them: the column is NOT NULL), so a
--                              window of message_status_times (sent_at >= ...) reads the index alone
--   message_logs_undelivered   sent_at of the messages without delivered_at (pw_undelivered)
--   message_logs_pending       ... and without failed_at (pw_undelivered(..., false))
--
-- The roll-up triggers also claim a roll-up slot that no other writing transaction holds
-- (pw_rollup_slot, below), instead of the backend pid modulo 16.
--
-- Applied in place: adding a stored column rewrites the table under an exclusive lock, while writes
-- to message_logs wait (pushes answer 503 and Pub/Sub redelivers them; BENCHMARKS.md has the time at
-- 10 million messages). The expression indexes are dropped before the rewrite so that it does not
-- compute them once more. A worker-shaped but impossible time ('2024-13-01T...') under 'delivered',
-- 'read' or 'failed' of an existing row now makes this migration fail naming the value (0007 already
-- did so for 'sent'); correct the row, then migrate again. Such a value written later is refused
-- like any invalid write (the worker writes only times it formatted itself).

-- A table of the prototype's may have a column of one of these names with a meaning of its own:
-- ADD COLUMN IF NOT EXISTS would keep it silently and every view would read it. Refuse instead.
DO $$
DECLARE
    taken text;
BEGIN
    SELECT string_agg(a.attname, ', ' ORDER BY a.attname) INTO taken
    FROM pg_attribute a
    WHERE a.attrelid = 'message_logs'::regclass AND NOT a.attisdropped AND a.attgenerated <> 's'
      AND a.attname IN ('sent_at', 'delivered_at', 'read_at', 'failed_at');
    IF taken IS NOT NULL THEN
        RAISE EXCEPTION '0009: message_logs already has column(s) % that are not the stored times this migration adds', taken
            USING HINT = 'Rename them (ALTER TABLE message_logs RENAME COLUMN ...), then run worker migrate again.';
    END IF;
END
$$;

DROP INDEX IF EXISTS message_logs_sent_day;
DROP INDEX IF EXISTS message_logs_undelivered;
DROP INDEX IF EXISTS message_logs_pending;

ALTER TABLE message_logs
    ADD COLUMN IF NOT EXISTS sent_at timestamptz
        GENERATED ALWAYS AS (coalesce(pw_status_instant(whatsapp_status->>'sent'), created_at)) STORED,
    ADD COLUMN IF NOT EXISTS delivered_at timestamptz
        GENERATED ALWAYS AS (pw_status_instant(whatsapp_status->>'delivered')) STORED,
    ADD COLUMN IF NOT EXISTS read_at timestamptz
        GENERATED ALWAYS AS (pw_status_instant(whatsapp_status->>'read')) STORED,
    ADD COLUMN IF NOT EXISTS failed_at timestamptz
        GENERATED ALWAYS AS (pw_status_instant(whatsapp_status->>'failed')) STORED;

CREATE INDEX IF NOT EXISTS message_logs_sent_day ON message_logs (((sent_at AT TIME ZONE 'UTC')::date));
CREATE INDEX IF NOT EXISTS message_logs_sent_at ON message_logs (sent_at)
    INCLUDE (delivered_at, read_at, failed_at) WHERE bsp_msg_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS message_logs_undelivered ON message_logs (sent_at)
    WHERE bsp_msg_id IS NOT NULL AND delivered_at IS NULL;
CREATE INDEX IF NOT EXISTS message_logs_pending ON message_logs (sent_at)
    WHERE bsp_msg_id IS NOT NULL AND delivered_at IS NULL AND failed_at IS NULL;

-- message_status_times: the same columns and rows as in 0007, from the stored times.
CREATE OR REPLACE VIEW message_status_times AS
SELECT m.bsp_msg_id,
       m.to_phone,
       m.current_status,
       m.sent_at,
       (m.sent_at AT TIME ZONE 'UTC')::date AS sent_day,
       m.delivered_at,
       m.read_at,
       m.failed_at,
       pw_status_time(m.whatsapp_status->>'played') AS played_at,
       extract(epoch FROM m.delivered_at - m.sent_at)::float8 AS delivery_seconds,
       extract(epoch FROM m.read_at - m.delivered_at)::float8 AS read_seconds,
       extract(epoch FROM m.read_at - m.sent_at)::float8 AS read_after_sent_seconds,
       m.last_error,
       m.recipient_user_id,
       coalesce(m.to_phone,
                (SELECT nullif('+' || regexp_replace(c.wa_id, '[^0-9]', '', 'g'), '+')
                 FROM contacts c WHERE c.user_id = m.recipient_user_id),
                m.recipient_user_id) AS recipient
FROM message_logs m
WHERE m.bsp_msg_id IS NOT NULL;

-- ---- the roll-ups (0008) from the stored times ----

-- What one message counts for, from its stored times: 0008's pw_rollup_share without parsing.
CREATE OR REPLACE FUNCTION pw_rollup_times(sent_at timestamptz, delivered_at timestamptz, read_at timestamptz,
                                           failed_at timestamptz)
RETURNS TABLE (day date, delivered int, read int, failed int,
               delivery numeric, read_s numeric, read_after_sent numeric)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (sent_at AT TIME ZONE 'UTC')::date,
           (delivered_at IS NOT NULL)::int, (read_at IS NOT NULL)::int, (failed_at IS NOT NULL)::int,
           extract(epoch FROM delivered_at - sent_at),
           extract(epoch FROM read_at - delivered_at),
           extract(epoch FROM read_at - sent_at)
$$;

DO $$
BEGIN
    IF to_regtype('pw_rollup_row') IS NULL THEN
        CREATE TYPE pw_rollup_row AS (sign int, sent_at timestamptz, delivered_at timestamptz,
                                      read_at timestamptz, failed_at timestamptz, last_error jsonb);
    END IF;
END
$$;

-- The roll-up slot of the writing transaction, one no other writing transaction holds. 0008 took
-- the backend's pid modulo 16, so two connections (two Cloud Run instances, DB_CONNECTIONS) whose
-- pids agree modulo 16 (one pair in 16; with five instances, every other deployment) updated the
-- same roll-up rows: each waited for the other's commit, and the two triggers of one statement
-- could lock rows in an order that deadlocks with another transaction's (a 1 s wait, then one
-- of them rolled back). Now the slot is claimed with a transaction-scoped advisory lock (key
-- 725372696, the slot), starting at the pid's slot and taking the next free one; with 16 writing
-- transactions at once the 17th shares its pid's slot (and waits) as before. Re-entrant: a
-- transaction that holds a slot gets it again, or another free one (the views sum the slots).
CREATE OR REPLACE FUNCTION pw_rollup_slot() RETURNS smallint
LANGUAGE plpgsql AS $$
DECLARE
    home int := pg_backend_pid() % 16;
BEGIN
    FOR i IN 0 .. 15 LOOP
        IF pg_try_advisory_xact_lock(725372696, (home + i) % 16) THEN
            RETURN ((home + i) % 16)::smallint;
        END IF;
    END LOOP;
    RETURN home::smallint;
END
$$;

-- pw_rollup_add (0008) over rows with their stored times, into the transaction's slot: the same
-- roll-up rows, in the same order.
CREATE OR REPLACE FUNCTION pw_rollup_apply(changes pw_rollup_row[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    my_slot smallint := pw_rollup_slot();
BEGIN
    WITH c AS MATERIALIZED (
        SELECT x.sign, x.last_error, s.*
        FROM unnest(changes) x
        CROSS JOIN LATERAL pw_rollup_times(x.sent_at, x.delivered_at, x.read_at, x.failed_at) s
    ), st AS (
        INSERT INTO message_status_rollup AS r (day, slot, messages, delivered, read, failed)
        SELECT c.day, my_slot, sum(c.sign), sum(c.sign * c.delivered),
               sum(c.sign * c.read), sum(c.sign * c.failed)
        FROM c
        GROUP BY c.day
        HAVING sum(c.sign) <> 0 OR sum(c.sign * c.delivered) <> 0 OR sum(c.sign * c.read) <> 0
            OR sum(c.sign * c.failed) <> 0
        ORDER BY c.day
        ON CONFLICT (day, slot) DO UPDATE SET
            messages = r.messages + excluded.messages, delivered = r.delivered + excluded.delivered,
            read = r.read + excluded.read, failed = r.failed + excluded.failed
    ), lat AS (
        INSERT INTO message_latency_rollup AS r (day, kind, bucket, slot, n, total)
        SELECT c.day, v.kind, pw_latency_bucket(v.s::float8), my_slot,
               sum(c.sign), sum(c.sign * v.s)
        FROM c
        CROSS JOIN LATERAL (VALUES (1::smallint, c.delivery), (2::smallint, c.read_s),
                                   (3::smallint, c.read_after_sent)) v(kind, s)
        WHERE v.s IS NOT NULL
        GROUP BY 1, 2, 3
        HAVING sum(c.sign) <> 0 OR sum(c.sign * v.s) <> 0
        ORDER BY 1, 2, 3
        ON CONFLICT (day, kind, bucket, slot) DO UPDATE SET
            n = r.n + excluded.n, total = r.total + excluded.total
    )
    INSERT INTO message_failure_rollup AS r (day, error_key, slot, error_code, error_title, messages)
    SELECT c.day, jsonb_build_array(e.error_code, e.error_title)::text, my_slot,
           e.error_code, e.error_title, sum(c.sign)
    FROM c
    CROSS JOIN LATERAL pw_failure_keys(c.last_error) e
    WHERE c.failed = 1
    GROUP BY 1, 2, 3, 4, 5
    HAVING sum(c.sign) <> 0
    ORDER BY 1, 2, 3
    ON CONFLICT (day, error_key, slot) DO UPDATE SET messages = r.messages + excluded.messages;
END
$$;

-- 0008's pw_rollup_add (its backfill, and any call by hand) hands its rows to pw_rollup_apply, their
-- times read as the stored columns are generated: one body and one slot rule for every writer of
-- the roll-ups. pw_rollup_share, which only its old body used, goes.
CREATE OR REPLACE FUNCTION pw_rollup_add(changes pw_rollup_change[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pw_rollup_apply(ARRAY(
        SELECT ROW(x.sign, coalesce(pw_status_instant(x.whatsapp_status->>'sent'), x.created_at),
                   pw_status_instant(x.whatsapp_status->>'delivered'), pw_status_instant(x.whatsapp_status->>'read'),
                   pw_status_instant(x.whatsapp_status->>'failed'), x.last_error)::pw_rollup_row
        FROM unnest(changes) x));
END
$$;
DROP FUNCTION IF EXISTS pw_rollup_share(jsonb, timestamptz);

-- The triggers of 0008 now hand over the stored times (same triggers, same rows counted).
CREATE OR REPLACE FUNCTION pw_rollup_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pw_rollup_apply(ARRAY(
            SELECT ROW(1, n.sent_at, n.delivered_at, n.read_at, n.failed_at, n.last_error)::pw_rollup_row
            FROM pw_new n WHERE n.bsp_msg_id IS NOT NULL));
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM pw_rollup_apply(ARRAY(
            SELECT ROW(-1, o.sent_at, o.delivered_at, o.read_at, o.failed_at, o.last_error)::pw_rollup_row
            FROM pw_old o WHERE o.bsp_msg_id IS NOT NULL
            UNION ALL
            SELECT ROW(1, n.sent_at, n.delivered_at, n.read_at, n.failed_at, n.last_error)::pw_rollup_row
            FROM pw_new n WHERE n.bsp_msg_id IS NOT NULL));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pw_rollup_apply(ARRAY(
            SELECT ROW(-1, o.sent_at, o.delivered_at, o.read_at, o.failed_at, o.last_error)::pw_rollup_row
            FROM pw_old o WHERE o.bsp_msg_id IS NOT NULL));
    ELSE -- TRUNCATE
        DELETE FROM message_status_rollup;
        DELETE FROM message_latency_rollup;
        DELETE FROM message_failure_rollup;
    END IF;
    RETURN NULL;
END
$$;

-- ---- the functions that read messages, from the stored times ----

-- pw_message_summary: as in 0008 (whole UTC days from the roll-ups, the parts of days at the edges
-- from the messages); the edges are two ranges of message_logs_sent_at.
CREATE OR REPLACE FUNCTION pw_message_summary(since timestamptz, until timestamptz)
RETURNS TABLE (messages bigint, delivered bigint, read bigint, failed bigint,
               delivery_rate numeric, read_rate numeric,
               avg_delivery_seconds numeric, p50_delivery_seconds numeric, p90_delivery_seconds numeric,
               avg_read_seconds numeric, p50_read_seconds numeric, p90_read_seconds numeric,
               avg_read_after_sent_seconds numeric, p50_read_after_sent_seconds numeric,
               p90_read_after_sent_seconds numeric)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    since_day date := (since AT TIME ZONE 'UTC')::date;
    until_day date := (until AT TIME ZONE 'UTC')::date;
    -- the whole days: [first_day, until_day)
    first_day date := since_day + CASE WHEN since AT TIME ZONE 'UTC' = since_day::timestamp THEN 0 ELSE 1 END;
    first_at timestamptz := first_day::timestamp AT TIME ZONE 'UTC';
    until_day_at timestamptz := until_day::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF first_day >= until_day THEN
        RETURN QUERY
        SELECT count(*),
               count(t.delivered_at),
               count(t.read_at),
               count(t.failed_at),
               round(count(t.delivered_at) * 100.0 / nullif(count(*), 0), 2),
               round(count(t.read_at) * 100.0 / nullif(count(t.delivered_at), 0), 2),
               round(avg(t.delivery_seconds)::numeric, 2),
               round((percentile_cont(0.5) WITHIN GROUP (ORDER BY t.delivery_seconds))::numeric, 2),
               round((percentile_cont(0.9) WITHIN GROUP (ORDER BY t.delivery_seconds))::numeric, 2),
               round(avg(t.read_seconds)::numeric, 2),
               round((percentile_cont(0.5) WITHIN GROUP (ORDER BY t.read_seconds))::numeric, 2),
               round((percentile_cont(0.9) WITHIN GROUP (ORDER BY t.read_seconds))::numeric, 2),
               round(avg(t.read_after_sent_seconds)::numeric, 2),
               round((percentile_cont(0.5) WITHIN GROUP (ORDER BY t.read_after_sent_seconds))::numeric, 2),
               round((percentile_cont(0.9) WITHIN GROUP (ORDER BY t.read_after_sent_seconds))::numeric, 2)
        FROM message_status_times t
        WHERE t.sent_at >= since AND t.sent_at < until;
        RETURN;
    END IF;
    RETURN QUERY
    WITH edge AS MATERIALIZED (
        SELECT s.*
        FROM message_logs m
        CROSS JOIN LATERAL pw_rollup_times(m.sent_at, m.delivered_at, m.read_at, m.failed_at) s
        WHERE m.bsp_msg_id IS NOT NULL
          AND ((m.sent_at >= since AND m.sent_at < first_at) OR (m.sent_at >= until_day_at AND m.sent_at < until))
    ), counts AS (
        SELECT coalesce(sum(x.messages), 0)::bigint AS messages, coalesce(sum(x.delivered), 0)::bigint AS delivered,
               coalesce(sum(x.read), 0)::bigint AS read, coalesce(sum(x.failed), 0)::bigint AS failed
        FROM (SELECT r.messages, r.delivered, r.read, r.failed FROM message_status_rollup r
              WHERE r.day >= first_day AND r.day < until_day
              UNION ALL
              SELECT count(*), sum(e.delivered), sum(e.read), sum(e.failed) FROM edge e) x
    ), lat AS (
        SELECT b.kind, sum(b.n)::bigint AS n, sum(b.total) / sum(b.n) AS mean,
               pw_bucket_percentile(0.5, array_agg((b.total / b.n)::float8 ORDER BY b.bucket), array_agg(b.n ORDER BY b.bucket)) AS p50,
               pw_bucket_percentile(0.9, array_agg((b.total / b.n)::float8 ORDER BY b.bucket), array_agg(b.n ORDER BY b.bucket)) AS p90
        FROM (SELECT u.kind, u.bucket, sum(u.n)::bigint AS n, sum(u.total) AS total
              FROM (SELECT r.kind, r.bucket, r.n, r.total FROM message_latency_rollup r
                    WHERE r.day >= first_day AND r.day < until_day
                    UNION ALL
                    SELECT v.kind, pw_latency_bucket(v.s::float8), 1, v.s
                    FROM edge e
                    CROSS JOIN LATERAL (VALUES (1::smallint, e.delivery), (2::smallint, e.read_s),
                                               (3::smallint, e.read_after_sent)) v(kind, s)
                    WHERE v.s IS NOT NULL) u
              GROUP BY u.kind, u.bucket
              HAVING sum(u.n) > 0) b
        GROUP BY b.kind
    )
    SELECT c.messages, c.delivered, c.read, c.failed,
           round(c.delivered * 100.0 / nullif(c.messages, 0), 2),
           round(c.read * 100.0 / nullif(c.delivered, 0), 2),
           round((SELECT l.mean FROM lat l WHERE l.kind = 1), 2),
           round((SELECT l.p50 FROM lat l WHERE l.kind = 1)::numeric, 2),
           round((SELECT l.p90 FROM lat l WHERE l.kind = 1)::numeric, 2),
           round((SELECT l.mean FROM lat l WHERE l.kind = 2), 2),
           round((SELECT l.p50 FROM lat l WHERE l.kind = 2)::numeric, 2),
           round((SELECT l.p90 FROM lat l WHERE l.kind = 2)::numeric, 2),
           round((SELECT l.mean FROM lat l WHERE l.kind = 3), 2),
           round((SELECT l.p50 FROM lat l WHERE l.kind = 3)::numeric, 2),
           round((SELECT l.p90 FROM lat l WHERE l.kind = 3)::numeric, 2)
    FROM counts c;
END
$$;

-- pw_engaged_recipients: as in 0007 (same columns, rows and order), through message_logs_sent_at.
-- The window's messages are counted per (to_phone, recipient_user_id) first, and the identity rule
-- (message_status_times.recipient) is applied to those pairs, not to each message: at 10 million
-- messages a 30-day window is 3.3 million messages and about 500,000 pairs (4.7-4.8 s against
-- 6.2-6.7 s for 0007's text over the stored times, alternated; BENCHMARKS.md).
CREATE OR REPLACE FUNCTION pw_engaged_recipients(since timestamptz, until timestamptz, min_messages int DEFAULT 5)
RETURNS TABLE (to_phone text, messages bigint, delivered bigint, read bigint, read_rate numeric, recipient text)
LANGUAGE sql STABLE AS $$
    WITH pairs AS (
        SELECT m.to_phone, m.recipient_user_id, count(*) AS n, count(m.delivered_at) AS d, count(m.read_at) AS r
        FROM message_logs m
        WHERE m.bsp_msg_id IS NOT NULL AND m.sent_at >= since AND m.sent_at < until
          AND (m.to_phone IS NOT NULL OR m.recipient_user_id IS NOT NULL)
        GROUP BY 1, 2
    ), who AS (
        SELECT coalesce(p.to_phone,
                        (SELECT nullif('+' || regexp_replace(c.wa_id, '[^0-9]', '', 'g'), '+')
                         FROM contacts c WHERE c.user_id = p.recipient_user_id),
                        p.recipient_user_id) AS recipient, p.n, p.d, p.r
        FROM pairs p
    )
    SELECT CASE WHEN w.recipient LIKE '+%' THEN w.recipient END, sum(w.n)::bigint, sum(w.d)::bigint,
           sum(w.r)::bigint, round(sum(w.r) * 100.0 / sum(w.n), 2), w.recipient
    FROM who w
    GROUP BY w.recipient
    HAVING sum(w.n) >= min_messages
    ORDER BY 5 DESC, 4 DESC, 6
$$;

-- pw_undelivered: as in 0008 (same columns and rows), over the stored times and their partial indexes.
CREATE OR REPLACE FUNCTION pw_undelivered(minutes int, include_failed boolean DEFAULT true)
RETURNS TABLE (bsp_msg_id text, to_phone text, current_status text, sent_at timestamptz,
               minutes_waiting bigint, last_error jsonb, recipient text)
LANGUAGE sql STABLE AS $$
    SELECT m.bsp_msg_id, m.to_phone, m.current_status, m.sent_at,
           floor(extract(epoch FROM now() - m.sent_at) / 60)::bigint,
           m.last_error,
           coalesce(m.to_phone,
                    (SELECT nullif('+' || regexp_replace(c.wa_id, '[^0-9]', '', 'g'), '+')
                     FROM contacts c WHERE c.user_id = m.recipient_user_id),
                    m.recipient_user_id)
    FROM message_logs m
    WHERE m.bsp_msg_id IS NOT NULL AND m.delivered_at IS NULL
      AND m.sent_at < now() - make_interval(mins => minutes)
      AND (include_failed OR m.failed_at IS NULL)
    ORDER BY 4, 1
$$;

ANALYZE message_logs;
