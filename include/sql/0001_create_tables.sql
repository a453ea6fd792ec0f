-- Version 1 of a pipeline's warehouse tables.
-- Portable across SQLite and Postgres: plain types, no dialect functions, no semicolons in comments
-- or strings (the runner splits statements on them). {output_table}, {error_table} and
-- {pending_table} are replaced by validated identifiers from the pipeline config.

-- One summary per source key and prompt version: a rerun upserts, never duplicates.
CREATE TABLE IF NOT EXISTS {output_table} (
    source_key     TEXT      NOT NULL,
    prompt_version TEXT      NOT NULL,
    model_id       TEXT      NOT NULL,
    summary        TEXT,
    input_tokens   INTEGER,
    output_tokens  INTEGER,
    stop_reason    TEXT,
    job_arn        TEXT,
    run_id         TEXT      NOT NULL,
    loaded_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (source_key, prompt_version)
);

CREATE INDEX IF NOT EXISTS {output_table}_run_idx ON {output_table} (run_id);

-- One row per key, prompt version, run and stage: a rerun of the same DAG run overwrites its own rows.
CREATE TABLE IF NOT EXISTS {error_table} (
    source_key     TEXT      NOT NULL,
    prompt_version TEXT      NOT NULL,
    run_id         TEXT      NOT NULL,
    stage          TEXT      NOT NULL,
    code           TEXT      NOT NULL,
    message        TEXT,
    attempt        INTEGER   NOT NULL,
    retryable      BOOLEAN   NOT NULL,
    dead_lettered  BOOLEAN   NOT NULL,
    job_arn        TEXT,
    recorded_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (source_key, prompt_version, run_id, stage)
);

CREATE INDEX IF NOT EXISTS {error_table}_run_idx ON {error_table} (run_id);

-- Keys the next run must pick up whatever their timestamp: carried over (never submitted) or retry.
CREATE TABLE IF NOT EXISTS {pending_table} (
    source_key     TEXT      NOT NULL,
    prompt_version TEXT      NOT NULL,
    reason         TEXT      NOT NULL,
    first_seen_at  TIMESTAMP NOT NULL,
    attempts       INTEGER   NOT NULL,
    last_run_id    TEXT      NOT NULL,
    PRIMARY KEY (source_key, prompt_version)
);
