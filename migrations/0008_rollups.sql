-- 0008: daily roll-ups of message_logs, kept by the database itself, so that the daily views answer a
-- 30-day window at 10 million messages within a second, and pw_message_summary reads the whole days
-- of its window from them (all of them read every message of the window before: 3-24 s;
-- BENCHMARKS.md, "Analytics at 10 million messages", has each before and after).
-- docs/analytics.md ("Roll-ups") says what each answer is made of.
--
-- What a message_logs row adds to the roll-ups is a function of that row alone (pw_rollup_share: its
-- UTC sent day, whether it was delivered, read, failed, its three latencies, its errors). Statement
-- triggers on message_logs, with the statement's old and new rows (transition tables), add the
-- shares of the new rows and subtract those of the old: whatever writes the table (the worker's
-- statement, a redrive, an UPDATE by hand), in any order, redelivered or not, the roll-ups stay the
-- sum of the shares of the rows there are. They are maintained in the writing transaction, so they
-- commit or roll back with it.
--
-- Concurrent writers: each roll-up row has a `slot` (the writing backend's pid modulo 16), and the
-- views sum the slots. Two connections writing at once (DB_CONNECTIONS, or two Cloud Run
-- instances) then update different rows of today's roll-up instead of waiting for each other's
-- commit on one row; each statement updates its roll-up rows in key order.
--
-- Latencies (delivered - sent, read - delivered, read - sent) are kept as histograms: per day and
-- kind, how many latencies fell in each bucket and their exact sum. Buckets: one per whole second
-- from -128 s to 128 s, then 1% wide (pw_latency_bucket). Averages are exact (sum / count). p50 and
-- p90 (pw_bucket_percentile) are percentile_cont over the histogram, each bucket standing for its
-- count of latencies at its mean: exact where the latencies around the percentile are whole seconds
-- under 128 s (WhatsApp's times are whole seconds: typically every delivery latency), otherwise
-- within a bucket's width (1% of the value). message_status_times still gives each message's exact
-- latencies.
--
-- Cost: each write statement of message_logs runs one more statement (BENCHMARKS.md measures it);
-- the partial index below adds an entry for each message while it is undelivered.
-- Applied in place: on an existing database the roll-ups are computed from the rows there are, in
-- chunks of 50,000 messages, while writes to message_logs wait (the pushes answer 503 and Pub/Sub
-- redelivers them; BENCHMARKS.md has the time at 10 million messages).

-- ---- the share of one message ----

-- The bucket of a latency in seconds: whole seconds in (-128, 128), then buckets 1% wide; ordered
-- like the latencies. NULL for NULL.
CREATE OR REPLACE FUNCTION pw_latency_bucket(s float8) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN s > -128 AND s < 128 THEN floor(s)::int
                WHEN s >= 128 THEN 128 + floor(ln(s / 128) / ln(1.01))::int
                WHEN s <= -128 THEN -129 - floor(ln(-s / 128) / ln(1.01))::int
           END
$$;

-- What one message_logs row counts for: as message_status_times computes it (sent_day, delivered_at,
-- read_at, failed_at IS NOT NULL; the latencies in exact seconds). One row. Declared as returning a
-- table so that PostgreSQL inlines it where it is joined LATERAL to many rows (a function returning
-- one record would be called, with its own executor start, once per row: 20 times slower).
CREATE OR REPLACE FUNCTION pw_rollup_share(whatsapp_status jsonb, created_at timestamptz)
RETURNS TABLE (day date, delivered int, read int, failed int,
               delivery numeric, read_s numeric, read_after_sent numeric)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (coalesce(t.s, created_at) AT TIME ZONE 'UTC')::date,
           (t.d IS NOT NULL)::int, (t.r IS NOT NULL)::int, (t.f IS NOT NULL)::int,
           extract(epoch FROM t.d - coalesce(t.s, created_at)),
           extract(epoch FROM t.r - t.d),
           extract(epoch FROM t.r - coalesce(t.s, created_at))
    FROM (SELECT pw_status_instant(whatsapp_status->>'sent') AS s,
                 pw_status_instant(whatsapp_status->>'delivered') AS d,
                 pw_status_instant(whatsapp_status->>'read') AS r,
                 pw_status_instant(whatsapp_status->>'failed') AS f) t
$$;

-- The errors a failed message counts under in message_failures_daily: each distinct (code, title)
-- of last_error (title falling back to message, then reason), or one (NULL, NULL) without errors.
CREATE OR REPLACE FUNCTION pw_failure_keys(last_error jsonb)
RETURNS TABLE (error_code text, error_title text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT DISTINCT e.value->>'code', coalesce(e.value->>'title', e.value->>'message', e.value->>'reason')
    FROM (SELECT 1) one
    LEFT JOIN LATERAL jsonb_array_elements(
        CASE jsonb_typeof(last_error)
            WHEN 'array' THEN last_error
            WHEN 'object' THEN jsonb_build_array(last_error)
            ELSE '[]'::jsonb
        END) e ON true
$$;

-- ---- the roll-ups ----
CREATE TABLE IF NOT EXISTS message_status_rollup (
    day       date     NOT NULL,
    slot      smallint NOT NULL,
    messages  bigint   NOT NULL,
    delivered bigint   NOT NULL,
    read      bigint   NOT NULL,
    failed    bigint   NOT NULL,
    PRIMARY KEY (day, slot)
);
-- kind: 1 delivery (delivered - sent), 2 read (read - delivered), 3 read after sent (read - sent).
CREATE TABLE IF NOT EXISTS message_latency_rollup (
    day     date     NOT NULL,
    kind    smallint NOT NULL,
    bucket  int      NOT NULL,
    slot    smallint NOT NULL,
    n       bigint   NOT NULL,
    total   numeric  NOT NULL, -- the sum of the latencies, in seconds
    PRIMARY KEY (day, kind, bucket, slot)
);
-- error_key: the (code, title) pair as JSON text, a key where either may be NULL.
CREATE TABLE IF NOT EXISTS message_failure_rollup (
    day         date     NOT NULL,
    error_key   text     NOT NULL,
    slot        smallint NOT NULL,
    error_code  text,
    error_title text,
    messages    bigint   NOT NULL,
    PRIMARY KEY (day, error_key, slot)
);

-- One row's share with its sign: +1 for a row that is now there, -1 for one that was.
DO $$
BEGIN
    IF to_regtype('pw_rollup_change') IS NULL THEN
        CREATE TYPE pw_rollup_change AS (sign int, whatsapp_status jsonb, created_at timestamptz, last_error jsonb);
    END IF;
END
$$;

-- Adds the signed shares of a set of rows to the roll-ups (rows of a statement's old and new
-- message_logs rows, or a chunk of existing rows). Updates each roll-up in key order.
-- PL/pgSQL, not SQL: the body of an SQL function is parsed and planned again at every call (1-2 ms
-- for this statement, paid by the insert and the update trigger of every group of pushes: c64
-- did 26% fewer pushes/s in make bench), where PL/pgSQL keeps its plan for the session.
CREATE OR REPLACE FUNCTION pw_rollup_add(changes pw_rollup_change[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    WITH c AS MATERIALIZED (
        SELECT x.sign, x.last_error, s.*
        FROM unnest(changes) x
        CROSS JOIN LATERAL pw_rollup_share(x.whatsapp_status, x.created_at) s
    ), st AS (
        INSERT INTO message_status_rollup AS r (day, slot, messages, delivered, read, failed)
        SELECT c.day, (pg_backend_pid() % 16)::smallint, sum(c.sign), sum(c.sign * c.delivered),
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
        SELECT c.day, v.kind, pw_latency_bucket(v.s::float8), (pg_backend_pid() % 16)::smallint,
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
    SELECT c.day, jsonb_build_array(e.error_code, e.error_title)::text, (pg_backend_pid() % 16)::smallint,
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

CREATE OR REPLACE FUNCTION pw_rollup_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pw_rollup_add(ARRAY(
            SELECT ROW(1, n.whatsapp_status, n.created_at, n.last_error)::pw_rollup_change
            FROM pw_new n WHERE n.bsp_msg_id IS NOT NULL));
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM pw_rollup_add(ARRAY(
            SELECT ROW(-1, o.whatsapp_status, o.created_at, o.last_error)::pw_rollup_change
            FROM pw_old o WHERE o.bsp_msg_id IS NOT NULL
            UNION ALL
            SELECT ROW(1, n.whatsapp_status, n.created_at, n.last_error)::pw_rollup_change
            FROM pw_new n WHERE n.bsp_msg_id IS NOT NULL));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pw_rollup_add(ARRAY(
            SELECT ROW(-1, o.whatsapp_status, o.created_at, o.last_error)::pw_rollup_change
            FROM pw_old o WHERE o.bsp_msg_id IS NOT NULL));
    ELSE -- TRUNCATE
        DELETE FROM message_status_rollup;
        DELETE FROM message_latency_rollup;
        DELETE FROM message_failure_rollup;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS message_logs_rollup_insert ON message_logs;
DROP TRIGGER IF EXISTS message_logs_rollup_update ON message_logs;
DROP TRIGGER IF EXISTS message_logs_rollup_delete ON message_logs;
DROP TRIGGER IF EXISTS message_logs_rollup_truncate ON message_logs;
CREATE TRIGGER message_logs_rollup_insert AFTER INSERT ON message_logs
    REFERENCING NEW TABLE AS pw_new FOR EACH STATEMENT EXECUTE FUNCTION pw_rollup_trigger();
CREATE TRIGGER message_logs_rollup_update AFTER UPDATE ON message_logs
    REFERENCING OLD TABLE AS pw_old NEW TABLE AS pw_new FOR EACH STATEMENT EXECUTE FUNCTION pw_rollup_trigger();
CREATE TRIGGER message_logs_rollup_delete AFTER DELETE ON message_logs
    REFERENCING OLD TABLE AS pw_old FOR EACH STATEMENT EXECUTE FUNCTION pw_rollup_trigger();
CREATE TRIGGER message_logs_rollup_truncate AFTER TRUNCATE ON message_logs
    FOR EACH STATEMENT EXECUTE FUNCTION pw_rollup_trigger();

-- The rows there are, once (CREATE TRIGGER above already holds the lock that makes writers wait,
-- so no row escapes both this and the triggers). Skipped when the roll-ups hold rows (a re-run).
DO $$
DECLARE
    chunk pw_rollup_change[];
    last text;
    done bigint := 0;
BEGIN
    IF EXISTS (SELECT 1 FROM message_status_rollup) OR EXISTS (SELECT 1 FROM message_latency_rollup)
       OR EXISTS (SELECT 1 FROM message_failure_rollup) THEN
        RETURN;
    END IF;
    LOOP
        -- two statements, so that each is a range of the unique index on bsp_msg_id
        IF last IS NULL THEN
            SELECT array_agg(ROW(1, m.whatsapp_status, m.created_at, m.last_error)::pw_rollup_change), max(m.bsp_msg_id)
            INTO chunk, last
            FROM (SELECT bsp_msg_id, whatsapp_status, created_at, last_error FROM message_logs
                  WHERE bsp_msg_id IS NOT NULL ORDER BY bsp_msg_id LIMIT 50000) m;
        ELSE
            SELECT array_agg(ROW(1, m.whatsapp_status, m.created_at, m.last_error)::pw_rollup_change), max(m.bsp_msg_id)
            INTO chunk, last
            FROM (SELECT bsp_msg_id, whatsapp_status, created_at, last_error FROM message_logs
                  WHERE bsp_msg_id > last ORDER BY bsp_msg_id LIMIT 50000) m;
        END IF;
        EXIT WHEN chunk IS NULL;
        PERFORM pw_rollup_add(chunk);
        done := done + cardinality(chunk);
        IF done % 1000000 = 0 THEN
            RAISE NOTICE '0008: roll-ups of % messages', done;
        END IF;
    END LOOP;
END
$$;

-- ---- percentiles over a histogram ----

-- percentile_cont(p) over the latencies a histogram stands for: ns[i] latencies at means[i], the
-- buckets in order. The same interpolation as percentile_cont (between the values at positions
-- floor and ceil of p * (count - 1)). NULL for an empty histogram.
CREATE OR REPLACE FUNCTION pw_bucket_percentile(p float8, means float8[], ns bigint[]) RETURNS float8
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    total bigint := 0;
    pos float8;
    lo bigint;
    hi bigint;
    acc bigint := 0;
    lo_v float8;
    hi_v float8;
BEGIN
    IF means IS NULL THEN
        RETURN NULL;
    END IF;
    FOR i IN 1 .. cardinality(ns) LOOP
        IF ns[i] > 0 THEN
            total := total + ns[i];
        END IF;
    END LOOP;
    IF total = 0 THEN
        RETURN NULL;
    END IF;
    pos := p * (total - 1);
    lo := floor(pos);
    hi := ceil(pos);
    FOR i IN 1 .. cardinality(ns) LOOP
        CONTINUE WHEN ns[i] <= 0;
        IF lo_v IS NULL AND lo < acc + ns[i] THEN
            lo_v := means[i];
        END IF;
        IF hi < acc + ns[i] THEN
            hi_v := means[i];
            EXIT;
        END IF;
        acc := acc + ns[i];
    END LOOP;
    RETURN lo_v + (pos - lo) * (hi_v - lo_v);
END
$$;

-- The latencies of whole UTC days [first_day, last_day] by kind, from the roll-up: count, exact
-- average, p50 and p90 (the buckets of every slot merged).
CREATE OR REPLACE FUNCTION pw_latency_days(first_day date, last_day date)
RETURNS TABLE (kind smallint, n bigint, mean numeric, p50 float8, p90 float8)
LANGUAGE sql STABLE AS $$
    SELECT b.kind, sum(b.n)::bigint, sum(b.total) / sum(b.n),
           pw_bucket_percentile(0.5, array_agg((b.total / b.n)::float8 ORDER BY b.bucket), array_agg(b.n ORDER BY b.bucket)),
           pw_bucket_percentile(0.9, array_agg((b.total / b.n)::float8 ORDER BY b.bucket), array_agg(b.n ORDER BY b.bucket))
    FROM (SELECT r.kind, r.bucket, sum(r.n)::bigint AS n, sum(r.total) AS total
          FROM message_latency_rollup r
          WHERE r.day BETWEEN first_day AND last_day
          GROUP BY r.kind, r.bucket
          HAVING sum(r.n) > 0) b
    GROUP BY b.kind
$$;

-- ---- the views and functions, from the roll-ups (same names, columns and meaning) ----

CREATE OR REPLACE VIEW message_status_daily AS
SELECT day,
       sum(messages)::bigint AS messages,
       sum(delivered)::bigint AS delivered,
       sum(read)::bigint AS read,
       sum(failed)::bigint AS failed,
       round(sum(delivered) * 100.0 / nullif(sum(messages), 0), 2) AS delivery_rate,
       round(sum(read) * 100.0 / nullif(sum(delivered), 0), 2) AS read_rate
FROM message_status_rollup
GROUP BY day
HAVING sum(messages) > 0;

CREATE OR REPLACE VIEW message_latency_daily AS
SELECT d.day,
       coalesce(l.n1, 0) AS delivered,
       round(l.mean1, 2) AS avg_delivery_seconds,
       round(l.p50_1::numeric, 2) AS p50_delivery_seconds,
       round(l.p90_1::numeric, 2) AS p90_delivery_seconds,
       coalesce(l.n2, 0) AS read,
       round(l.mean2, 2) AS avg_read_seconds,
       round(l.p50_2::numeric, 2) AS p50_read_seconds,
       round(l.p90_2::numeric, 2) AS p90_read_seconds,
       round(l.mean3, 2) AS avg_read_after_sent_seconds,
       round(l.p50_3::numeric, 2) AS p50_read_after_sent_seconds,
       round(l.p90_3::numeric, 2) AS p90_read_after_sent_seconds
FROM (SELECT day FROM message_status_rollup GROUP BY day HAVING sum(messages) > 0) d
CROSS JOIN LATERAL (
    SELECT max(k.n) FILTER (WHERE k.kind = 1) AS n1, max(k.mean) FILTER (WHERE k.kind = 1) AS mean1,
           max(k.p50) FILTER (WHERE k.kind = 1) AS p50_1, max(k.p90) FILTER (WHERE k.kind = 1) AS p90_1,
           max(k.n) FILTER (WHERE k.kind = 2) AS n2, max(k.mean) FILTER (WHERE k.kind = 2) AS mean2,
           max(k.p50) FILTER (WHERE k.kind = 2) AS p50_2, max(k.p90) FILTER (WHERE k.kind = 2) AS p90_2,
           max(k.mean) FILTER (WHERE k.kind = 3) AS mean3,
           max(k.p50) FILTER (WHERE k.kind = 3) AS p50_3, max(k.p90) FILTER (WHERE k.kind = 3) AS p90_3
    FROM pw_latency_days(d.day, d.day) k
) l;

CREATE OR REPLACE VIEW message_failures_daily AS
SELECT day, error_code, error_title, sum(messages)::bigint AS messages
FROM message_failure_rollup
GROUP BY day, error_key, error_code, error_title
HAVING sum(messages) > 0;

-- pw_message_summary: the whole UTC days of the window from the roll-ups, the parts of days at its
-- edges from the messages themselves; a window without a whole day (the last 24 hours) entirely
-- from the messages, exactly as before.
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
        WHERE t.sent_at >= since AND t.sent_at < until
          AND t.sent_day BETWEEN since_day AND until_day;
        RETURN;
    END IF;
    RETURN QUERY
    WITH edge AS MATERIALIZED (
        SELECT s.*
        FROM message_logs m
        CROSS JOIN LATERAL pw_rollup_share(m.whatsapp_status, m.created_at) s
        WHERE m.bsp_msg_id IS NOT NULL
          -- message_status_times' sent_day and sent_at, written out so that the index is used
          AND ((coalesce(pw_status_instant(m.whatsapp_status->>'sent'), m.created_at) AT TIME ZONE 'UTC')::date
                   BETWEEN since_day AND first_day - 1
               OR (coalesce(pw_status_instant(m.whatsapp_status->>'sent'), m.created_at) AT TIME ZONE 'UTC')::date = until_day)
          AND coalesce(pw_status_instant(m.whatsapp_status->>'sent'), m.created_at) >= since
          AND coalesce(pw_status_instant(m.whatsapp_status->>'sent'), m.created_at) < until
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

-- pw_undelivered: as in 0005 (same columns and rows), found through a partial index of the
-- messages without a delivered time, by sent time, instead of reading every message; with
-- include_failed => false (a constant, once the SQL function is inlined) through one of those
-- that have no failed time either, so the failed ones (most of the undelivered) are not read and
-- filtered out one by one.
CREATE INDEX IF NOT EXISTS message_logs_undelivered
    ON message_logs ((coalesce(pw_status_instant(whatsapp_status->>'sent'), created_at)))
    WHERE bsp_msg_id IS NOT NULL AND pw_status_instant(whatsapp_status->>'delivered') IS NULL;
CREATE INDEX IF NOT EXISTS message_logs_pending
    ON message_logs ((coalesce(pw_status_instant(whatsapp_status->>'sent'), created_at)))
    WHERE bsp_msg_id IS NOT NULL AND pw_status_instant(whatsapp_status->>'delivered') IS NULL
      AND pw_status_instant(whatsapp_status->>'failed') IS NULL;

CREATE OR REPLACE FUNCTION pw_undelivered(minutes int, include_failed boolean DEFAULT true)
RETURNS TABLE (bsp_msg_id text, to_phone text, current_status text, sent_at timestamptz,
               minutes_waiting bigint, last_error jsonb, recipient text)
LANGUAGE sql STABLE AS $$
    SELECT m.bsp_msg_id, m.to_phone, m.current_status,
           coalesce(pw_status_instant(m.whatsapp_status->>'sent'), m.created_at),
           floor(extract(epoch FROM now() - coalesce(pw_status_instant(m.whatsapp_status->>'sent'), m.created_at)) / 60)::bigint,
           m.last_error,
           coalesce(m.to_phone,
                    (SELECT nullif('+' || regexp_replace(c.wa_id, '[^0-9]', '', 'g'), '+')
                     FROM contacts c WHERE c.user_id = m.recipient_user_id),
                    m.recipient_user_id)
    FROM message_logs m
    WHERE m.bsp_msg_id IS NOT NULL AND pw_status_instant(m.whatsapp_status->>'delivered') IS NULL
      AND coalesce(pw_status_instant(m.whatsapp_status->>'sent'), m.created_at) < now() - make_interval(mins => minutes)
      AND (include_failed OR pw_status_instant(m.whatsapp_status->>'failed') IS NULL)
    ORDER BY 4, 1
$$;

ANALYZE message_status_rollup;
ANALYZE message_latency_rollup;
ANALYZE message_failure_rollup;
