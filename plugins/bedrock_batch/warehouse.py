"""Warehouse side of a pipeline: read the rows to summarize, load summaries, errors and the retry queue.

Built on the common-sql ``DbApiHook`` of an Airflow connection so the same code runs on SQLite (demo,
tests) and Postgres (production). Each dialect gets its bulk path: Postgres ``COPY`` into a temporary
staging table and one ``INSERT ... ON CONFLICT DO UPDATE``; SQLite ``executemany`` of the same upsert.
Nothing connects at import time; the hook is fetched on first use.

State kept per pipeline, keyed by (source_key, prompt_version):
- output table: one summary per key; a rerun upserts.
- error table: one row per (key, prompt_version, run_id, stage); a rerun of a run overwrites its rows.
- pending table: keys the next run picks up whatever their timestamp (``carried_over`` or ``retry``).
- window claims table: the time window each run in flight holds, so two runs never stage it both.
A key failing retryably ``max_attempts`` times (distinct runs) is dead-lettered and never read again.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bedrock_batch.errors import ConfigError, WindowBusyError
from bedrock_batch.table_names import WarehouseTables, validate_identifier

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook

log = logging.getLogger(__name__)

Dialect = Literal["sqlite", "postgres"]
Origin = Literal["window", "carried_over", "retry"]
PendingReason = Literal["carried_over", "retry"]
SourceRowDict = dict[str, Any]
"""``source_key``, ``text``, ``attempt``, ``origin``, ``pending_since`` and one entry per extra column."""

RESERVED_ROW_KEYS = frozenset({"source_key", "text", "attempt", "origin", "pending_since"})
MIGRATIONS_TABLE = "bedrock_batch_schema_migrations"
_WINDOW_CLAIMS_VERSION = 3
"""The migration that adds the window claims table (0003_window_claims.sql)."""
SQL_DIR_ENV = "BEDROCK_BATCH_SQL_DIR"
_MIGRATION_FILE = re.compile(r"(\d{4})_[A-Za-z0-9_]+\.sql")
_WRITE_BATCH = 20000
#: A load's rows are handed to its writer thread in multiples of this many, as soon as it is free.
_WRITE_STEP = 4000
NUL_REPLACEMENT = "\ufffd"
"""What a NUL in a text value becomes on PostgreSQL, whose text type cannot hold it."""


def default_sql_dir() -> Path:
    """``$BEDROCK_BATCH_SQL_DIR`` or ``include/sql`` of the repository holding this plugin."""
    env = os.environ.get(SQL_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "include" / "sql"


@dataclass(frozen=True)
class SourceSpec:
    """Where the transcripts live: table, key, text and timestamp columns, extra columns for prompts."""

    table: str
    key_column: str
    text_column: str
    timestamp_column: str
    extra_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        validate_identifier(self.table, setting="source.table", dotted=True)
        for column in ("key_column", "text_column", "timestamp_column"):
            validate_identifier(getattr(self, column), setting=f"source.{column}")
        object.__setattr__(self, "extra_columns", tuple(self.extra_columns))
        for column in self.extra_columns:
            validate_identifier(column, setting="source.extra_columns")
            if column in RESERVED_ROW_KEYS:
                raise ConfigError(
                    f"source.extra_columns: {column!r} clashes with a reserved row field "
                    f"({', '.join(sorted(RESERVED_ROW_KEYS))}); rename it with a view"
                )
        if len(set(self.extra_columns)) != len(self.extra_columns):
            raise ConfigError(f"source.extra_columns lists a column twice: {list(self.extra_columns)}")


@dataclass(slots=True)  # not frozen: a frozen init costs ~1 us a record on a million-record load
class SummaryRow:
    """One successful model output to load."""

    source_key: str
    summary: str | None
    input_tokens: int | None
    output_tokens: int | None
    stop_reason: str | None


JOB_STAGE = "batch_job"
"""The error stage of a record its batch job did not answer."""
OUTPUT_MISSING = "output_missing"
"""The code of a record a completed job left without an output line (every other job-stage code
names how the job ended: ``job_failed``, ``job_expired``, ...)."""
MODEL_STAGE = "model"
"""The error stage of a record the model answered with an error (a batch output line, an on-demand call)."""
NOT_REACHED_MODEL_CODES = (
    "429",
    "ConnectionError",
    "ConnectTimeoutError",
    "EndpointConnectionError",
    "ProxyConnectionError",
    "SSLError",
)
"""Model-stage codes of a request no model took up: throttled (HTTP 429), or no connection was made
(botocore's ConnectionError and its subclasses, by name)."""


def spends_attempt(stage: str, code: str) -> bool:
    """
    Whether an error row counts as one of the record's ``max_attempts`` tries.

    Only a try that reached a model counts: a per-record error, or no output line from a completed
    job. A record its job never reached (the job failed, expired, was stopped or partly completed),
    or whose request was throttled to the end or never connected, was not tried; those are the
    account's, the service's or an operator's doing, and a few nights of a broken role or a full
    quota must not dead-letter records no model saw. ``Warehouse._attempts_sql`` applies the same
    rule to the stored rows.
    """
    if stage == JOB_STAGE:
        return code == OUTPUT_MISSING
    return not (stage == MODEL_STAGE and code in NOT_REACHED_MODEL_CODES)


@dataclass(frozen=True)
class ErrorRow:
    """One failed record: a pre-submit rejection or a per-record error of a batch job."""

    source_key: str
    stage: str
    code: str
    message: str | None
    retryable: bool
    attempt: int


@dataclass(frozen=True)
class UnreadRows:
    """Source rows no run has read in some span: how many, and the first and last timestamps."""

    rows: int
    first: Any = None
    last: Any = None


@dataclass(frozen=True)
class LoadedResults:
    """What a run already loaded for some keys: each key's summary tokens or error flags."""

    summaries: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Key -> (input tokens, output tokens) of its summary."""
    errors: dict[str, tuple[bool, bool]] = field(default_factory=dict)
    """Key -> (retryable, dead-lettered) of its error row, for keys with no summary."""

    def __contains__(self, key: object) -> bool:
        return key in self.summaries or key in self.errors

    def __len__(self) -> int:
        return len(self.summaries) + len(self.errors)


class RejectionLike(Protocol):
    """What ``record_rejections`` needs (``records.Rejection`` or ``ErrorRow``)."""

    source_key: str | None
    stage: str
    code: str
    message: str | None


def split_statements(sql: str) -> list[str]:
    """Split a DDL file on ``;`` after dropping ``--`` comment lines (the files keep no ``;`` in strings)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


DEFAULT_CLAIM_TTL = timedelta(hours=168 + 24)
"""How long a run's claim on pending rows holds: the longest a batch job may run, plus a day."""


MIGRATIONS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
    " pipeline TEXT NOT NULL, version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL,"
    " PRIMARY KEY (pipeline, version))"
)
"""The table recording which versioned DDL files were applied to which set of tables."""


def migration_statements(path: Path, tables: WarehouseTables) -> list[str]:
    """The statements of one versioned DDL file, for ``tables``."""
    return [
        statement.format(**tables.placeholders())
        for statement in split_statements(path.read_text(encoding="utf-8"))
    ]


def schema_script(
    tables: WarehouseTables, *, after: int = 0, sql_dir: Path | None = None, now: datetime | None = None
) -> str:
    """
    The SQL :meth:`Warehouse.ensure_schema` runs for ``tables`` (versions past ``after``), recording
    each version as applied at ``now`` (UTC, as the warehouse keeps time): for a DBA to run where the
    pipeline's user may not CREATE in the schema.

    A run then finds every version recorded and creates nothing. Portable across SQLite and Postgres,
    as the DDL files are; one transaction. The grants the pipeline's user needs close it, as comments.
    """
    migrations = migration_files(sql_dir or default_sql_dir())
    wanted = [(version, path) for version, path in migrations if version > after]
    key = tables.key.replace("'", "''")  # validated identifiers hold no quote; kept safe all the same
    stamp = _utc(now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S")
    lines = [
        f"-- bedrock_batch warehouse schema for tables {tables.key} (versions "
        f"{', '.join(str(version) for version, _ in wanted) or 'none'} of {len(migrations)})",
        "BEGIN;",
        f"{MIGRATIONS_DDL};",
    ]
    for version, path in wanted:
        lines.append(f"-- {path.name}")
        lines.extend(f"{statement};" for statement in migration_statements(path, tables))
        lines.append(
            f"INSERT INTO {MIGRATIONS_TABLE} (pipeline, version, applied_at) "
            f"VALUES ('{key}', {version}, '{stamp}');"
        )
    lines.append("COMMIT;")
    pipeline_tables = ", ".join(tables.placeholders().values())
    lines += [
        "-- Then, on Postgres, let the pipeline's warehouse user (the role of its connection) use them:",
        f"-- GRANT SELECT, INSERT, UPDATE, DELETE ON {pipeline_tables} TO <pipeline user>;",
        f"-- GRANT SELECT, INSERT ON {MIGRATIONS_TABLE} TO <pipeline user>;",
    ]
    return "\n".join(lines) + "\n"


def migration_files(sql_dir: Path) -> list[tuple[int, Path]]:
    """``NNNN_name.sql`` files of ``sql_dir`` as (version, path), in version order."""
    found: dict[int, Path] = {}
    for path in sorted(sql_dir.glob("*.sql")):
        match = _MIGRATION_FILE.fullmatch(path.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise ConfigError(f"two migrations share version {version}: {found[version].name}, {path.name}")
        found[version] = path
    if not found:
        raise ConfigError(f"no versioned DDL (NNNN_name.sql) in {sql_dir}; set ${SQL_DIR_ENV}")
    return sorted(found.items())


def _utc(value: datetime) -> datetime:
    """Naive UTC ``datetime`` (aware values are converted; naive ones are taken as UTC)."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _batches_when(
    items: Iterable[Any], size: int, *, step: int, ready: Callable[[], bool]
) -> Iterator[list[Any]]:
    """Lists of at most ``size`` items, cut early (after a multiple of ``step``) once ``ready()``.

    A load hands its writer thread whatever has been read whenever that thread is free, instead of
    fixed batches: the writes keep pace with the reading, and what is left to write after the last
    line is only what arrived during the last write (a fixed 20,000-row batch left up to 0.1 s).
    """
    if step < 1 or size < 1:
        raise ValueError(f"batches need a positive size and step, got size={size}, step={step}")
    iterator = iter(items)
    batch: list[Any] = []
    while chunk := list(islice(iterator, min(step, size - len(batch)))):
        batch += chunk
        if len(batch) >= size or ready():
            yield batch
            batch = []
    if batch:
        yield batch


class Warehouse:
    """A pipeline's view of its warehouse connection (SQLite or Postgres)."""

    def __init__(
        self,
        conn_id: str,
        tables: WarehouseTables,
        *,
        pipeline: str,
        sql_dir: str | Path | None = None,
        claim_ttl: timedelta = DEFAULT_CLAIM_TTL,
    ) -> None:
        self.conn_id = conn_id
        self.claim_ttl = claim_ttl
        self.tables = tables
        self.pipeline = pipeline
        self.sql_dir = Path(sql_dir) if sql_dir else default_sql_dir()
        self._hook: DbApiHook | None = None
        self._dialect: Dialect | None = None
        self._live_holders: tuple[str, ...] = ()
        """Runs whose pending claims hold however old (in flight), from :meth:`judge_claims`."""

    # -- connection ---------------------------------------------------------------------------------

    @property
    def hook(self) -> DbApiHook:
        if self._hook is None:
            from airflow.providers.common.sql.hooks.sql import DbApiHook
            from airflow.sdk import BaseHook

            connection = BaseHook.get_connection(self.conn_id)
            conn_type = (connection.conn_type or "").lower()
            if conn_type not in ("sqlite", "postgres"):
                raise ConfigError(
                    f"connection {self.conn_id!r} has conn_type {conn_type!r}; "
                    "the warehouse supports 'sqlite' and 'postgres'"
                )
            hook = connection.get_hook()
            if not isinstance(hook, DbApiHook):
                raise ConfigError(f"connection {self.conn_id!r} does not give an SQL (DbApiHook) hook")
            self._dialect = "sqlite" if conn_type == "sqlite" else "postgres"
            self._hook = hook
        return self._hook

    @property
    def dialect(self) -> Dialect:
        if self._dialect is None:
            _ = self.hook  # resolving the hook sets the dialect
        assert self._dialect is not None
        return self._dialect

    @property
    def _ph(self) -> str:
        return "?" if self.dialect == "sqlite" else "%s"

    def _params(self, count: int) -> str:
        return ", ".join([self._ph] * count)

    def _ts(self, value: datetime) -> Any:
        """A timestamp as this dialect stores it: SQLite text that sorts like time, Postgres naive UTC."""
        naive = _utc(value)
        if self.dialect == "sqlite":
            return naive.isoformat(sep=" ", timespec="microseconds" if naive.microsecond else "seconds")
        return naive

    def _bool(self, value: bool) -> Any:
        return int(value) if self.dialect == "sqlite" else bool(value)

    @contextmanager
    def _transaction(self) -> Generator[Any, None, None]:
        """A new connection in one transaction: commit on success, roll back on error, always close."""
        conn = self.hook.get_conn()
        try:
            if self.dialect == "sqlite":
                conn.isolation_level = None  # we issue BEGIN/COMMIT ourselves, DDL included
                conn.execute("BEGIN IMMEDIATE")
            else:
                with conn.cursor() as cur:
                    cur.execute("SET TIME ZONE 'UTC'")
            yield conn
            if self.dialect == "sqlite":
                conn.execute("COMMIT")
            else:
                conn.commit()
        except BaseException:
            try:
                if self.dialect == "sqlite":
                    conn.execute("ROLLBACK")
                else:
                    conn.rollback()
            except Exception:
                log.warning("Rollback on %s failed", self.conn_id, exc_info=True)
            raise
        finally:
            conn.close()

    # -- schema -------------------------------------------------------------------------------------

    def ensure_schema(self) -> list[int]:
        """Apply the versioned DDL not yet applied to this pipeline's tables; return the versions applied."""
        migrations = migration_files(self.sql_dir)
        applied_now: list[int] = []
        if self.dialect == "sqlite":
            # WAL lets the staging task read while another connection writes (e.g. rejections).
            conn = self.hook.get_conn()
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            finally:
                conn.close()
        with self._transaction() as conn:
            cur = conn.cursor()
            if self.dialect == "postgres":
                # Serialises concurrent first runs: CREATE TABLE IF NOT EXISTS alone can race.
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (0x62_62_61_74_63_68,))
            # Asked first: Postgres checks the right to CREATE even when the table is there, and a
            # user without it runs on tables a DBA made with schema_script.
            if not self._table_exists(cur, MIGRATIONS_TABLE):
                with self._creating(MIGRATIONS_TABLE, after=0):
                    cur.execute(MIGRATIONS_DDL)
            applied = self._applied(cur)
            done = applied | self._adopt_pipeline_versions(cur, recorded=applied)
            for version, path in migrations:
                if version in done:
                    continue
                with self._creating(f"schema version {version} ({path.name})", after=version - 1):
                    for statement in migration_statements(path, self.tables):
                        cur.execute(statement)
                cur.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (pipeline, version, applied_at)"
                    f" VALUES ({self._params(3)})",
                    (self.tables_key, version, self._ts(datetime.now(UTC))),
                )
                applied_now.append(version)
            cur.close()
        if applied_now:
            log.info("Pipeline %s: applied warehouse schema versions %s", self.pipeline, applied_now)
        return applied_now

    def applied_versions(self) -> set[int]:
        """The schema versions applied to this pipeline's tables, without applying any (read-only)."""
        with self._read_cursor(server_side=False) as cur:
            if not self._table_exists(cur, MIGRATIONS_TABLE):
                return set()
            return self._applied(cur) | self._pipeline_versions(cur)

    @contextmanager
    def _creating(self, what: str, *, after: int) -> Generator[None, None, None]:
        """Turn the database's refusal to create ``what`` into a ConfigError naming the script a DBA
        runs instead (versions past ``after``)."""
        try:
            yield
        except Exception as err:
            if _sqlstate(err) != _INSUFFICIENT_PRIVILEGE:
                raise
            script = f"make schema-sql PIPELINE={self.pipeline}" + (f" AFTER={after}" if after else "")
            raise ConfigError(
                f"Pipeline {self.pipeline}: the user of connection {self.conn_id!r} may not create {what}: "
                f"{str(err).strip()}. Have a DBA run the SQL `{script}` prints, or grant the user CREATE "
                "on the schema"
            ) from err

    @property
    def tables_key(self) -> str:
        """:attr:`WarehouseTables.key`: versions are recorded per set of tables, not per pipeline."""
        return self.tables.key

    def _applied(self, cur: Any) -> set[int]:
        cur.execute(f"SELECT version FROM {MIGRATIONS_TABLE} WHERE pipeline = {self._ph}", (self.tables_key,))
        return {int(row[0]) for row in cur.fetchall()}

    def _pipeline_versions(self, cur: Any) -> set[int]:
        """Versions recorded under the pipeline's name (before :attr:`tables_key`), if its output
        table is there: those were applied to these tables, unless the config has renamed them."""
        cur.execute(f"SELECT version FROM {MIGRATIONS_TABLE} WHERE pipeline = {self._ph}", (self.pipeline,))
        versions = {int(row[0]) for row in cur.fetchall()}
        return versions if versions and self._table_exists(cur, self.tables.output_table) else set()

    def _adopt_pipeline_versions(self, cur: Any, *, recorded: set[int]) -> set[int]:
        """:meth:`_pipeline_versions` not yet ``recorded`` under :attr:`tables_key`, recorded there now
        (an upgrade's first run; or a DBA's script of the newer versions only, after it)."""
        versions = self._pipeline_versions(cur) - recorded
        now = self._ts(datetime.now(UTC))
        for version in sorted(versions):
            cur.execute(
                f"INSERT INTO {MIGRATIONS_TABLE} (pipeline, version, applied_at) VALUES ({self._params(3)})",
                (self.tables_key, version, now),
            )
        return versions

    def _table_exists(self, cur: Any, table: str) -> bool:
        """Whether ``table`` (``name`` or ``schema.name``) exists, without touching it."""
        if self.dialect == "postgres":
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
            return bool(cur.fetchone()[0])
        schema, _, name = table.rpartition(".")
        master = f"{schema}.sqlite_master" if schema else "sqlite_master"
        cur.execute(
            f"SELECT COUNT(*) FROM {master} WHERE type = 'table' AND name = ? COLLATE NOCASE", (name,)
        )
        return bool(cur.fetchone()[0])

    # -- reading ------------------------------------------------------------------------------------

    def iter_source_rows(
        self,
        source: SourceSpec,
        *,
        start: datetime,
        end: datetime,
        prompt_version: str,
        max_attempts: int,
        run_id: str | None = None,
        limit: int | None = None,
        chunk_size: int = 5000,
        include_summarized: bool = False,
        claimed_only: bool = False,
    ) -> Iterator[SourceRowDict]:
        """Stream the rows this run must summarize, pending rows first, then the window in time order.

        Window rows: ``start <= ts < end``, not summarized for ``prompt_version`` (unless
        ``include_summarized``, to re-summarize), not dead-lettered and not pending (so no key comes
        twice). Pending rows: every carried-over or retry key of ``prompt_version`` whatever its
        timestamp; a key gone from the source comes with ``text`` None so that the record builder
        rejects it and it leaves the queue.

        ``attempt`` is 1 + the distinct runs other than ``run_id`` with an error row for the key, so a
        rerun of the same DAG run sees the same attempts. Keys already tried ``max_attempts`` times are
        skipped. Reads ``chunk_size`` rows at a time (Postgres: server-side cursor; SQLite: fetchmany).

        ``claimed_only``: pending keys only if ``run_id`` holds them (after :meth:`claim_pending`).
        A key queued after the claim, by another run's collect, is left for a later run: read
        unclaimed, a run claiming next would read it too, and Bedrock would bill it twice.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {max_attempts}")
        if limit is not None and limit <= 0:
            return
        yielded = 0
        pending = self._iter_pending_rows(
            source, prompt_version, max_attempts, run_id, chunk_size, include_summarized, claimed_only
        )
        window = self._iter_window_rows(
            source, start, end, prompt_version, max_attempts, run_id, chunk_size, include_summarized
        )
        for rows in (pending, window):
            for row in rows:
                yield row
                yielded += 1
                if limit is not None and yielded >= limit:
                    rows.close()
                    return

    def unread_rows(self, source: SourceSpec, *, start: datetime, end: datetime) -> UnreadRows:
        """Rows of ``[start, end)`` no run has read: no summary, error or pending row under any prompt
        version, and no window claim over their time (a run in flight has them staged).

        These arrived after their day's run read it, or their day had no run (a paused DAG): a
        nightly run counts them in the days before its own window, so they are not missed silently.
        Rows with a NULL key (rejected, with no key to record) are left out; rows under a claim older
        than the claim TTL (a run given up on) are counted.
        """
        t, ph = self.tables, self._ph
        key = f"CAST(s.{source.key_column} AS TEXT)"
        ts = f"s.{source.timestamp_column}"
        sql = (
            f"SELECT COUNT(*), MIN({ts}), MAX({ts}) FROM {source.table} s"
            f" WHERE {ts} >= {ph} AND {ts} < {ph} AND s.{source.key_column} IS NOT NULL"
            f" AND NOT EXISTS (SELECT 1 FROM {t.output_table} o WHERE o.source_key = {key})"
            f" AND NOT EXISTS (SELECT 1 FROM {t.error_table} e WHERE e.source_key = {key})"
            f" AND NOT EXISTS (SELECT 1 FROM {t.pending_table} p WHERE p.source_key = {key})"
        )
        params: tuple[Any, ...] = (self._ts(start), self._ts(end))
        if _WINDOW_CLAIMS_VERSION in self.applied_versions():
            # A claim older than the claim TTL is a run given up on, not one in flight.
            sql += (
                f" AND NOT EXISTS (SELECT 1 FROM {t.window_claims_table} c"
                f"  WHERE c.window_start <= {ts} AND c.window_end > {ts} AND c.claimed_at >= {ph})"
            )
            params += (self._ts(datetime.now(UTC) - self.claim_ttl),)
        with self._read_cursor(server_side=False) as cur:
            cur.execute(sql, params)
            count, first, last = cur.fetchone()
        return UnreadRows(int(count or 0), first, last)

    def count_source_rows(
        self,
        source: SourceSpec,
        *,
        start: datetime,
        end: datetime,
        prompt_version: str,
        max_attempts: int,
        run_id: str | None = None,
        limit: int | None = None,
        include_summarized: bool = False,
        claimed_only: bool = False,
    ) -> int:
        """How many rows ``iter_source_rows`` with the same arguments would yield (one count query each)."""
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {max_attempts}")
        window_sql, window_params = self._window_sql(
            source, start, end, prompt_version, run_id, include_summarized
        )
        pending_sql, pending_params = self._pending_sql(
            prompt_version, run_id, include_summarized, claimed_only
        )
        total = 0
        with self._read_cursor(server_side=False) as cur:
            for sql, params in ((pending_sql, pending_params), (window_sql, window_params)):
                cur.execute(
                    f"SELECT COUNT(*) FROM ({sql}) q WHERE q.bb_tried < {self._ph}", (*params, max_attempts)
                )
                total += int(cur.fetchone()[0])
        return total if limit is None else max(0, min(total, limit))

    def _attempts_sql(self, key_sql: str, run_id: str | None) -> tuple[str, tuple[Any, ...]]:
        """Distinct runs (other than ``run_id``) with an error row for the key that spent an attempt
        (:func:`spends_attempt`, here in SQL): its earlier attempts."""
        t, ph = self.tables, self._ph
        not_reached = ", ".join(f"'{code}'" for code in NOT_REACHED_MODEL_CODES)
        sql = (
            f"(SELECT COUNT(DISTINCT e.run_id) FROM {t.error_table} e"
            f" WHERE e.source_key = {key_sql} AND e.prompt_version = {ph}"
            f" AND NOT (e.stage = '{JOB_STAGE}' AND e.code <> '{OUTPUT_MISSING}')"
            f" AND NOT (e.stage = '{MODEL_STAGE}' AND e.code IN ({not_reached}))"
        )
        params: tuple[Any, ...] = ()
        if run_id is not None:
            sql += f" AND e.run_id <> {self._ph}"
            params = (run_id,)
        return sql + ")", params

    def _window_sql(
        self,
        source: SourceSpec,
        start: datetime,
        end: datetime,
        prompt_version: str,
        run_id: str | None,
        include_summarized: bool,
    ) -> tuple[str, tuple[Any, ...]]:
        """Window rows, not pending, not dead-lettered (nor summarized): key, text, bb_tried, extras."""
        t, ph = self.tables, self._ph
        key = f"CAST(s.{source.key_column} AS TEXT)"
        attempts_sql, attempts_params = self._attempts_sql(key, run_id)
        extras = "".join(f", s.{column}" for column in source.extra_columns)
        sql = (
            f"SELECT {key} AS source_key, s.{source.text_column} AS text, {attempts_sql} AS bb_tried{extras}"
            f" FROM {source.table} s"
            f" WHERE s.{source.timestamp_column} >= {ph} AND s.{source.timestamp_column} < {ph}"
            f" AND NOT EXISTS (SELECT 1 FROM {t.pending_table} p"
            f"  WHERE p.source_key = {key} AND p.prompt_version = {ph})"
            f" AND NOT EXISTS (SELECT 1 FROM {t.error_table} d"
            f"  WHERE d.source_key = {key} AND d.prompt_version = {ph} AND d.dead_lettered = {ph})"
        )
        params: tuple[Any, ...] = (
            prompt_version,
            *attempts_params,
            self._ts(start),
            self._ts(end),
            prompt_version,
            prompt_version,
            self._bool(True),
        )
        if not include_summarized:
            sql += (
                f" AND NOT EXISTS (SELECT 1 FROM {t.output_table} o"
                f"  WHERE o.source_key = {key} AND o.prompt_version = {ph})"
            )
            params += (prompt_version,)
        return sql, params

    def _pending_sql(
        self, prompt_version: str, run_id: str | None, include_summarized: bool, claimed_only: bool = False
    ) -> tuple[str, tuple[Any, ...]]:
        """Pending keys, not dead-lettered (nor summarized): key, reason, first_seen_at, bb_tried.

        Keys ``run_id`` holds; with ``claimed_only`` false also those nobody holds or whose claim is stale.
        """
        if claimed_only and not run_id:
            raise ValueError("claimed_only needs the run_id that claimed the keys")
        t, ph = self.tables, self._ph
        attempts_sql, attempts_params = self._attempts_sql("p.source_key", run_id)
        sql = (
            f"SELECT p.source_key, p.reason, p.first_seen_at, {attempts_sql} AS bb_tried"
            f" FROM {t.pending_table} p WHERE p.prompt_version = {ph}"
            f" AND NOT EXISTS (SELECT 1 FROM {t.error_table} d WHERE d.source_key = p.source_key"
            f"  AND d.prompt_version = p.prompt_version AND d.dead_lettered = {ph})"
        )
        if claimed_only:
            sql += f" AND p.claimed_by = {ph}"
            claim_params: tuple[Any, ...] = (run_id,)
        else:
            claimable, claim_params = self._claimable(run_id or "", column_prefix="p.")
            sql += f" AND {claimable}"
        if not include_summarized:
            sql += (
                f" AND NOT EXISTS (SELECT 1 FROM {t.output_table} o"
                f"  WHERE o.source_key = p.source_key AND o.prompt_version = p.prompt_version)"
            )
        return sql, (prompt_version, *attempts_params, prompt_version, self._bool(True), *claim_params)

    def _claimable(self, run_id: str, *, column_prefix: str = "") -> tuple[str, tuple[Any, ...]]:
        """A pending key ``run_id`` may take: nobody holds it, ``run_id`` does, or its claim is stale.

        A claim is stale when it is older than ``claim_ttl``, unless its run is in flight (as
        :meth:`judge_claims` found it).
        """
        c, ph = column_prefix, self._ph
        stale = f"{c}claimed_at < {ph}"
        params: tuple[Any, ...] = (run_id, self._ts(datetime.now(UTC) - self.claim_ttl))
        if self._live_holders:
            stale += f" AND {c}claimed_by NOT IN ({self._params(len(self._live_holders))})"
            params += self._live_holders
        return f"({c}claimed_by IS NULL OR {c}claimed_by = {ph} OR {stale})", params

    def judge_claims(self, *, run_id: str, run_is_live: Callable[[str], bool | None]) -> None:
        """Ask ``run_is_live`` about every other run holding a claim older than ``claim_ttl`` (of any
        prompt version), for this warehouse's later claims and reads: a run in flight (``True``) keeps
        its keys however old its claim (one waiting days for a pool slot or the jobs-in-flight quota,
        then a day-long job, still sends them). Of the others the claim's age decides, as before: a
        run that is over may still have a completed job whose output an operator is about to load by
        clearing its collect.
        """
        ph = self._ph
        with self._read_cursor(server_side=False) as cur:
            cur.execute(
                f"SELECT DISTINCT claimed_by FROM {self.tables.pending_table}"
                f" WHERE claimed_by IS NOT NULL AND claimed_by <> {ph} AND claimed_at < {ph}",
                (run_id, self._ts(datetime.now(UTC) - self.claim_ttl)),
            )
            holders = sorted(str(holder) for (holder,) in cur.fetchall())
        self._live_holders = tuple(holder for holder in holders if run_is_live(holder) is True)
        if self._live_holders:
            log.info(
                "Queued keys held past the claim TTL by runs in flight stay theirs: %s",
                ", ".join(self._live_holders),
            )

    def claim_pending(
        self,
        *,
        run_id: str,
        prompt_version: str,
        limit: int | None = None,
        max_attempts: int | None = None,
        include_summarized: bool = False,
    ) -> int:
        """Claim for ``run_id`` every pending key no other live run holds; returns how many it holds.

        One UPDATE, so two runs claiming at once split the queue between them, each key to one run.
        With ``limit`` (a run's ``record_limit``) only the first ``limit`` keys in key order that its
        pending read takes (not dead-lettered, not summarized unless ``include_summarized``, tried
        fewer than ``max_attempts`` times), and no others (an earlier try's are let go first): a key
        it would not read is not hidden from the next runs, and one it skips does not take the place
        of one it would read.
        """
        t, ph = self.tables, self._ph
        now = datetime.now(UTC)
        free, free_params = self._claimable(run_id)
        claimable = f"prompt_version = {ph} AND {free}"
        params: tuple[Any, ...] = (prompt_version, *free_params)
        where = claimable
        if limit is not None:
            readable_sql, readable_params = self._pending_sql(prompt_version, run_id, include_summarized)
            tried = ""
            if max_attempts is not None:
                tried = f" WHERE q.bb_tried < {ph}"
                readable_params += (max_attempts,)
            where = (
                f"source_key IN (SELECT q.source_key FROM ({readable_sql}) q{tried}"
                f" ORDER BY q.source_key LIMIT {int(limit)}) AND {claimable}"
            )
            params = (*readable_params, *params)
        with self._transaction() as conn:
            cur = conn.cursor()
            if limit is not None:  # an earlier try of this run may hold keys past the first ``limit``
                cur.execute(
                    f"UPDATE {t.pending_table} SET claimed_by = NULL, claimed_at = NULL"
                    f" WHERE prompt_version = {ph} AND claimed_by = {ph}",
                    (prompt_version, run_id),
                )
            cur.execute(
                f"UPDATE {t.pending_table} SET claimed_by = {ph}, claimed_at = {ph} WHERE {where}",
                (run_id, self._ts(now), *params),
            )
            return max(cur.rowcount, 0)

    def requeue_other_prompt_versions(self, *, run_id: str, prompt_version: str) -> int:
        """Queue under ``prompt_version`` the keys queued under another one; returns how many.

        Every read and claim is of the current prompt version, so a key queued before the prompt
        changed (carried over, or to retry) would otherwise never be summarized: no later run reads
        it, and the report's look-back skips a key that has a pending row. Each such key is queued
        again as carried over (no attempt spent under the new prompt), keeping when it was first
        queued, unless it already has a summary or a final error under ``prompt_version``; its old
        row goes. Keys another run holds (:meth:`_claimable`) stay where they are until that run
        loads them. One transaction, the rows read locked, so a claim made meanwhile is not deleted.
        """
        t, ph = self.tables, self._ph
        claimable, claim_params = self._claimable(run_id)
        lock = "" if self.dialect == "sqlite" else " FOR UPDATE"  # SQLite: BEGIN IMMEDIATE locks the file
        with self._transaction() as conn:
            cur = conn.cursor()
            try:
                cur.execute(
                    f"SELECT source_key, prompt_version, first_seen_at FROM {t.pending_table}"
                    f" WHERE prompt_version <> {ph} AND {claimable} ORDER BY source_key{lock}",
                    (prompt_version, *claim_params),
                )
                queued = [(str(key), str(version), seen) for key, version, seen in cur.fetchall()]
                if not queued:
                    return 0
                first_seen: dict[str, Any] = {}
                for key, _, seen in queued:
                    if key not in first_seen or seen < first_seen[key]:
                        first_seen[key] = seen
                ended = self._ended_under(cur, list(first_seen), prompt_version)
            finally:
                cur.close()
            rows = [
                (key, prompt_version, "carried_over", seen, 0, run_id, *_UNCLAIMED)
                for key, seen in first_seen.items()
                if key not in ended
            ]
            by_version: dict[str, list[str]] = {}
            for key, version, _ in queued:
                by_version.setdefault(version, []).append(key)
            for batch in _batches(rows, _WRITE_BATCH):
                self._upsert_pending(conn, batch, keep_reason=True)
            for version, keys in by_version.items():
                self._delete_pending(conn, keys, version)
        log.warning(
            "%d keys queued under other prompt versions (%s) are queued under %s now%s",
            len(rows),
            ", ".join(sorted(by_version)),
            prompt_version,
            f"; {len(ended)} already summarized or ended under it left the queue" if ended else "",
        )
        return len(rows)

    def _ended_under(self, cur: Any, keys: list[str], prompt_version: str) -> set[str]:
        """Of ``keys``, those with a summary or a final error row (not to retry, or dead-lettered)
        under ``prompt_version``."""
        t, ph = self.tables, self._ph
        ended: set[str] = set()
        for batch in _batches(keys, 500):
            in_batch = f"prompt_version = {ph} AND source_key IN ({self._params(len(batch))})"
            cur.execute(f"SELECT source_key FROM {t.output_table} WHERE {in_batch}", (prompt_version, *batch))
            ended.update(str(key) for (key,) in cur.fetchall())
            cur.execute(
                f"SELECT source_key FROM {t.error_table} WHERE {in_batch}"
                f" AND (retryable = {ph} OR dead_lettered = {ph})",
                (prompt_version, *batch, self._bool(False), self._bool(True)),
            )
            ended.update(str(key) for (key,) in cur.fetchall())
        return ended

    def dead_letter_exhausted(self, *, run_id: str, prompt_version: str, max_attempts: int) -> int:
        """Dead-letter the queued keys ``run_id`` may take that were already tried ``max_attempts`` times.

        A load dead-letters a key when its last try fails at ``max_attempts``; a key queued before
        ``max_attempts`` was lowered would otherwise stay queued for good, skipped by every read.
        Each gets an ``attempts_exhausted`` error row (dead-lettered, naming both numbers) and leaves
        the queue. Returns how many.
        """
        # Summarized keys are left alone: a dead letter would keep them from a re-summarize too.
        sql, params = self._pending_sql(prompt_version, run_id, include_summarized=False)
        with self._read_cursor(server_side=False) as cur:
            cur.execute(
                f"SELECT q.source_key, q.bb_tried FROM ({sql}) q WHERE q.bb_tried >= {self._ph}",
                (*params, max_attempts),
            )
            exhausted = [(str(key), int(tried)) for key, tried in cur.fetchall()]
        if not exhausted:
            return 0
        now = self._ts(datetime.now(UTC))
        rows = [
            (
                key,
                prompt_version,
                run_id,
                "queue",
                "attempts_exhausted",
                f"tried in {tried} runs; max_attempts is {max_attempts} now (it was higher when queued)",
                tried,
                self._bool(False),
                self._bool(True),
                None,
                now,
            )
            for key, tried in exhausted
        ]
        with self._transaction() as conn:
            for batch in _batches(rows, _WRITE_BATCH):
                self._upsert_errors(conn, batch)
                self._delete_pending(conn, [row[0] for row in batch], prompt_version)
        return len(rows)

    def claim_window(
        self,
        *,
        run_id: str,
        prompt_version: str,
        start: datetime,
        end: datetime,
        run_is_live: Callable[[str], bool | None] | None = None,
    ) -> list[str]:
        """Hold ``[start, end)`` for ``run_id`` until :meth:`release_window`; return the runs taken over.

        Another run's claim on an overlapping window (same prompt version) blocks while
        ``run_is_live`` says that run is in flight (``True``: Airflow has it queued or running, or
        Bedrock still runs its jobs). It is taken over, with a warning, when ``run_is_live`` says the
        run is over (``False``), or when nobody can tell (``None``, or no ``run_is_live``) and the
        claim is older than ``claim_ttl``. Whether runs are live is asked with no lock held (it may
        take seconds); then, under the lock (a table lock on Postgres, ``BEGIN IMMEDIATE`` on SQLite),
        any claim that appeared or changed meanwhile blocks, so of two runs claiming a day at once
        exactly one gets it.
        """
        table = self.tables.window_claims_table
        now = datetime.now(UTC)
        expired = self._ts(now - self.claim_ttl)
        taken_over: dict[tuple[str, Any], str] = {}
        with self._read_cursor(server_side=False) as cur:
            overlapping = self._overlapping_claims(cur, run_id, prompt_version, start, end)
        for claim in overlapping:
            other, claimed_at = claim[0], claim[3]
            live = run_is_live(other) if run_is_live is not None else None
            if live is None and claimed_at >= expired:
                why = "nobody can tell whether it is over (Airflow does not have it, or did not answer)"
            elif live:
                why = "Airflow has it queued or running, or Bedrock still runs its jobs"
            else:
                taken_over[other, claimed_at] = "is over" if live is False else "is older than the claim TTL"
                continue
            raise self._window_busy(claim, start, end, prompt_version, why)
        with self._transaction() as conn:
            cur = conn.cursor()
            if self.dialect == "postgres":
                cur.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
            for claim in self._overlapping_claims(cur, run_id, prompt_version, start, end):
                if (claim[0], claim[3]) not in taken_over:
                    raise self._window_busy(claim, start, end, prompt_version, "it claimed them a moment ago")
            ph = self._ph
            cur.execute(
                f"DELETE FROM {table} WHERE run_id = {ph} AND prompt_version = {ph}", (run_id, prompt_version)
            )
            for other, claimed_at in taken_over:  # exactly the rows judged above
                cur.execute(
                    f"DELETE FROM {table}"
                    f" WHERE run_id = {ph} AND prompt_version = {ph} AND claimed_at = {ph}",
                    (other, prompt_version, claimed_at),
                )
            cur.execute(
                f"INSERT INTO {table} (run_id, prompt_version, window_start, window_end, claimed_at)"
                f" VALUES ({self._params(5)})",
                (run_id, prompt_version, self._ts(start), self._ts(end), self._ts(now)),
            )
            cur.close()
        log.info(
            "Run %s holds the window %s .. %s (UTC, prompt version %s) until its output is loaded",
            run_id,
            self._ts(start),
            self._ts(end),
            prompt_version,
        )
        for (other, _), how in taken_over.items():
            log.warning(
                "Took over the window claim of run %s, which %s: rows it staged and did not load are "
                "staged again by this run",
                other,
                how,
            )
        return [other for other, _ in taken_over]

    def _overlapping_claims(
        self, cur: Any, run_id: str, prompt_version: str, start: datetime, end: datetime
    ) -> list[tuple[Any, ...]]:
        """Other runs' claims on windows overlapping ``[start, end)``: run_id, start, end, claimed_at."""
        ph = self._ph
        cur.execute(
            f"SELECT run_id, window_start, window_end, claimed_at FROM {self.tables.window_claims_table}"
            f" WHERE prompt_version = {ph} AND run_id <> {ph} AND window_start < {ph} AND window_end > {ph}"
            " ORDER BY claimed_at, run_id",
            (prompt_version, run_id, self._ts(end), self._ts(start)),
        )
        return [tuple(row) for row in cur.fetchall()]

    def _window_busy(
        self, claim: tuple[Any, ...], start: datetime, end: datetime, prompt_version: str, why: str
    ) -> WindowBusyError:
        """The error naming ``claim`` (a row of :meth:`_overlapping_claims`) and why it still holds."""
        other, other_start, other_end, claimed_at = claim
        return WindowBusyError(
            f"run {other!r} holds the window {other_start} .. {other_end} (UTC, claimed at "
            f"{claimed_at}), which overlaps this run's {self._ts(start)} .. {self._ts(end)} for "
            f"prompt version {prompt_version!r}, and {why}: staging its rows again would pay for them "
            "twice. Retry this task once that run is over (its claim ends when its output is loaded). "
            "If it is gone for good, end its claim with the bedrock_batch_ops DAG (action "
            f"release_window) or delete its row from {self.tables.window_claims_table}."
        )

    def release_window(self, *, run_id: str, prompt_version: str | None = None) -> int:
        """End ``run_id``'s window claim (its output is loaded); all its prompt versions' when ``None``.

        Returns how many claims ended (0: the run held none).
        """
        if _WINDOW_CLAIMS_VERSION not in self.applied_versions():
            return 0  # tables from before window claims: no run holds one
        table, ph = self.tables.window_claims_table, self._ph
        sql, params = f"DELETE FROM {table} WHERE run_id = {ph}", (run_id,)
        if prompt_version is not None:
            sql, params = f"{sql} AND prompt_version = {ph}", (run_id, prompt_version)
        with self._transaction() as conn:
            cur = conn.cursor()
            cur.execute(sql, params)
            released = max(cur.rowcount, 0)
        if released:
            log.info("Run %s released its window: its output is loaded", run_id)
        return released

    def job_loaded(self, job_arn: str, *, run_id: str) -> bool:
        """Whether run ``run_id`` loaded anything of job ``job_arn`` (a summary or an error row)."""
        t, ph = self.tables, self._ph
        with self._read_cursor(server_side=False) as cur:
            cur.execute(
                f"SELECT EXISTS (SELECT 1 FROM {t.output_table} WHERE run_id = {ph} AND job_arn = {ph})"
                f" OR EXISTS (SELECT 1 FROM {t.error_table} WHERE run_id = {ph} AND job_arn = {ph})",
                (run_id, job_arn, run_id, job_arn),
            )
            return bool(cur.fetchone()[0])

    def results_of_run(self, keys: Iterable[str], *, run_id: str, prompt_version: str) -> LoadedResults:
        """The summary or error rows run ``run_id`` loaded for ``keys`` (a task's earlier try loaded them)."""
        with self._read_cursor(server_side=False) as cur:
            return self._results_of_run(cur, list(dict.fromkeys(keys)), run_id, prompt_version)

    def _results_of_run(self, cur: Any, keys: list[str], run_id: str, prompt_version: str) -> LoadedResults:
        t, ph = self.tables, self._ph
        summaries: dict[str, tuple[int, int]] = {}
        errors: dict[str, tuple[bool, bool]] = {}
        for batch in _batches(keys, 500):
            where = f"run_id = {ph} AND prompt_version = {ph} AND source_key IN ({self._params(len(batch))})"
            cur.execute(
                f"SELECT source_key, input_tokens, output_tokens FROM {t.output_table} WHERE {where}",
                (run_id, prompt_version, *batch),
            )
            for key, input_tokens, output_tokens in cur.fetchall():
                summaries[key] = (int(input_tokens or 0), int(output_tokens or 0))
            cur.execute(
                f"SELECT source_key, retryable, dead_lettered FROM {t.error_table} WHERE {where}",
                (run_id, prompt_version, *batch),
            )
            for key, retryable, dead in cur.fetchall():
                if key not in summaries:
                    errors[key] = (bool(retryable), bool(dead))
        return LoadedResults(summaries, errors)

    def take_keys_to_call(
        self, keys: Iterable[str], *, run_id: str, prompt_version: str, read_since: datetime | None
    ) -> tuple[LoadedResults, set[str]]:
        """
        Before a run's small batch is called (again): what this run already loaded for ``keys``, and
        the keys another run took meanwhile; the pending rows of the others are claimed for ``run_id``.

        Another run took a key when it holds the key's pending row (a live claim), or loaded a summary
        or an error row of it since ``read_since`` (when this run read its rows): records this run
        carried over after a refusal, then called again when its task was cleared, must not be billed
        twice. The claims are settled before the rows are looked at, so a load that takes a key off
        the queue and writes its row in one transaction is seen on one side or the other. This run's
        claims on the keys it will not call are let go, so the next run takes those queued to retry.
        """
        keys = list(dict.fromkeys(keys))
        t, ph = self.tables, self._ph
        elsewhere: set[str] = set()
        free, free_params = self._claimable(run_id)
        with self._transaction() as conn:
            cur = conn.cursor()
            try:
                earlier = self._results_of_run(cur, keys, run_id, prompt_version)
                rest = [key for key in keys if key not in earlier]
                for batch in _batches(rest, 500):
                    in_batch = f"prompt_version = {ph} AND source_key IN ({self._params(len(batch))})"
                    cur.execute(
                        f"UPDATE {t.pending_table} SET claimed_by = {ph}, claimed_at = {ph}"
                        f" WHERE {in_batch} AND {free}",
                        (run_id, self._ts(datetime.now(UTC)), prompt_version, *batch, *free_params),
                    )
                    cur.execute(
                        f"SELECT source_key FROM {t.pending_table} WHERE {in_batch}"
                        f" AND claimed_by IS NOT NULL AND claimed_by <> {ph}",
                        (prompt_version, *batch, run_id),
                    )
                    elsewhere.update(key for (key,) in cur.fetchall())
                    if read_since is None:
                        continue
                    since = self._ts(read_since)
                    for table, stamp in ((t.output_table, "loaded_at"), (t.error_table, "recorded_at")):
                        cur.execute(
                            f"SELECT source_key FROM {table} WHERE {in_batch}"
                            f" AND run_id <> {ph} AND {stamp} >= {ph}",
                            (prompt_version, *batch, run_id, since),
                        )
                        elsewhere.update(key for (key,) in cur.fetchall())
            finally:
                cur.close()
            skipped = [key for key in keys if key in earlier or key in elsewhere]
            self._let_go(conn, skipped, run_id=run_id, prompt_version=prompt_version)
        return earlier, elsewhere

    def let_go(self, keys: Iterable[str], *, run_id: str, prompt_version: str) -> None:
        """Release ``run_id``'s claims on ``keys`` (queued keys it will not call after all)."""
        with self._transaction() as conn:
            self._let_go(conn, list(dict.fromkeys(keys)), run_id=run_id, prompt_version=prompt_version)

    def _let_go(self, conn: Any, keys: list[str], *, run_id: str, prompt_version: str) -> None:
        ph = self._ph
        cur = conn.cursor()
        try:
            for batch in _batches(keys, 500):
                cur.execute(
                    f"UPDATE {self.tables.pending_table} SET claimed_by = NULL, claimed_at = NULL"
                    f" WHERE prompt_version = {ph} AND claimed_by = {ph}"
                    f" AND source_key IN ({self._params(len(batch))})",
                    (prompt_version, run_id, *batch),
                )
        finally:
            cur.close()

    def window_claims(self) -> list[dict[str, Any]]:
        """Every window claim, earliest window first, as dicts of the claims table's columns (none while
        the pipeline's tables predate window claims: this never migrates them)."""
        if _WINDOW_CLAIMS_VERSION not in self.applied_versions():
            return []
        columns = ("run_id", "prompt_version", "window_start", "window_end", "claimed_at")
        with self._read_cursor(server_side=False) as cur:
            cur.execute(
                f"SELECT {', '.join(columns)} FROM {self.tables.window_claims_table}"
                " ORDER BY window_start, run_id"
            )
            return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]

    def _iter_window_rows(
        self,
        source: SourceSpec,
        start: datetime,
        end: datetime,
        prompt_version: str,
        max_attempts: int,
        run_id: str | None,
        chunk_size: int,
        include_summarized: bool,
    ) -> Iterator[SourceRowDict]:
        sql, params = self._window_sql(source, start, end, prompt_version, run_id, include_summarized)
        sql += f" ORDER BY s.{source.timestamp_column}, s.{source.key_column}"
        with self._read_cursor() as cur:
            cur.execute(sql, params)
            while chunk := cur.fetchmany(chunk_size):
                for row in chunk:
                    attempt = int(row[2]) + 1
                    if attempt > max_attempts:
                        continue
                    yield self._row_dict(source, row[0], row[1], attempt, "window", None, row[3:])

    def _iter_pending_rows(
        self,
        source: SourceSpec,
        prompt_version: str,
        max_attempts: int,
        run_id: str | None,
        chunk_size: int,
        include_summarized: bool,
        claimed_only: bool,
    ) -> Iterator[SourceRowDict]:
        """Pending keys by keyset pages, then their source rows by key (the key column's index serves)."""
        base_sql, base_params = self._pending_sql(prompt_version, run_id, include_summarized, claimed_only)
        page_sql = f"{base_sql} AND p.source_key > {self._ph} ORDER BY p.source_key LIMIT {int(chunk_size)}"
        extras = "".join(f", s.{column}" for column in source.extra_columns)
        last_key = ""
        with self._read_cursor(server_side=False) as cur:
            while True:  # bounded: each page starts after the last key of the previous one
                cur.execute(page_sql, (*base_params, last_key))
                page = cur.fetchall()
                if not page:
                    return
                last_key = page[-1][0]
                keys = [row[0] for row in page]
                cur.execute(
                    f"SELECT CAST(s.{source.key_column} AS TEXT), s.{source.text_column}{extras}"
                    f" FROM {source.table} s WHERE s.{source.key_column} IN ({self._params(len(keys))})",
                    keys,
                )
                found = {row[0]: row for row in cur.fetchall()}
                for key, reason, first_seen_at, tried in page:
                    attempt = int(tried) + 1
                    if attempt > max_attempts:
                        continue
                    src = found.get(key)
                    text = src[1] if src else None
                    extra = src[2:] if src else (None,) * len(source.extra_columns)
                    yield self._row_dict(source, key, text, attempt, reason, first_seen_at, extra)
                if len(page) < chunk_size:
                    return

    @staticmethod
    def _row_dict(
        source: SourceSpec,
        key: Any,
        text: Any,
        attempt: int,
        origin: str,
        pending_since: Any,
        extra: Sequence[Any],
    ) -> SourceRowDict:
        row: SourceRowDict = {
            "source_key": None if key is None else str(key),
            "text": text,
            "attempt": attempt,
            "origin": origin,
            "pending_since": pending_since,
        }
        row.update(zip(source.extra_columns, extra, strict=True))
        return row

    @contextmanager
    def _read_cursor(self, *, server_side: bool = True) -> Generator[Any, None, None]:
        """A cursor for reading in chunks: a named (server-side) cursor on Postgres."""
        conn = self.hook.get_conn()
        try:
            if self.dialect == "postgres":
                with conn.cursor() as setup:
                    setup.execute("SET TIME ZONE 'UTC'")
                name = f"bedrock_batch_{uuid.uuid4().hex}" if server_side else None
                cur = conn.cursor(name=name) if name else conn.cursor()
            else:
                cur = conn.cursor()
            try:
                yield cur
            finally:
                cur.close()
            conn.rollback()  # read-only: end the transaction the cursor opened
        finally:
            conn.close()

    # -- writing ------------------------------------------------------------------------------------

    def load_job(
        self,
        results: Iterable[SummaryRow],
        errors: Iterable[ErrorRow],
        *,
        run_id: str,
        job_arn: str | None,
        prompt_version: str,
        model_id: str,
        max_attempts: int,
    ) -> dict[str, int]:
        """Load one job's outcome in one transaction; a rerun of the same run gives the same rows.

        ``results`` is consumed before ``errors``, so ``errors`` may be a generator that yields what
        reading the results found (the collector streams a job's output once). Both are written in
        batches: retryable errors under ``max_attempts`` queue as ``retry``, those at
        ``max_attempts`` are dead-lettered; summaries take their keys off the pending queue.
        """
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {max_attempts}")
        now = self._ts(datetime.now(UTC))
        counts = {"summarized": 0, "errored": 0, "retry": 0, "dead_lettered": 0}
        stamp = _LoadStamp(prompt_version, model_id, job_arn, run_id, now, max_attempts)
        with self._transaction() as conn:
            with _BatchWriter(self.dialect) as writer:
                for batch in _batches_when(
                    chain(results, errors), _WRITE_BATCH, step=_WRITE_STEP, ready=writer.idle
                ):
                    rows = self._batch_rows(batch, stamp)
                    counts["errored"] += len(rows.errors)
                    counts["retry"] += len(rows.retries)
                    counts["summarized"] += len(rows.summaries)
                    counts["dead_lettered"] += rows.dead_lettered
                    writer.write(self._write_batch, conn, prompt_version, rows)
            if counts["summarized"]:
                self._clear_loaded_pending(
                    conn, prompt_version, run_id=run_id, loaded_at=now, summarized=counts["summarized"]
                )
        log.info("Loaded job %s of run %s: %s", job_arn, run_id, counts)
        return counts

    def _batch_rows(self, batch: list[SummaryRow | ErrorRow], stamp: _LoadStamp) -> _BatchRows:
        """A batch's items as the rows of each table (this loop runs once per record of a load)."""
        rows = _BatchRows([], [], [], [], 0)
        prompt_version, job_arn, run_id, now = stamp.prompt_version, stamp.job_arn, stamp.run_id, stamp.now
        summaries, model_id = rows.summaries, stamp.model_id
        for item in batch:
            if type(item) is SummaryRow:
                summaries.append(
                    (
                        item.source_key,
                        prompt_version,
                        model_id,
                        item.summary,
                        item.input_tokens,
                        item.output_tokens,
                        item.stop_reason,
                        job_arn,
                        run_id,
                        now,
                    )
                )
                continue
            error: ErrorRow = item  # type: ignore[assignment]
            spent = spends_attempt(error.stage, error.code)
            dead = bool(error.retryable) and spent and error.attempt >= stamp.max_attempts
            rows.errors.append(
                (
                    error.source_key,
                    prompt_version,
                    run_id,
                    error.stage,
                    error.code,
                    error.message,
                    int(error.attempt),
                    self._bool(error.retryable),
                    self._bool(dead),
                    job_arn,
                    now,
                )
            )
            if error.retryable and not dead:
                tried = error.attempt if spent else error.attempt - 1
                rows.retries.append(
                    (error.source_key, prompt_version, "retry", now, tried, run_id, *_UNCLAIMED)
                )
            else:
                rows.done_keys.append(error.source_key)
            rows.dead_lettered += dead
        return rows

    def _write_batch(self, conn: Any, prompt_version: str, rows: _BatchRows) -> None:
        if rows.errors:
            self._upsert_errors(conn, rows.errors)
            self._upsert_pending(conn, rows.retries, keep_reason=False)
            self._delete_pending(conn, rows.done_keys, prompt_version)
        if rows.summaries:
            self._upsert(conn, self.tables.output_table, _OUTPUT_COLUMNS, 2, rows.summaries)

    def _clear_loaded_pending(
        self, conn: Any, prompt_version: str, *, run_id: str, loaded_at: Any, summarized: int
    ) -> None:
        """Take the keys this load summarized off the pending queue: one statement at the end.

        The load's summaries are the output rows stamped with its ``run_id`` and ``loaded_at``;
        sending every loaded key back as a parameter cost a million-record load ~2 us a record.
        Whichever is shorter drives the delete: a queue shorter than the load is walked and each key
        looked up in the output table; else the load's rows are found by the (run_id, loaded_at)
        index (migration 0004) and looked up in the queue. Counting the queue stops at the load's size.
        """
        pending, output, ph = self.tables.pending_table, self.tables.output_table, self._ph
        cur = conn.cursor()
        try:
            cur.execute(
                f"SELECT COUNT(*) FROM (SELECT 1 FROM {pending} WHERE prompt_version = {ph} LIMIT {ph}) q",
                (prompt_version, summarized),
            )
            queued = int(cur.fetchone()[0])
            if queued == 0:
                return
            if queued < summarized:  # a correlated scalar subquery: the planner keeps it per queued row
                cur.execute(
                    f"DELETE FROM {pending} WHERE prompt_version = {ph} AND ("
                    f"SELECT o.run_id = {ph} AND o.loaded_at = {ph} FROM {output} o"
                    f" WHERE o.source_key = {pending}.source_key"
                    f" AND o.prompt_version = {pending}.prompt_version)",
                    (prompt_version, run_id, loaded_at),
                )
                return
            cur.execute(
                f"DELETE FROM {pending} WHERE prompt_version = {ph} AND source_key IN ("
                f"SELECT source_key FROM {output} WHERE run_id = {ph} AND loaded_at = {ph}"
                f" AND prompt_version = {ph})",
                (prompt_version, run_id, loaded_at, prompt_version),
            )
        finally:
            cur.close()

    def record_rejections(
        self,
        errors: Iterable[RejectionLike],
        *,
        run_id: str,
        prompt_version: str,
    ) -> int:
        """Record pre-submit rejections (never retried) and take their keys off the pending queue.

        A rejection without a key (``null_key``) cannot be stored against one: it is counted in the log.
        ``attempt`` is taken from the row when it has one, else 1. Returns the rows written.
        """
        now = self._ts(datetime.now(UTC))
        written = keyless = 0
        with self._transaction() as conn:
            for batch in _batches(errors, _WRITE_BATCH):
                rows = []
                for err in batch:
                    if err.source_key is None:
                        keyless += 1
                        continue
                    attempt = int(getattr(err, "attempt", 1) or 1)
                    rows.append(
                        (
                            str(err.source_key),
                            prompt_version,
                            run_id,
                            err.stage,
                            err.code,
                            err.message,
                            attempt,
                            self._bool(False),
                            self._bool(False),
                            None,
                            now,
                        )
                    )
                self._upsert_errors(conn, rows)
                self._delete_pending(conn, [row[0] for row in rows], prompt_version)
                written += len(rows)
        if keyless:
            log.warning("Run %s: %d rejected rows had no key and were not recorded", run_id, keyless)
        return written

    def carry_over(
        self,
        keys: Iterable[str],
        *,
        run_id: str,
        prompt_version: str,
        reason: PendingReason = "carried_over",
    ) -> int:
        """Queue keys that were read but not submitted; a key already queued keeps its reason and attempts."""
        if reason not in ("carried_over", "retry"):
            raise ValueError(f"pending reason must be 'carried_over' or 'retry', got {reason!r}")
        now = self._ts(datetime.now(UTC))
        queued = 0
        with self._transaction() as conn:
            for batch in _batches(keys, _WRITE_BATCH):
                rows = [(str(key), prompt_version, reason, now, 0, run_id, *_UNCLAIMED) for key in batch]
                self._upsert_pending(conn, rows, keep_reason=True)
                queued += len(rows)
        return queued

    # -- dialect bulk paths -------------------------------------------------------------------------

    def _upsert_errors(self, conn: Any, rows: list[tuple[Any, ...]]) -> None:
        self._upsert(conn, self.tables.error_table, _ERROR_COLUMNS, 4, rows)

    def _upsert_pending(self, conn: Any, rows: list[tuple[Any, ...]], *, keep_reason: bool) -> None:
        """Insert pending rows; on conflict keep first_seen_at, and reason/attempts too for carry-overs.

        Queuing a key again releases a claim on it only if nobody holds it or the queuing run does:
        an older run's collect, cleared and run again, must not free a key a later run is working on
        (a third run could then take it too, and Bedrock bill it twice).
        """
        table = self.tables.pending_table
        kept = ("source_key", "prompt_version", "first_seen_at")
        if keep_reason:
            kept += ("reason", "attempts")
        ours = f"({table}.claimed_by IS NULL OR {table}.claimed_by = excluded.last_run_id)"
        claims = {
            col: f"CASE WHEN {ours} THEN excluded.{col} ELSE {table}.{col} END"
            for col in ("claimed_by", "claimed_at")
        }
        self._upsert(conn, table, _PENDING_COLUMNS, 2, rows, keep=kept, on_conflict=claims)

    def _delete_pending(self, conn: Any, keys: list[str], prompt_version: str) -> None:
        if not keys:
            return
        table = self.tables.pending_table
        cur = conn.cursor()
        try:
            if self.dialect != "sqlite":  # one statement, the keys as one array parameter
                cur.execute(
                    f"DELETE FROM {table} WHERE prompt_version = %s AND source_key = ANY(%s)",
                    (prompt_version, list(dict.fromkeys(keys))),
                )
                return
            for batch in _batches(dict.fromkeys(keys), 500):
                cur.execute(
                    f"DELETE FROM {table} WHERE prompt_version = {self._ph}"
                    f" AND source_key IN ({self._params(len(batch))})",
                    (prompt_version, *batch),
                )
        finally:
            cur.close()

    def _upsert(
        self,
        conn: Any,
        table: str,
        columns: tuple[str, ...],
        key_count: int,
        rows: list[tuple[Any, ...]],
        *,
        keep: tuple[str, ...] | None = None,
        on_conflict: Mapping[str, str] | None = None,
    ) -> None:
        """Insert or update ``rows`` keyed by the first ``key_count`` columns; later duplicates win.

        A column in ``keep`` keeps its value on conflict; one in ``on_conflict`` takes that SQL
        expression (``excluded.<col>`` is the new value, ``<table>.<col>`` the old); others the new value.
        On Postgres, rows whose keys are all new (a job's first load) are copied straight into the
        table; otherwise (a rerun) they are copied to a temporary table and upserted from there.
        """
        if not rows:
            return
        keys = columns[:key_count]
        kept = keep if keep is not None else keys
        expressions = dict(on_conflict or {})
        updates = ", ".join(
            f"{col} = {expressions.get(col, f'excluded.{col}')}" for col in columns if col not in kept
        )
        conflict = f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
        cols = ", ".join(columns)
        cur = conn.cursor()
        try:
            if self.dialect == "sqlite":
                cur.executemany(
                    f"INSERT INTO {table} ({cols}) VALUES ({self._params(len(columns))}) {conflict}", rows
                )
                return
            unique = len({row[:key_count] for row in rows}) == len(rows)
            if unique and _copy_if_new(cur, table, cols, rows):
                return
            stage = f"bedrock_batch_stage_{uuid.uuid4().hex[:12]}"
            cur.execute(
                f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS"
                f" SELECT {cols}, NULL::BIGINT AS seq FROM {table} WITH NO DATA"
            )
            _copy_rows(cur, stage, cols, rows, numbered=True)
            if unique:
                cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} {conflict}")
            else:  # ON CONFLICT may not touch a row twice in one statement: keep each key's last row
                cur.execute(
                    f"INSERT INTO {table} ({cols})"
                    f" SELECT DISTINCT ON ({', '.join(keys)}) {cols} FROM {stage}"
                    f" ORDER BY {', '.join(keys)}, seq DESC {conflict}"
                )
            cur.execute(f"DROP TABLE {stage}")
        finally:
            cur.close()

    # -- reporting ----------------------------------------------------------------------------------

    def run_counts(self, run_id: str, prompt_version: str) -> dict[str, int]:
        """Outcome of one run: summarized, errored (keys not summarized), dead_lettered, pending, tokens."""
        t, ph = self.tables, self._ph
        queries = {
            "summarized": (
                f"SELECT COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0)"
                f" FROM {t.output_table} WHERE run_id = {ph} AND prompt_version = {ph}",
                (run_id, prompt_version),
            ),
            "errored": (
                f"SELECT COUNT(DISTINCT e.source_key) FROM {t.error_table} e"
                f" WHERE e.run_id = {ph} AND e.prompt_version = {ph} AND NOT EXISTS (SELECT 1"
                f" FROM {t.output_table} o WHERE o.source_key = e.source_key"
                f" AND o.prompt_version = e.prompt_version)",
                (run_id, prompt_version),
            ),
            "dead_lettered": (
                f"SELECT COUNT(DISTINCT source_key) FROM {t.error_table}"
                f" WHERE run_id = {ph} AND prompt_version = {ph} AND dead_lettered = {ph}",
                (run_id, prompt_version, self._bool(True)),
            ),
            "pending": (
                f"SELECT COUNT(*), COALESCE(SUM(CASE WHEN reason = 'retry' THEN 1 ELSE 0 END), 0)"
                f" FROM {t.pending_table} WHERE last_run_id = {ph} AND prompt_version = {ph}",
                (run_id, prompt_version),
            ),
        }
        found: dict[str, tuple[Any, ...]] = {}
        with self._read_cursor(server_side=False) as cur:
            for name, (sql, params) in queries.items():
                cur.execute(sql, params)
                found[name] = cur.fetchone()
        return {
            "summarized": int(found["summarized"][0]),
            "errored": int(found["errored"][0]),
            "dead_lettered": int(found["dead_lettered"][0]),
            "pending": int(found["pending"][0]),
            "pending_retry": int(found["pending"][1]),
            "pending_carried_over": int(found["pending"][0]) - int(found["pending"][1]),
            "input_tokens": int(found["summarized"][1]),
            "output_tokens": int(found["summarized"][2]),
        }

    def pending_counts(self, prompt_version: str | None = None) -> dict[str, int]:
        """Queued keys by reason (``carried_over``, ``retry``), for one prompt version or all."""
        sql = f"SELECT reason, COUNT(*) FROM {self.tables.pending_table}"
        params: tuple[Any, ...] = ()
        if prompt_version is not None:
            sql += f" WHERE prompt_version = {self._ph}"
            params = (prompt_version,)
        with self._read_cursor(server_side=False) as cur:
            cur.execute(sql + " GROUP BY reason", params)
            counts = {"carried_over": 0, "retry": 0}
            counts.update({str(reason): int(n) for reason, n in cur.fetchall()})
        return counts

    def sample_summaries(
        self, n: int = 5, *, run_id: str | None = None, prompt_version: str | None = None
    ) -> list[dict[str, Any]]:
        """Up to ``n`` loaded summaries (newest first) for the demo printout."""
        where, params = [], []
        if run_id is not None:
            where.append(f"run_id = {self._ph}")
            params.append(run_id)
        if prompt_version is not None:
            where.append(f"prompt_version = {self._ph}")
            params.append(prompt_version)
        sql = (
            "SELECT source_key, prompt_version, model_id, summary, input_tokens, output_tokens, stop_reason"
            f" FROM {self.tables.output_table}"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" ORDER BY loaded_at DESC, source_key LIMIT {max(0, int(n))}"
        )
        names = ("source_key", "prompt_version", "model_id", "summary", "input_tokens", "output_tokens")
        with self._read_cursor(server_side=False) as cur:
            cur.execute(sql, params)
            return [dict(zip((*names, "stop_reason"), row, strict=True)) for row in cur.fetchall()]


_OUTPUT_COLUMNS = (
    "source_key",
    "prompt_version",
    "model_id",
    "summary",
    "input_tokens",
    "output_tokens",
    "stop_reason",
    "job_arn",
    "run_id",
    "loaded_at",
)
_ERROR_COLUMNS = (
    "source_key",
    "prompt_version",
    "run_id",
    "stage",
    "code",
    "message",
    "attempt",
    "retryable",
    "dead_lettered",
    "job_arn",
    "recorded_at",
)
_PENDING_COLUMNS = (
    "source_key",
    "prompt_version",
    "reason",
    "first_seen_at",
    "attempts",
    "last_run_id",
    "claimed_by",
    "claimed_at",
)
_COPY_SAVEPOINT = "bedrock_batch_copy"
_NUL_SAVEPOINT = "bedrock_batch_copy_nul"
_UNIQUE_VIOLATION = "23505"
_CHARACTER_NOT_IN_REPERTOIRE = "22021"
_INSUFFICIENT_PRIVILEGE = "42501"
_BINARY_COPY_TYPES = frozenset({16, 20, 23, 25, 1043, 1114})
"""Column types (pg_type OIDs) the rows' Python values dump to in binary as they would in text:
bool, int8, int4, text, varchar, timestamp (not int2, whose binary dumper wraps a large value)."""
#: Queuing a key (again) releases any claim on it: the next run may take it.
_UNCLAIMED = (None, None)


@dataclass(frozen=True)
class _LoadStamp:
    """What every row of one load carries besides its record's own values."""

    prompt_version: str
    model_id: str
    job_arn: str | None
    run_id: str
    now: Any
    max_attempts: int


@dataclass
class _BatchRows:
    """One batch of a load as table rows: summaries, errors, retries to queue, keys done for good."""

    summaries: list[tuple[Any, ...]]
    errors: list[tuple[Any, ...]]
    retries: list[tuple[Any, ...]]
    done_keys: list[str]
    dead_lettered: int


class _BatchWriter:
    """Runs a load's writes on one thread of their own, in order, while the caller reads the next batch.

    Reading and parsing output is Python work; a write is mostly waiting for the database, which
    releases the GIL. At most ``depth`` batches wait; the first failure is raised by the next
    ``write`` or on leaving the block, and leaving always waits for the thread first, so the
    transaction commits or rolls back only once nothing else uses its connection. SQLite writes
    stay on the calling thread (its connections belong to the thread that opened them).
    """

    def __init__(self, dialect: str, depth: int = 2) -> None:
        self._pool = (
            None if dialect == "sqlite" else ThreadPoolExecutor(1, thread_name_prefix="warehouse-write")
        )
        self._depth = depth
        self._pending: deque[Future[None]] = deque()

    def __enter__(self) -> _BatchWriter:
        return self

    def idle(self) -> bool:
        """Nothing is being written: the next batch would start at once (never, on SQLite)."""
        return self._pool is not None and all(future.done() for future in self._pending)

    def write(self, fn: Callable[..., None], *args: Any) -> None:
        if self._pool is None:
            fn(*args)
            return
        self._pending.append(self._pool.submit(fn, *args))
        while self._pending and (self._pending[0].done() or len(self._pending) > self._depth):
            self._pending.popleft().result()

    def __exit__(self, exc_type: type[BaseException] | None, *_: Any) -> None:
        if self._pool is None:
            return
        self._pool.shutdown(wait=True)
        failures = [future.exception() for future in self._pending]
        self._pending.clear()
        first = next((failure for failure in failures if failure is not None), None)
        if first is not None and exc_type is None:
            raise first


def _copy_if_new(cur: Any, table: str, cols: str, rows: list[tuple[Any, ...]]) -> bool:
    """COPY ``rows`` straight into ``table`` if none of their keys is there yet; ``False`` (nothing
    written) if one is.

    A plain COPY costs Postgres about half of a COPY into a temporary table plus an upsert from it.
    A key already in the table makes the COPY fail as a whole, and it is undone to a savepoint.
    """
    cur.execute(f"SAVEPOINT {_COPY_SAVEPOINT}")
    try:
        _copy_rows(cur, table, cols, rows)
    except Exception as err:
        if _sqlstate(err) != _UNIQUE_VIOLATION:
            raise
        cur.execute(f"ROLLBACK TO SAVEPOINT {_COPY_SAVEPOINT}")
        cur.execute(f"RELEASE SAVEPOINT {_COPY_SAVEPOINT}")
        return False
    cur.execute(f"RELEASE SAVEPOINT {_COPY_SAVEPOINT}")
    return True


def _copy_rows(
    cur: Any, table: str, cols: str, rows: list[tuple[Any, ...]], *, numbered: bool = False
) -> None:
    """``COPY table (cols) FROM STDIN`` with psycopg 3 (``cursor.copy``) or psycopg2
    (``copy_expert``, text); ``numbered`` appends each row's place in ``rows`` (a ``seq`` column).

    psycopg 3 sends the rows in COPY's binary format, typed as the table's columns are (read from
    the table, so a migration that widens an integer is followed): formatting each row as text cost
    our process ~0.4 us a row more, and Postgres ~1 us a row more to parse it. A table with a column
    of another type than ``_BINARY_COPY_TYPES`` (a migration to ``timestamptz``, say) gets text.
    Integers are not range-checked in binary: the token counts are bounded when they are read
    (``models.MAX_TOKEN_COUNT``), the attempts are the project's own.

    PostgreSQL text cannot hold NUL, which a model's output may: such a character is written as
    U+FFFD (with a warning naming the row's key) instead of failing the whole job's load. In binary
    the server refuses the whole COPY for it; it is undone to a savepoint and sent again cleaned.
    Cleaned rows replace their originals in ``rows``, so a second COPY of the same list (a rerun's
    upsert after the straight COPY met an existing key) sends them clean and warns no more.
    """
    columns = f"{cols}, seq" if numbered else cols
    sql = f"COPY {table} ({columns}) FROM STDIN"
    if not hasattr(cur, "copy"):
        _copy_text_rows(cur, sql, rows, numbered=numbered)
        return
    cur.execute(f"SELECT {columns} FROM {table} LIMIT 0")
    types = [column.type_code for column in cur.description]
    if not _BINARY_COPY_TYPES.issuperset(types):
        _clean_nul(rows)  # in text, psycopg refuses a row with NUL
        _copy_psycopg_rows(cur, sql, rows, numbered=numbered)
        return
    sql += " (FORMAT BINARY)"
    cur.execute(f"SAVEPOINT {_NUL_SAVEPOINT}")
    try:
        _copy_psycopg_rows(cur, sql, rows, numbered=numbered, types=types)
    except Exception as err:
        if _sqlstate(err) != _CHARACTER_NOT_IN_REPERTOIRE:
            raise
        cur.execute(f"ROLLBACK TO SAVEPOINT {_NUL_SAVEPOINT}")
        _clean_nul(rows)
        _copy_psycopg_rows(cur, sql, rows, numbered=numbered, types=types)
    cur.execute(f"RELEASE SAVEPOINT {_NUL_SAVEPOINT}")


def _copy_psycopg_rows(
    cur: Any, sql: str, rows: list[tuple[Any, ...]], *, numbered: bool, types: list[int] | None = None
) -> None:
    """psycopg 3's COPY of ``rows``: binary when ``types`` are given (the table's), else text."""
    with cur.copy(sql) as copy:
        if types is not None:
            copy.set_types(types)
        if numbered:
            for seq, row in enumerate(rows):
                copy.write_row((*row, seq))
        else:
            for row in rows:
                copy.write_row(row)


def _copy_text_rows(cur: Any, sql: str, rows: list[tuple[Any, ...]], *, numbered: bool) -> None:
    """psycopg2's COPY: the rows as COPY text, their NUL characters written as U+FFFD."""
    import io

    _clean_nul(rows)
    buffer = io.StringIO()
    for seq, row in enumerate(rows):
        values = (*row, seq) if numbered else row
        buffer.write("\t".join(_copy_text(value) for value in values))
        buffer.write("\n")
    buffer.seek(0)
    cur.copy_expert(sql, buffer)


def _sqlstate(err: BaseException) -> str | None:
    """The SQLSTATE of a psycopg 3 or psycopg2 error."""
    return getattr(err, "sqlstate", None) or getattr(err, "pgcode", None)


def _clean_nul(rows: list[tuple[Any, ...]]) -> None:
    """Replace each row of ``rows`` that holds NUL by its cleaned copy (see :func:`_without_nul`)."""
    for index, row in enumerate(rows):
        cleaned = _without_nul(row)
        if cleaned is not row:
            rows[index] = cleaned


def _without_nul(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """``row`` with NUL in its text values written as U+FFFD; ``row`` itself when it holds none."""
    if not any(type(value) is str and "\x00" in value for value in row):
        return row
    log.warning("Row of key %r: NUL characters written as U+FFFD (PostgreSQL text cannot hold NUL)", row[0])
    return tuple(value.replace("\x00", NUL_REPLACEMENT) if type(value) is str else value for value in row)


def _copy_text(value: Any) -> str:
    """One field in COPY text format: ``\\N`` for NULL, backslash escapes for the special characters."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
