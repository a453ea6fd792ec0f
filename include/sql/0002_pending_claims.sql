-- A run claims the pending rows it takes, so two runs in flight at once (a backfill next to the
-- nightly run) never submit the same carried-over or retried key twice. A claim older than the
-- warehouse's claim TTL (the longest a job can run) is free again: its run died.
ALTER TABLE {pending_table} ADD COLUMN claimed_by TEXT;
ALTER TABLE {pending_table} ADD COLUMN claimed_at TIMESTAMP;
