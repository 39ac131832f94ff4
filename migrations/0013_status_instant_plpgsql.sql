-- 0013: pw_status_instant in PL/pgSQL, so that PostgreSQL stops parsing its SQL text at every write
-- of message_logs (BENCHMARKS.md, "Generated columns planned at every statement").
--
-- The four stored times of 0009 (sent_at, delivered_at, read_at, failed_at) are generated columns
-- calling pw_status_instant. PostgreSQL 15 does not keep a generated column's expression from one
-- statement to the next: each statement that writes the table reads the expression back from the
-- catalog and plans it again (ExecInitStoredGenerated), and planning an expression inlines every
-- LANGUAGE sql function it calls, by parsing and analysing the function's text. So each group of
-- pushes with a status parsed pw_status_instant's text (and tried pw_zoned_time's) once per stored
-- column, at every statement: 23% of the server's time for a group of one push (perf).
-- A PL/pgSQL function is never inlined: its text is compiled once per session, and a call costs
-- about what the inlined CASE cost per row. STRICT: a message without a delivered, read or failed
-- time (most of them) passes NULL, and PostgreSQL answers NULL without calling the function.
--
-- The same answers for every text (the same expression, the same error for a worker-shaped but
-- impossible time), so nothing stored is recomputed: a function replaced, nothing rebuilt, no lock
-- held longer than the instant it takes to commit. tests/integration/plan_test.c checks that no
-- generated column, CHECK constraint or trigger condition of the schema's tables calls a LANGUAGE
-- sql function again.
CREATE OR REPLACE FUNCTION pw_status_instant(t text) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN CASE WHEN t LIKE '____-__-__T__:__:__Z'
                THEN make_timestamp(substr(t, 1, 4)::int, substr(t, 6, 2)::int, substr(t, 9, 2)::int,
                                    substr(t, 12, 2)::int, substr(t, 15, 2)::int, substr(t, 18, 2)::float8)
                     AT TIME ZONE 'UTC'
                WHEN t ~ ('^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[T ]([01]\d|2[0-3]):[0-5]\d:[0-5]\d'
                          '(\.\d+)?(Z|[+-]\d\d(:?\d\d)?)$') THEN pw_zoned_time(t)
           END;
END
$$;
