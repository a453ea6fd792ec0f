-- A load takes the keys it summarized off the pending queue with one statement that finds its
-- output rows by run and load time (Warehouse._clear_loaded_pending). This index serves that and
-- every query by run, so it replaces the run-only one: still one index to keep up per row.
CREATE INDEX IF NOT EXISTS {output_table}_run_load_idx ON {output_table} (run_id, loaded_at);
DROP INDEX IF EXISTS {output_table}_run_idx;
