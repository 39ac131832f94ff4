-- 0010: a window of message_status_times that also names its days, and a window of
-- inbound_messages_daily, read one index alone; the view's latencies are computed without numeric
-- arithmetic (BENCHMARKS.md, "A window reads the index alone", has the times before and after and
-- the cost to the writes; docs/analytics.md, "Windows read the index alone").
--
-- At 10 million messages a 30-day window of message_status_times, queried as docs/analytics.md
-- advised since 0007 (`sent_day >= <first day>` beside `sent_at >= ...`), took 1.4-2.0 s: 0009's
-- index message_logs_sent_at found the window's 3.3 million entries without the heap, but then
--   - computed sent_day, (sent_at AT TIME ZONE 'UTC')::date, for each of them to check the day
--     condition (a filter after the index), and
--   - computed each latency as extract(epoch FROM interval), which returns numeric (an allocation and
--     a conversion to text and back per value, for the ::float8 the view returns).
-- Each cost about as much as reading the index itself. inbound_messages_daily over 30 days (670,000
-- inbound messages) took 0.9-2.1 s: 0007's index found the rows' day, then read each row from the
-- heap, and counted the distinct senders of each day and type by sorting them in the database's
-- collation (strcoll per comparison). Now:
--   message_logs_sent_at  keyed by (sent_at, sent_day): the day is stored in the index, so a day
--                         condition is checked there, as one more key, with nothing computed; the
--                         same three times beside it (INCLUDE), the same rows (bsp_msg_id IS NOT NULL).
--                         Same name, made again: the old one goes once the new one is there.
--   inbound_messages_sent_day  keyed by (day, msg_type), the view's groups in the view's order, with
--                         sent_at and the sender's two identities beside them: the view reads it alone.
--                         Same name, made again.
--   message_status_times  the same columns, rows and types; delivery_seconds, read_seconds and
--                         read_after_sent_seconds are date_part('epoch', ...) (double precision
--                         directly). The same values as extract(...)::float8 for every interval
--                         shorter than a day, and for longer ones whose times are whole seconds (every
--                         time a WhatsApp event carries); an interval of a day or more with a
--                         fraction of a second (a `sent` time taken from created_at) may differ in
--                         its last bit (date_part adds the days after dividing the rest).
--   inbound_messages_daily  the same columns and rows; senders are told apart byte by byte (COLLATE
--                         "C"), which is what equal means in any deterministic collation (a
--                         database's default collation always is one): the same counts, sorted
--                         without strcoll.
--
-- Costs: each write of a message_logs row computes the UTC day once more for its index, whose entry
-- is 8 bytes longer; each inbound message's index entry carries its sender (about 40 bytes more).
-- On a large existing table CREATE INDEX blocks writes to that table while it runs (pushes answer
-- 503 and Pub/Sub redelivers them; 18 s for both at 10 million messages and 2 million inbound on the
-- benchmark's server, BENCHMARKS.md). To avoid that, build the indexes beforehand without blocking,
-- outside a transaction (psql):
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS message_logs_sent_at_day ON message_logs (sent_at, ((sent_at AT TIME ZONE 'UTC')::date)) INCLUDE (delivered_at, read_at, failed_at) WHERE bsp_msg_id IS NOT NULL;
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS inbound_messages_day_type ON inbound_messages (((sent_at AT TIME ZONE 'UTC')::date), msg_type) INCLUDE (sent_at, from_phone, from_user_id);
-- this migration then finds them, drops the old indexes and gives the new ones their names. A
-- CONCURRENTLY build that failed leaves an invalid index of that name behind: this migration drops
-- it and builds the index itself.

DO $$
DECLARE
    ix text;
BEGIN
    FOREACH ix IN ARRAY ARRAY['message_logs_sent_at_day', 'inbound_messages_day_type'] LOOP
        IF EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass(ix) AND NOT indisvalid) THEN
            RAISE NOTICE '0010: % is invalid (a CONCURRENTLY build that failed): dropped, built again', ix;
            EXECUTE format('DROP INDEX %I', ix);
        END IF;
    END LOOP;
END
$$;

CREATE INDEX IF NOT EXISTS message_logs_sent_at_day ON message_logs (sent_at, ((sent_at AT TIME ZONE 'UTC')::date))
    INCLUDE (delivered_at, read_at, failed_at) WHERE bsp_msg_id IS NOT NULL;
DROP INDEX IF EXISTS message_logs_sent_at;
ALTER INDEX message_logs_sent_at_day RENAME TO message_logs_sent_at;

CREATE INDEX IF NOT EXISTS inbound_messages_day_type ON inbound_messages (((sent_at AT TIME ZONE 'UTC')::date), msg_type)
    INCLUDE (sent_at, from_phone, from_user_id);
DROP INDEX IF EXISTS inbound_messages_sent_day;
ALTER INDEX inbound_messages_day_type RENAME TO inbound_messages_sent_day;

-- message_status_times: as in 0009 (same columns, rows and types), its latencies in double precision.
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
       date_part('epoch', m.delivered_at - m.sent_at) AS delivery_seconds,
       date_part('epoch', m.read_at - m.delivered_at) AS read_seconds,
       date_part('epoch', m.read_at - m.sent_at) AS read_after_sent_seconds,
       m.last_error,
       m.recipient_user_id,
       coalesce(m.to_phone,
                (SELECT nullif('+' || regexp_replace(c.wa_id, '[^0-9]', '', 'g'), '+')
                 FROM contacts c WHERE c.user_id = m.recipient_user_id),
                m.recipient_user_id) AS recipient
FROM message_logs m
WHERE m.bsp_msg_id IS NOT NULL;

-- inbound_messages_daily: as in 0005 (same columns and rows), its senders told apart byte by byte.
CREATE OR REPLACE VIEW inbound_messages_daily AS
SELECT (i.sent_at AT TIME ZONE 'UTC')::date AS day,
       i.msg_type,
       count(*) AS messages,
       count(DISTINCT coalesce(i.from_phone,
                               (SELECT nullif('+' || regexp_replace(c.wa_id, '[^0-9]', '', 'g'), '+')
                                FROM contacts c WHERE c.user_id = i.from_user_id),
                               i.from_user_id) COLLATE "C") AS senders
FROM inbound_messages i
GROUP BY 1, 2;

ANALYZE message_logs;
ANALYZE inbound_messages;
