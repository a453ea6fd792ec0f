-- Runs once, when the postgres service initialises an empty data volume.
-- The metadata database (airflow) comes from POSTGRES_DB; the pipeline's warehouse
-- lives in its own database with its own role so that Airflow's schema and the
-- pipeline's tables never share a namespace or a grant.
CREATE ROLE warehouse WITH LOGIN PASSWORD 'warehouse';
CREATE DATABASE warehouse OWNER warehouse;
