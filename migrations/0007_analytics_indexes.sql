-- 0007: the analytics views and functions find a time window through an index instead of reading
-- every message (docs/analytics.md, "What answers a window fast"; BENCHMARKS.md, "Analytics at 10
-- million messages", has the times before and after and what the indexes cost every push).
--
-- Until now a window (`sent_at >= ...`, `day >= ...`) was a filter applied after parsing the
-- whatsapp_status of every row of message_logs: at 10 million messages every query read them all.
-- Three expression indexes now cover the windows:
--   message_logs_sent_at       a message's sent at (message_status_times.sent_at, the functions' windows)
--   message_logs_sent_day      its UTC sent day (the daily views' `day`)
--   inbound_messages_sent_day  an inbound message's UTC day (inbound_messages_daily's `day`)
-- An index expression must be IMMUTABLE. text::timestamptz is only STABLE (its result may depend on
-- TimeZone and DateStyle), so pw_status_time now reads the worker's own format,
-- 'YYYY-MM-DDTHH:MM:SSZ', with make_timestamp (IMMUTABLE, as fast as the cast), and passes any other
-- ISO-8601 time with an explicit zone (text written by hand) to pw_zoned_time: the cast, declared
-- IMMUTABLE, which is true of exactly the values it is given (a time with an explicit zone and a
-- year-first date reads the same under every TimeZone and DateStyle). Its results are unchanged,
-- and being IMMUTABLE (no subquery, one SELECT) it is still inlined into the views.
-- Never change what pw_status_time returns without rebuilding the indexes (REINDEX), which hold it.
--
-- Nothing else changes: every view and function keeps its name, columns and results. The one view
-- rewritten, message_status_times, computes sent_at and sent_day from message_logs' own columns (the
-- indexed expressions), so a condition on them reaches the index; the other times are still parsed
-- once per row in the OFFSET 0 subquery.
--
-- Costs: every write of a message_logs row (each status of a message) adds an entry to two more
-- indexes; every inbound message to one. A worker-shaped but impossible time ('2024-13-01T...') in
-- whatsapp_status->>'sent' of an existing row makes this migration fail naming the value (the views
-- failed on it already): correct the row, then migrate again.
-- On a large existing table, CREATE INDEX blocks writes (pushes answer 503 and Pub/Sub redelivers)
-- while it runs, about a minute per 10 million messages (BENCHMARKS.md). To avoid that, first
-- create the functions below (the two CREATE OR REPLACE FUNCTION statements), then build the
-- indexes beforehand without blocking, outside a transaction (e.g. in psql):
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS message_logs_sent_at ON message_logs ((coalesce(pw_status_time(whatsapp_status->>'sent'), created_at)));
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS message_logs_sent_day ON message_logs (((coalesce(pw_status_time(whatsapp_status->>'sent'), created_at) AT TIME ZONE 'UTC')::date));
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS inbound_messages_sent_day ON inbound_messages (((sent_at AT TIME ZONE 'UTC')::date));
-- this migration then finds them and does nothing more than replace the view and pw_undelivered.

-- A time with an explicit zone, as timestamptz. Only for the text pw_status_time's regular
-- expression accepted (see above why IMMUTABLE is true of it); not for general use.
CREATE OR REPLACE FUNCTION pw_zoned_time(t text) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT t::timestamptz
$$;

-- A whatsapp_status time as timestamptz; NULL when absent or not an ISO-8601 time with a zone (as in
-- 0002). A value in the worker's shape but impossible (month 13) still fails, naming the value.
CREATE OR REPLACE FUNCTION pw_status_time(t text) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN t LIKE '____-__-__T__:__:__Z'
                THEN make_timestamp(substr(t, 1, 4)::int, substr(t, 6, 2)::int, substr(t, 9, 2)::int,
                                    substr(t, 12, 2)::int, substr(t, 15, 2)::int, substr(t, 18, 2)::float8)
                     AT TIME ZONE 'UTC'
                WHEN t ~ ('^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[T ]([01]\d|2[0-3]):[0-5]\d:[0-5]\d'
                          '(\.\d+)?(Z|[+-]\d\d(:?\d\d)?)$') THEN pw_zoned_time(t)
           END
$$;

-- message_status_times: as in 0005 (same columns, same rows). sent_at and sent_day are expressions of
-- message_logs' columns (the lateral subquery s is flattened into them), so `sent_at >= ...` and
-- `sent_day >= ...` (and the daily views' `day >= ...`, which is sent_day) use the indexes below.
CREATE OR REPLACE VIEW message_status_times AS
SELECT m.bsp_msg_id,
       m.to_phone,
       m.current_status,
       s.sent_at,
       (s.sent_at AT TIME ZONE 'UTC')::date AS sent_day,
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
    SELECT coalesce(pw_status_time(m.whatsapp_status->>'sent'), m.created_at) AS sent_at
) s
CROSS JOIN LATERAL (
    -- OFFSET 0 keeps this a per-row subquery, so each time is parsed once per row, not once per
    -- use in the columns and aggregates above (3x faster).
    SELECT s.sent_at,
           pw_status_time(m.whatsapp_status->>'delivered') AS delivered_at,
           pw_status_time(m.whatsapp_status->>'read') AS read_at,
           pw_status_time(m.whatsapp_status->>'failed') AS failed_at,
           pw_status_time(m.whatsapp_status->>'played') AS played_at
    OFFSET 0
) t
WHERE m.bsp_msg_id IS NOT NULL; -- as in the prototype's queries (its table may allow NULL)

-- The expressions of message_status_times.sent_at and .sent_day, and of inbound_messages_daily.day.
CREATE INDEX IF NOT EXISTS message_logs_sent_at
    ON message_logs ((coalesce(pw_status_time(whatsapp_status->>'sent'), created_at)));
CREATE INDEX IF NOT EXISTS message_logs_sent_day
    ON message_logs (((coalesce(pw_status_time(whatsapp_status->>'sent'), created_at) AT TIME ZONE 'UTC')::date));
CREATE INDEX IF NOT EXISTS inbound_messages_sent_day
    ON inbound_messages (((sent_at AT TIME ZONE 'UTC')::date));

-- pw_undelivered: as in 0005 (same columns, same rows, same order). Ordered by sent_at as it was, the
-- planner would read all of message_logs_sent_at in its order (to skip a sort) and the table with
-- it; sorting by the same times plus a zero interval, which no index holds, lets it read the table
-- and sort only the few undelivered messages (4x faster at 1 million messages). A window on
-- sent_at given by the caller (WHERE sent_at >= ...) still reaches the index.
CREATE OR REPLACE FUNCTION pw_undelivered(minutes int, include_failed boolean DEFAULT true)
RETURNS TABLE (bsp_msg_id text, to_phone text, current_status text, sent_at timestamptz,
               minutes_waiting bigint, last_error jsonb, recipient text)
LANGUAGE sql STABLE AS $$
    SELECT t.bsp_msg_id, t.to_phone, t.current_status, t.sent_at,
           floor(extract(epoch FROM now() - t.sent_at) / 60)::bigint,
           t.last_error, t.recipient
    FROM message_status_times t
    WHERE t.delivered_at IS NULL
      AND t.sent_at < now() - make_interval(mins => minutes)
      AND (include_failed OR t.failed_at IS NULL)
    ORDER BY t.sent_at + interval '0 seconds', t.bsp_msg_id
$$;

-- The statistics of the new index expressions, which the planner needs to choose the indexes (a
-- sample of 30000 rows: seconds, however large the tables are).
ANALYZE message_logs;
ANALYZE inbound_messages;
