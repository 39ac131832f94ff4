-- 0003: dead letters can be redriven (`worker redrive`): when, and so not twice.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS redriven_at timestamptz;
CREATE INDEX IF NOT EXISTS dead_letters_pending ON dead_letters (received_at) WHERE redriven_at IS NULL;
