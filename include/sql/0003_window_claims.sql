-- A run holds the time window it summarizes until its output is loaded, so a second run over the
-- same days (a manual run next to the nightly one) fails fast instead of submitting, and paying
-- for, the rows the first run has in flight. A claim older than the warehouse's claim TTL, or of a
-- run that Airflow reports finished, no longer holds.
CREATE TABLE IF NOT EXISTS {window_claims_table} (
    run_id         TEXT      NOT NULL,
    prompt_version TEXT      NOT NULL,
    window_start   TIMESTAMP NOT NULL,
    window_end     TIMESTAMP NOT NULL,
    claimed_at     TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, prompt_version)
);
