-- 0005: identity after usernames. A WhatsApp user who adopts a username may hide the phone
-- number: Meta's webhooks then name the user by a business-scoped user id (BSUID, e.g.
-- "US.13491208655302741918"): statuses[].recipient_user_id (recipient_id empty),
-- contacts[].user_id (wa_id empty) with profile.username and profile.country_code,
-- messages[].from_user_id (from empty). docs/rows.md says what each becomes.
--
-- Applied in place on a database that has 0001-0004 (and rows), in one transaction like every
-- migration: existing columns keep their names and meanings. The contacts table is done first,
-- since it is rewritten (its new id column): the locks of the other tables are then held only
-- for the short rest of the transaction.

-- ---- contacts: one row per person, known by a phone number (wa_id), a user id, or both ----
-- A row's wa_id and user_id are each unique when present (NULLs do not collide), and a row has at
-- least one of them. The worker links the two when one webhook shows both (worker/inbound.c); a
-- later webhook showing either one finds the same row. wa_id is no longer the primary key (it may
-- be NULL): the new id is (logical replication and tools that need a key keep one), and wa_id
-- keeps a unique index, so `ON CONFLICT (wa_id)` and lookups by wa_id work as before.
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS user_id text;
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS username text;
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS country_code text;
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS id bigint GENERATED ALWAYS AS IDENTITY;
DO $$
DECLARE
    pk name;
BEGIN
    SELECT conname INTO pk FROM pg_constraint
    WHERE conrelid = 'contacts'::regclass AND contype = 'p'
      AND conkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = 'contacts'::regclass AND attname = 'wa_id')];
    IF pk IS NOT NULL THEN
        EXECUTE format('ALTER TABLE contacts DROP CONSTRAINT %I', pk);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'contacts'::regclass AND contype = 'p') THEN
        ALTER TABLE contacts ADD PRIMARY KEY (id);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'contacts'::regclass AND conname = 'contacts_identity') THEN
        ALTER TABLE contacts ADD CONSTRAINT contacts_identity CHECK (wa_id IS NOT NULL OR user_id IS NOT NULL);
    END IF;
END
$$;
ALTER TABLE contacts ALTER COLUMN wa_id DROP NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS contacts_wa_id_key ON contacts (wa_id);
CREATE UNIQUE INDEX IF NOT EXISTS contacts_user_id_key ON contacts (user_id);

-- One sighting of a person in a webhook, as the worker passes it to its statement (one array
-- element per value.contacts[] entry): a row type, so that a sighting costs one array parameter.
DO $$
BEGIN
    IF to_regtype('pw_contact_sighting') IS NULL THEN
        CREATE TYPE pw_contact_sighting AS (
            wa_id         text,
            user_id       text,
            profile_name  text,
            username      text,
            country_code  text,
            first_seen_at timestamptz,
            last_seen_at  timestamptz
        );
    END IF;
END
$$;

-- ---- statuses: the user id a message was sent to ----
-- Adding a column without a default changes no row: instant however large the tables are.
ALTER TABLE status_events ADD COLUMN IF NOT EXISTS recipient_user_id text;
ALTER TABLE message_logs ADD COLUMN IF NOT EXISTS recipient_user_id text;

-- ---- analytics: one identity rule for recipients and senders ----
-- A recipient (outbound) or sender (inbound) is counted by its phone number ('+' and digits); a
-- person known only by a user id is counted by the phone number a contacts row links that user id
-- to, else by the user id. Phone numbers start with '+' and user ids never do, so the two kinds
-- never meet. The rule is written out (outbound in message_status_times.recipient, inbound in
-- inbound_messages_daily): a scalar subquery is evaluated only for rows without a phone number
-- (coalesce stops at the first non-NULL argument), where a SQL function would be called for
-- every row (PostgreSQL does not inline a function holding a subquery).

-- message_status_times: 0002's columns, then the user id the message was sent to and the recipient.
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
WHERE m.bsp_msg_id IS NOT NULL; -- as in the prototype's queries (its table may allow NULL)

-- pw_undelivered: 0002's columns, then the recipient. A function's result columns cannot change in
-- place, so it is dropped and created again (an object of your own that depends on it, such as a
-- view selecting from it, makes this migration fail until that object is dropped).
DROP FUNCTION IF EXISTS pw_undelivered(int, boolean);
CREATE FUNCTION pw_undelivered(minutes int, include_failed boolean DEFAULT true)
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
    ORDER BY t.sent_at, t.bsp_msg_id
$$;

-- pw_engaged_recipients: per recipient (the rule above; messages with neither a phone number nor a
-- user id are left out). to_phone is the recipient's phone number, NULL for a recipient known only
-- by a user id; recipient is the identity itself. Highest read rate first, then most read, then
-- recipient.
DROP FUNCTION IF EXISTS pw_engaged_recipients(timestamptz, timestamptz, int);
CREATE FUNCTION pw_engaged_recipients(since timestamptz, until timestamptz, min_messages int DEFAULT 5)
RETURNS TABLE (to_phone text, messages bigint, delivered bigint, read bigint, read_rate numeric, recipient text)
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN t.recipient LIKE '+%' THEN t.recipient END, count(*), count(t.delivered_at), count(t.read_at),
           round(count(t.read_at) * 100.0 / count(*), 2), t.recipient
    FROM message_status_times t
    WHERE t.sent_at >= since AND t.sent_at < until AND t.recipient IS NOT NULL
    GROUP BY t.recipient
    HAVING count(*) >= min_messages
    ORDER BY 5 DESC, 4 DESC, 6
$$;

-- inbound_messages_daily: senders counted by the same rule (from_phone, else the phone linked to
-- from_user_id, else from_user_id).
CREATE OR REPLACE VIEW inbound_messages_daily AS
SELECT (i.sent_at AT TIME ZONE 'UTC')::date AS day,
       i.msg_type,
       count(*) AS messages,
       count(DISTINCT coalesce(i.from_phone,
                               (SELECT nullif('+' || regexp_replace(c.wa_id, '[^0-9]', '', 'g'), '+')
                                FROM contacts c WHERE c.user_id = i.from_user_id),
                               i.from_user_id)) AS senders
FROM inbound_messages i
GROUP BY 1, 2;
