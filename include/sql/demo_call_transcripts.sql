-- Source table of the demo pipeline (not a migration: the demo seeder runs it, idempotently).
-- On SQLite, started_at holds UTC text 'YYYY-MM-DD HH:MM:SS' so that range filters compare correctly.
CREATE TABLE IF NOT EXISTS call_transcripts (
    call_id     TEXT PRIMARY KEY,
    started_at  TIMESTAMP,
    agent_id    TEXT,
    customer_id TEXT,
    transcript  TEXT
);

CREATE INDEX IF NOT EXISTS call_transcripts_started_at_idx ON call_transcripts (started_at);
