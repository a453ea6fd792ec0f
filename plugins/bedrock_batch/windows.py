"""The data window a DAG run processes.

The nightly DAGs use a data-interval timetable aligned on local midnight, so a scheduled run (which
starts when its day is over) and a backfill run (one per logical date) both process exactly their own
local day, DST days included (23 or 25 hours). A manual run may carry no interval: it takes the window
from its params, or else the local day before it was triggered.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from bedrock_batch.errors import ConfigError


@dataclass(frozen=True)
class Window:
    """Half-open window [start, end) in UTC; ``label`` names it for logs and S3 keys."""

    start: dt.datetime
    end: dt.datetime
    label: str
    source: str

    def to_dict(self) -> dict[str, str]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "label": self.label,
            "source": self.source,
        }


def _tz(name: str) -> Any:
    import pendulum

    return pendulum.timezone(name)


def _parse_bound(value: Any, tz_name: str, setting: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime.combine(value, dt.time())
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise ConfigError(f"param {setting}: {value!r} is not an ISO date or date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_tz(tz_name))
    return moment.astimezone(dt.UTC)


def local_day(day: dt.date, tz_name: str) -> Window:
    """The local calendar day ``day`` as a UTC window (23 or 25 hours on DST days)."""
    tz = _tz(tz_name)
    start = dt.datetime.combine(day, dt.time(), tzinfo=tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    return Window(start.astimezone(dt.UTC), end.astimezone(dt.UTC), day.isoformat(), "day")


def run_type_name(run_type: Any) -> str:
    """A DAG run's type as its plain name (``scheduled``, ``backfill``, ...): the Task SDK gives an
    enum, tests and older callers a string."""
    return str(getattr(run_type, "value", run_type))


def days_before(moment: dt.datetime, days: int, tz_name: str, *, not_before: dt.date) -> dt.datetime:
    """
    ``moment`` ``days`` local days earlier, at the same local time (72 hours or 71 or 73 over a DST
    change), in UTC; never before that local time on the day ``not_before`` (a pipeline's
    ``start_date``: its first window starts there, so nothing earlier was ever meant to be read).
    """
    tz = _tz(tz_name)
    local = moment.astimezone(tz)
    wall = local.replace(tzinfo=None)
    earlier = (wall - dt.timedelta(days=days)).replace(tzinfo=tz)
    first = dt.datetime.combine(not_before, wall.time(), tzinfo=tz)
    return max(earlier, first).astimezone(dt.UTC)


def window_for_run(
    *,
    tz_name: str,
    data_interval_start: dt.datetime | None = None,
    data_interval_end: dt.datetime | None = None,
    run_after: dt.datetime | None = None,
    window_start: Any = None,
    window_end: Any = None,
    run_type: Any = None,
) -> Window:
    """Pick the window: explicit params first, then the run's data interval, then the previous day.

    A backfill's conf goes to every one of its runs: with a window in it, each run would take the
    same days (and all but the first stop at the window claim), so that is refused.
    """
    if window_start or window_end:
        if run_type_name(run_type) == "backfill":
            raise ConfigError(
                "params window_start and window_end apply to every run of a backfill, so each run would "
                "summarize the same window: leave them empty, each run then takes its own day"
            )
        if not (window_start and window_end):
            raise ConfigError("params window_start and window_end must be given together")
        start = _parse_bound(window_start, tz_name, "window_start")
        end = _parse_bound(window_end, tz_name, "window_end")
        if end <= start:
            raise ConfigError(f"param window_end ({end.isoformat()}) must be after window_start")
        return Window(start, end, f"{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}", "params")
    if data_interval_start and data_interval_end and data_interval_end > data_interval_start:
        start = data_interval_start.astimezone(dt.UTC)
        end = data_interval_end.astimezone(dt.UTC)
        local_start = data_interval_start.astimezone(_tz(tz_name))
        label = local_start.date().isoformat()
        if end - start != local_day(local_start.date(), tz_name).end - start:
            label = f"{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}"
        return Window(start, end, label, "data_interval")
    reference = run_after or data_interval_end or dt.datetime.now(dt.UTC)
    previous = reference.astimezone(_tz(tz_name)).date() - dt.timedelta(days=1)
    window = local_day(previous, tz_name)
    return Window(window.start, window.end, window.label, "previous_day")
