-- 0002: analytics over the tables of 0001: delivery and read rates, latencies, undelivered
-- messages, engaged recipients, failures by error code, inbound traffic. Views and functions only
-- (no table, no index: nothing here costs the worker's writes anything). docs/analytics.md has
-- every column and example queries; scripts/stats prints them for a time window.
--
-- Conventions, the same in every view and function:
--   * A message's "sent at" is whatsapp_status->>'sent' when present, else message_logs.created_at
--     (the earliest event seen: e.g. a message that only ever reported `failed`).
--   * Every time is an absolute instant (timestamptz); a "day" is always the UTC calendar day,
--     whatever the session's TimeZone: (t AT TIME ZONE 'UTC')::date. Outbound messages are counted
--     on the day they were sent, inbound messages on the day of their `sent_at`.
--   * whatsapp_status times are 'YYYY-MM-DDTHH:MM:SSZ': the explicit zone makes ::timestamptz
--     independent of TimeZone. A value that is not an ISO-8601 time with a zone reads as missing
--     (NULL) instead of failing the whole query (rows written by hand may hold other text).
--   * Rates are percentages, numeric rounded to 2 decimals, NULL when the denominator is 0.
--     Latencies are seconds, numeric rounded to 2 decimals (averages and interpolated
--     percentile_cont percentiles of whole-second differences).
--   * Latencies come from whatsapp_status, where an implied key carries the implying event's time
--     (docs/rows.md): a message whose `delivered` event never came but whose `read` did has
--     delivered = read, and one whose `sent` event never came has sent = delivered (latency 0).
-- Applied once by `worker migrate`; CREATE OR REPLACE all the same, so the file can be re-run by
-- hand (e.g. after editing a view: a replaced view may only add columns at the end).

-- A whatsapp_status time as timestamptz; NULL when absent or not an ISO-8601 time with a zone.
-- The worker's own format takes the cheap LIKE (a regular expression per key and row would make
-- the views several times slower); other text must pass the regular expression. A value shaped
-- like the worker's format but impossible (month 13) still fails the cast, naming the value.
CREATE OR REPLACE FUNCTION pw_status_time(t text) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN t LIKE '____-__-__T__:__:__Z' THEN t::timestamptz
                WHEN t ~ ('^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[T ]([01]\d|2[0-3]):[0-5]\d:[0-5]\d'
                          '(\.\d+)?(Z|[+-]\d\d(:?\d\d)?)$') THEN t::timestamptz
           END
$$;

-- message_status_times: one row per outbound message (with a bsp_msg_id) with its status times as
-- timestamptz, its UTC sent day and its latencies. The base of the other message views; query it directly for
-- windows that are not whole days, e.g. the last 24 hours:
--   SELECT count(*) FILTER (WHERE delivered_at IS NOT NULL) * 100.0 / count(*)
--   FROM message_status_times WHERE sent_at > now() - interval '24 hours';
CREATE OR REPLACE VIEW message_status_times AS
SELECT m.bsp_msg_id,
       m.to_phone,
       m.current_status,
       t.sent_at,
       (t.sent_at AT TIME ZONE 'UTC')::date AS sent_day,
       t.delivered_at,
       t.read_at,
       t.failed_at,
       t.played_at,
       extract(epoch FROM t.delivered_at - t.sent_at)::float8 AS delivery_seconds,
       extract(epoch FROM t.read_at - t.delivered_at)::float8 AS read_seconds,
       extract(epoch FROM t.read_at - t.sent_at)::float8 AS read_after_sent_seconds,
       m.last_error
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
WHERE m.bsp_msg_id IS NOT NULL; -- as in the prototype's queries (its table may allow NULL)

-- message_status_daily: per UTC sent day, how many messages were sent, delivered, read and failed,
-- with the delivery rate (delivered / messages) and read rate (read / delivered) in percent: the
-- prototype guide's two rate queries, per day.
--   SELECT * FROM message_status_daily WHERE day >= '2024-10-01' AND day < '2024-10-08' ORDER BY day;
-- delivered counts messages that reached delivered, read or played; failed counts messages with a
-- `failed` status (a message that failed and was delivered later counts in both).
CREATE OR REPLACE VIEW message_status_daily AS
SELECT sent_day AS day,
       count(*) AS messages,
       count(delivered_at) AS delivered,
       count(read_at) AS read,
       count(failed_at) AS failed,
       round(count(delivered_at) * 100.0 / nullif(count(*), 0), 2) AS delivery_rate,
       round(count(read_at) * 100.0 / nullif(count(delivered_at), 0), 2) AS read_rate
FROM message_status_times
GROUP BY sent_day;

-- message_latency_daily: per UTC sent day, delivery latency (delivered - sent), read latency
-- (read - delivered) and time to read (read - sent) in seconds: average, median (p50) and p90, over
-- the messages that have both times (delivered, resp. read, counts them).
--   SELECT day, avg_delivery_seconds, p90_delivery_seconds FROM message_latency_daily ORDER BY day;
CREATE OR REPLACE VIEW message_latency_daily AS
SELECT sent_day AS day,
       count(delivery_seconds) AS delivered,
       round(avg(delivery_seconds)::numeric, 2) AS avg_delivery_seconds,
       round((percentile_cont(0.5) WITHIN GROUP (ORDER BY delivery_seconds))::numeric, 2) AS p50_delivery_seconds,
       round((percentile_cont(0.9) WITHIN GROUP (ORDER BY delivery_seconds))::numeric, 2) AS p90_delivery_seconds,
       count(read_seconds) AS read,
       round(avg(read_seconds)::numeric, 2) AS avg_read_seconds,
       round((percentile_cont(0.5) WITHIN GROUP (ORDER BY read_seconds))::numeric, 2) AS p50_read_seconds,
       round((percentile_cont(0.9) WITHIN GROUP (ORDER BY read_seconds))::numeric, 2) AS p90_read_seconds,
       round(avg(read_after_sent_seconds)::numeric, 2) AS avg_read_after_sent_seconds,
       round((percentile_cont(0.5) WITHIN GROUP (ORDER BY read_after_sent_seconds))::numeric, 2) AS p50_read_after_sent_seconds,
       round((percentile_cont(0.9) WITHIN GROUP (ORDER BY read_after_sent_seconds))::numeric, 2) AS p90_read_after_sent_seconds
FROM message_status_times
GROUP BY sent_day;

-- pw_message_summary(since, until): the columns of message_status_daily and message_latency_daily
-- for one window of sent times, since <= sent_at < until (one row; rates over the whole window, not
-- an average of daily rates). Pass instants with an explicit zone: a bare '2024-10-01' would be
-- midnight in the session's TimeZone.
--   SELECT * FROM pw_message_summary('2024-10-01T00:00Z', '2024-10-08T00:00Z');
--   SELECT * FROM pw_message_summary(now() - interval '24 hours', now());
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
$$;

-- pw_undelivered(minutes, include_failed): messages sent more than `minutes` minutes ago (sent_at <
-- now() - minutes) that have not been delivered (no delivered, read or played status), oldest
-- first; with include_failed => false, only those that did not fail either (still in flight or
-- lost). The prototype guide's "undelivered after 5 minutes":
--   SELECT * FROM pw_undelivered(5);
--   SELECT count(*) FROM pw_undelivered(60, include_failed => false);
CREATE OR REPLACE FUNCTION pw_undelivered(minutes int, include_failed boolean DEFAULT true)
RETURNS TABLE (bsp_msg_id text, to_phone text, current_status text, sent_at timestamptz,
               minutes_waiting bigint, last_error jsonb)
LANGUAGE sql STABLE AS $$
    SELECT t.bsp_msg_id, t.to_phone, t.current_status, t.sent_at,
           floor(extract(epoch FROM now() - t.sent_at) / 60)::bigint,
           t.last_error
    FROM message_status_times t
    WHERE t.delivered_at IS NULL
      AND t.sent_at < now() - make_interval(mins => minutes)
      AND (include_failed OR t.failed_at IS NULL)
    ORDER BY t.sent_at, t.bsp_msg_id
$$;

-- pw_engaged_recipients(since, until, min_messages): per recipient (to_phone; messages without one
-- are left out) of at least min_messages messages sent in since <= sent_at < until: messages,
-- delivered, read and read_rate = read / messages in percent; highest read rate first, then most
-- read, then to_phone. The prototype guide's "most engaged users" (its HAVING COUNT(*) > 5 is
-- min_messages => 6):
--   SELECT * FROM pw_engaged_recipients(now() - interval '7 days', now(), 6) LIMIT 10;
--   SELECT * FROM pw_engaged_recipients('2024-10-01T00:00Z', '2024-10-08T00:00Z') LIMIT 10;
CREATE OR REPLACE FUNCTION pw_engaged_recipients(since timestamptz, until timestamptz, min_messages int DEFAULT 5)
RETURNS TABLE (to_phone text, messages bigint, delivered bigint, read bigint, read_rate numeric)
LANGUAGE sql STABLE AS $$
    SELECT t.to_phone, count(*), count(t.delivered_at), count(t.read_at),
           round(count(t.read_at) * 100.0 / count(*), 2)
    FROM message_status_times t
    WHERE t.sent_at >= since AND t.sent_at < until AND t.to_phone IS NOT NULL
    GROUP BY t.to_phone
    HAVING count(*) >= min_messages
    ORDER BY 5 DESC, 4 DESC, 1
$$;

-- message_failures_daily: per UTC sent day (so the counts add up with message_status_daily.failed),
-- failed messages by error: code and title of each element of last_error (the errors of the
-- message's failed event, as stored in status_events.errors). title falls back to the error's
-- message, then AiSensy's reason; a failure without errors has code and title NULL. A message with
-- two errors counts under both.
--   SELECT error_code, error_title, sum(messages) FROM message_failures_daily
--   WHERE day >= '2024-10-01' AND day < '2024-10-08' GROUP BY 1, 2 ORDER BY 3 DESC;
CREATE OR REPLACE VIEW message_failures_daily AS
SELECT t.sent_day AS day,
       e.value->>'code' AS error_code,
       coalesce(e.value->>'title', e.value->>'message', e.value->>'reason') AS error_title,
       count(DISTINCT t.bsp_msg_id) AS messages
FROM message_status_times t
LEFT JOIN LATERAL jsonb_array_elements(
    CASE jsonb_typeof(t.last_error)
        WHEN 'array' THEN t.last_error
        WHEN 'object' THEN jsonb_build_array(t.last_error)
        ELSE '[]'::jsonb
    END) e ON true
WHERE t.failed_at IS NOT NULL
GROUP BY 1, 2, 3;

-- inbound_messages_daily: per UTC day of sent_at and msg_type (text, image, button, ...): how many
-- inbound messages arrived and from how many senders (from_phone, else from_user_id).
--   SELECT day, sum(messages) FROM inbound_messages_daily GROUP BY day ORDER BY day;
CREATE OR REPLACE VIEW inbound_messages_daily AS
SELECT (sent_at AT TIME ZONE 'UTC')::date AS day,
       msg_type,
       count(*) AS messages,
       count(DISTINCT coalesce(from_phone, from_user_id)) AS senders
FROM inbound_messages
GROUP BY 1, 2;
