-- 0001: the tables pushworker writes. Names and columns are those the prototype's users query.
-- Applied by `worker migrate` in one transaction; recorded in schema_migrations.

-- Rolled-up status per outbound message. whatsapp_status maps status -> 'YYYY-MM-DDTHH:MM:SSZ' (UTC).
CREATE TABLE IF NOT EXISTS message_logs (
    id              bigserial PRIMARY KEY,
    bsp_msg_id      text UNIQUE NOT NULL,
    to_phone        text,
    whatsapp_status jsonb NOT NULL DEFAULT '{}',
    current_status  text,
    last_error      jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- The prototype's message_logs may lack the newer columns and the unique index the merge needs
-- (ON CONFLICT (bsp_msg_id)); a new table has that index from its UNIQUE constraint. The unique
-- index is the "index on bsp_msg_id" lookups use: the prototype guide's separate
-- idx_message_logs_bsp_msg_id would only double the cost of every write, so it is not created
-- here (an existing one is left alone).
ALTER TABLE message_logs ADD COLUMN IF NOT EXISTS current_status text;
ALTER TABLE message_logs ADD COLUMN IF NOT EXISTS last_error jsonb;
ALTER TABLE message_logs ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
CREATE UNIQUE INDEX IF NOT EXISTS message_logs_bsp_msg_id_key ON message_logs (bsp_msg_id);
CREATE INDEX IF NOT EXISTS idx_message_logs_whatsapp_status ON message_logs USING GIN (whatsapp_status);

-- Every status event once; a repeat keeps the earliest time.
CREATE TABLE IF NOT EXISTS status_events (
    id                       bigserial PRIMARY KEY,
    bsp_msg_id               text NOT NULL,
    status                   text NOT NULL,
    occurred_at              timestamptz NOT NULL,
    recipient_id             text,
    phone_number_id          text,
    conversation             jsonb,
    pricing                  jsonb,
    errors                   jsonb,
    biz_opaque_callback_data text,
    pubsub_message_id        text,
    received_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (bsp_msg_id, status)
);

CREATE TABLE IF NOT EXISTS inbound_messages (
    wa_msg_id         text PRIMARY KEY,
    phone_number_id   text,
    from_phone        text,
    from_user_id      text,
    contact_name      text,
    msg_type          text NOT NULL,
    body              text,
    context_msg_id    text,
    sent_at           timestamptz NOT NULL,
    payload           jsonb NOT NULL,
    pubsub_message_id text,
    received_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_inbound_messages_from_phone_sent_at ON inbound_messages (from_phone, sent_at);

CREATE TABLE IF NOT EXISTS contacts (
    wa_id         text PRIMARY KEY,
    profile_name  text,
    first_seen_at timestamptz,
    last_seen_at  timestamptz
);

-- One row per Pub/Sub message handled, written in the same transaction as its rows.
CREATE TABLE IF NOT EXISTS pubsub_receipts (
    subscription text NOT NULL,
    message_id   text NOT NULL,
    publish_time timestamptz,
    outcome      text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription, message_id)
);

-- Pushes that could not be understood: the reason and the raw body, nothing lost.
CREATE TABLE IF NOT EXISTS dead_letters (
    id           bigserial PRIMARY KEY,
    subscription text,
    message_id   text,
    reason       text NOT NULL,
    body         bytea NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
-- A redelivered bad push is kept once (rows without a message id are always kept).
CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_subscription_message_id ON dead_letters (subscription, message_id);

-- The status merge: per key the earliest time wins. Times are 'YYYY-MM-DDTHH:MM:SSZ', so the
-- text order is the time order. Commutative, associative and idempotent.
CREATE OR REPLACE FUNCTION pw_status_merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(key, t), '{}'::jsonb)
    FROM (SELECT key, min(value) AS t
          FROM (SELECT * FROM jsonb_each_text(coalesce(a, '{}'::jsonb))
                UNION ALL
                SELECT * FROM jsonb_each_text(coalesce(b, '{}'::jsonb))) kv
          GROUP BY key) m
$$;

-- The same merge without a subquery for the usual keys; maps holding any other key take the
-- general pw_status_merge. (The worker writes this expression out in its own statement, see
-- worker/status.c: PostgreSQL does not inline it there, and plans it again on every call.)
CREATE OR REPLACE FUNCTION pw_status_merge_fast(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN (a - '{sent,delivered,read,played,failed}'::text[]) = '{}'::jsonb
                 AND (b - '{sent,delivered,read,played,failed}'::text[]) = '{}'::jsonb
           THEN jsonb_strip_nulls(jsonb_build_object(
                'sent', least(a->>'sent', b->>'sent'),
                'delivered', least(a->>'delivered', b->>'delivered'),
                'read', least(a->>'read', b->>'read'),
                'played', least(a->>'played', b->>'played'),
                'failed', least(a->>'failed', b->>'failed')))
           ELSE pw_status_merge(a, b) END
$$;

-- The alphabetically first key: the current status of a map holding only unusual statuses.
CREATE OR REPLACE FUNCTION pw_first_key(s jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT min(k) FROM jsonb_object_keys(s) k
$$;

-- The furthest state reached: played > read > delivered > sent; failed when never delivered;
-- otherwise any other status seen (the smallest name, so the answer does not depend on order).
CREATE OR REPLACE FUNCTION pw_current_status(s jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN s ? 'played' THEN 'played'
        WHEN s ? 'read' THEN 'read'
        WHEN s ? 'delivered' THEN 'delivered'
        WHEN s ? 'failed' THEN 'failed'
        WHEN s ? 'sent' THEN 'sent'
        ELSE pw_first_key(s)
    END
$$;
