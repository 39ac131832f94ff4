-- 0004: a dead letter is kept once per push even when the push names no subscription or no
-- message id. 0001's unique index on (subscription, message_id) let such pushes be stored again
-- on every redelivery (NULLs are distinct in a unique index). The key is now the subscription
-- ('' when none) and the message id ('' when none), and for a push without a message id the
-- SHA-256 of its body (the same bytes sent again are the same push). worker/dispatch.c's
-- `ON CONFLICT` names exactly these expressions.

-- Rows that already share a key (redeliveries stored again) would make the unique index fail:
-- keep the earliest of each key, marked redriven if any of its copies was.
WITH k AS (
    SELECT id,
           min(id) OVER w AS keep,
           min(redriven_at) OVER w AS redriven
    FROM dead_letters
    WINDOW w AS (PARTITION BY coalesce(subscription, ''), coalesce(message_id, ''),
                              CASE WHEN message_id IS NULL THEN sha256(body) ELSE '\x'::bytea END)
), marked AS (
    UPDATE dead_letters d SET redriven_at = k.redriven
    FROM k
    WHERE d.id = k.id AND k.id = k.keep AND d.redriven_at IS NULL AND k.redriven IS NOT NULL
    RETURNING 1
)
DELETE FROM dead_letters d USING k WHERE d.id = k.id AND k.id <> k.keep;

CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_key ON dead_letters
    ((coalesce(subscription, '')), (coalesce(message_id, '')),
     (CASE WHEN message_id IS NULL THEN sha256(body) ELSE '\x'::bytea END));
DROP INDEX IF EXISTS dead_letters_subscription_message_id;
