-- 0007: the analytics views and functions find a time window through an index instead of reading
-- every message (docs/analytics.md, "Windows and indexes"; BENCHMARKS.md, "Analytics at 10 million
-- messages", has the times before and after and what the index costs every push).
--
-- Until now a window (`day >= ...`, `sent_at >= ...`) was a filter applied after parsing the
-- whatsapp_status of every row of message_logs: at 10 million messages every query read them all.
-- Two expression indexes now cover the windows:
--   message_logs_sent_day      a message's UTC sent day: message_status_times.sent_day, so the daily
--                              views' `day`, and (through an added condition on it) the windows of
--                              pw_message_summary and pw_engaged_recipients
--   inbound_messages_sent_day  an inbound message's UTC day (inbound_messages_daily's `day`)
-- One index on the day, not a second one on sent_at: each costs every write of a message_logs row
-- (BENCHMARKS.md measures both). A query of message_status_times over a window of sent_at finds it
-- through the index when it also names the days: WHERE sent_day >= '2024-10-01' AND sent_at >= ...
-- An index expression must be IMMUTABLE. text::timestamptz is only STABLE (its result may depend on
-- TimeZone and DateStyle), and so is pw_status_time. The index uses pw_status_instant: the same
-- answers, IMMUTABLE, reading the worker's own format 'YYYY-MM-DDTHH:MM:SSZ' with make_timestamp
-- and passing any other ISO-8601 time with an explicit zone (text written by hand) to
-- pw_zoned_time: the cast, declared IMMUTABLE, which is true of exactly the values it is given (a
-- time with an explicit zone and a year-first date reads the same under every TimeZone and
-- DateStyle). Being IMMUTABLE with one SELECT and no subquery, it is inlined, in the index and in
-- the view alike, so the two expressions match. Never change what it returns without REINDEX.
--
-- Every view and function keeps its name, columns and results; pw_status_time is unchanged.
-- message_status_times computes sent_day from message_logs' own columns (the indexed expression),
-- so a condition on it reaches the index; the times are still parsed once per row in the OFFSET 0
-- subquery (sent_day parses `sent` a second time, where it is used).
--
-- Costs: every write of a message_logs row (each status of a message) adds an index entry; every
-- inbound message one. A worker-shaped but impossible time ('2024-13-01T...') in
-- whatsapp_status->>'sent' of an existing row makes this migration fail naming the value (the views
-- failed on it already): correct the row, then migrate again.
-- On a large existing table, CREATE INDEX blocks writes (pushes answer 503 and Pub/Sub redelivers)
-- while it runs (BENCHMARKS.md has the time at 10 million messages). To avoid that, first create
-- the two functions below (the CREATE OR REPLACE FUNCTION statements of pw_zoned_time and
-- pw_status_instant), then build the indexes beforehand without blocking, outside a transaction (psql):
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS message_logs_sent_day ON message_logs (((coalesce(pw_status_instant(whatsapp_status->>'sent'), created_at) AT TIME ZONE 'UTC')::date));
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS inbound_messages_sent_day ON inbound_messages (((sent_at AT TIME ZONE 'UTC')::date));
-- this migration then finds them and only replaces the view and functions.

-- A time with an explicit zone, as timestamptz. Only for the text pw_status_instant's regular
-- expression accepted (see above why IMMUTABLE is true of it); not for general use.
CREATE OR REPLACE FUNCTION pw_zoned_time(t text) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT t::timestamptz
$$;

-- pw_status_time (0002), IMMUTABLE: the same answer for every text (the same error for a
-- worker-shaped but impossible time). Used where an index needs it: the sent day. pw_status_time
-- itself stays as it was for every other use: this one costs twice as much per call (it reads the
-- text seven times), about 0.7 us per row on the benchmark machine.
CREATE OR REPLACE FUNCTION pw_status_instant(t text) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN t LIKE '____-__-__T__:__:__Z'
                THEN make_timestamp(substr(t, 1, 4)::int, substr(t, 6, 2)::int, substr(t, 9, 2)::int,
                                    substr(t, 12, 2)::int, substr(t, 15, 2)::int, substr(t, 18, 2)::float8)
                     AT TIME ZONE 'UTC'
                WHEN t ~ ('^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[T ]([01]\d|2[0-3]):[0-5]\d:[0-5]\d'
                          '(\.\d+)?(Z|[+-]\d\d(:?\d\d)?)$') THEN pw_zoned_time(t)
           END
$$;

-- message_status_times: as in 0005 (same columns, same rows), but sent_day is an expression of
-- message_logs' own columns, the indexed one, so `sent_day >= ...` (and the daily views'
-- `day >= ...`, which is sent_day) reaches the index below.
CREATE OR REPLACE VIEW message_status_times AS
SELECT m.bsp_msg_id,
       m.to_phone,
       m.current_status,
       t.sent_at,
       (coalesce(pw_status_instant(m.whatsapp_status->>'sent'), m.created_at) AT TIME ZONE 'UTC')::date AS sent_day,
       t.delivered_at,
       t.read_at,
       t.failed_at,
       t.played_at,
       extract(epoch FROM t.delivered_at - t.sent_at)::float8 AS delivery_seconds,
       extract(epoch FROM t.read_at - t.delivered_at)::float8 AS read_seconds,
       extract(epoch FROM t.read_at - t.sent_at)::float8 AS read_after_sent_seconds,
       m.last_error,
       m.recipient_user_id,
       coalesce(m.to_phone,
                (SELECT nullif('+' || regexp_replace(c.wa_id, '[^0-9]', '', 'g'), '+')
                 FROM contacts c WHERE c.user_id = m.recipient_user_id),
                m.recipient_user_id) AS recipient
FROM message_logs m
CROSS JOIN LATERAL (
    -- OFFSET 0 keeps this a per-row subquery, so each time is parsed once per row, not once per
    -- use in the columns and aggregates above (3x faster); conditions on message_logs' own
    -- columns (bsp_msg_id = ...) still reach its indexes.
    SELECT coalesce(pw_status_time(m.whatsapp_status->>'sent'), m.created_at) AS sent_at,
           pw_status_time(m.whatsapp_status->>'delivered') AS delivered_at,
           pw_status_time(m.whatsapp_status->>'read') AS read_at,
           pw_status_time(m.whatsapp_status->>'failed') AS failed_at,
           pw_status_time(m.whatsapp_status->>'played') AS played_at
    OFFSET 0
) t
WHERE m.bsp_msg_id IS NOT NULL;

-- The expressions of message_status_times.sent_day and of inbound_messages_daily.day.
CREATE INDEX IF NOT EXISTS message_logs_sent_day
    ON message_logs (((coalesce(pw_status_instant(whatsapp_status->>'sent'), created_at) AT TIME ZONE 'UTC')::date));
CREATE INDEX IF NOT EXISTS inbound_messages_sent_day
    ON inbound_messages (((sent_at AT TIME ZONE 'UTC')::date));

-- pw_message_summary and pw_engaged_recipients: as in 0002 and 0005 (same columns, same rows), with
-- a condition on the UTC days of the window that adds nothing (a sent_at in [since, until) has its
-- day between since's and until's) but reaches the index.
CREATE OR REPLACE FUNCTION pw_message_summary(since timestamptz, until timestamptz)
RETURNS TABLE (messages bigint, delivered bigint, read bigint, failed bigint,
               delivery_rate numeric, read_rate numeric,
               avg_delivery_seconds numeric, p50_delivery_seconds numeric, p90_delivery_seconds numeric,
               avg_read_seconds numeric, p50_read_seconds numeric, p90_read_seconds numeric,
               avg_read_after_sent_seconds numeric, p50_read_after_sent_seconds numeric,
               p90_read_after_sent_seconds numeric)
LANGUAGE sql STABLE AS $$
    SELECT count(*),
           count(delivered_at),
           count(read_at),
           count(failed_at),
           round(count(delivered_at) * 100.0 / nullif(count(*), 0), 2),
           round(count(read_at) * 100.0 / nullif(count(delivered_at), 0), 2),
           round(avg(delivery_seconds)::numeric, 2),
           round((percentile_cont(0.5) WITHIN GROUP (ORDER BY delivery_seconds))::numeric, 2),
           round((percentile_cont(0.9) WITHIN GROUP (ORDER BY delivery_seconds))::numeric, 2),
           round(avg(read_seconds)::numeric, 2),
           round((percentile_cont(0.5) WITHIN GROUP (ORDER BY read_seconds))::numeric, 2),
           round((percentile_cont(0.9) WITHIN GROUP (ORDER BY read_seconds))::numeric, 2),
           round(avg(read_after_sent_seconds)::numeric, 2),
           round((percentile_cont(0.5) WITHIN GROUP (ORDER BY read_after_sent_seconds))::numeric, 2),
           round((percentile_cont(0.9) WITHIN GROUP (ORDER BY read_after_sent_seconds))::numeric, 2)
    FROM message_status_times
    WHERE sent_at >= since AND sent_at < until
      AND sent_day BETWEEN (since AT TIME ZONE 'UTC')::date AND (until AT TIME ZONE 'UTC')::date
$$;

CREATE OR REPLACE FUNCTION pw_engaged_recipients(since timestamptz, until timestamptz, min_messages int DEFAULT 5)
RETURNS TABLE (to_phone text, messages bigint, delivered bigint, read bigint, read_rate numeric, recipient text)
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN t.recipient LIKE '+%' THEN t.recipient END, count(*), count(t.delivered_at), count(t.read_at),
           round(count(t.read_at) * 100.0 / count(*), 2), t.recipient
    FROM message_status_times t
    WHERE t.sent_at >= since AND t.sent_at < until AND t.recipient IS NOT NULL
      AND t.sent_day BETWEEN (since AT TIME ZONE 'UTC')::date AND (until AT TIME ZONE 'UTC')::date
    GROUP BY t.recipient
    HAVING count(*) >= min_messages
    ORDER BY 5 DESC, 4 DESC, 6
$$;

-- The statistics of the new index expressions, which the planner needs to choose the indexes (a
-- sample of 30000 rows: seconds, however large the tables are).
ANALYZE message_logs;
ANALYZE inbound_messages;
