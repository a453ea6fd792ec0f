"""The data window of a run: scheduled and backfill runs take their own local day; manual runs params."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from airflow.sdk.api.datamodels._generated import DagRunType

from bedrock_batch.errors import ConfigError
from bedrock_batch.windows import days_before, local_day, window_for_run

UTC = dt.UTC


def test_scheduled_run_takes_its_data_interval():
    start = dt.datetime(2026, 11, 20, tzinfo=UTC)
    window = window_for_run(
        tz_name="UTC", data_interval_start=start, data_interval_end=start + dt.timedelta(days=1)
    )
    assert (window.start, window.end, window.label, window.source) == (
        start,
        start + dt.timedelta(days=1),
        "2026-11-20",
        "data_interval",
    )


def test_backfill_runs_each_take_exactly_their_own_day():
    days = [dt.date(2026, 11, 1) + dt.timedelta(days=i) for i in range(3)]
    windows = [
        window_for_run(
            tz_name="UTC",
            data_interval_start=dt.datetime.combine(day, dt.time(), tzinfo=UTC),
            data_interval_end=dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=UTC),
        )
        for day in days
    ]
    assert [w.label for w in windows] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert all(a.end == b.start for a, b in itertools.pairwise(windows))


def test_local_day_in_spring_forward_is_23_hours():
    window = local_day(dt.date(2026, 3, 8), "America/New_York")
    assert window.end - window.start == dt.timedelta(hours=23)
    assert window.start == dt.datetime(2026, 3, 8, 5, tzinfo=UTC)


def test_local_day_in_fall_back_is_25_hours():
    window = local_day(dt.date(2026, 11, 1), "America/New_York")
    assert window.end - window.start == dt.timedelta(hours=25)


def test_dst_data_interval_keeps_the_day_label():
    day = local_day(dt.date(2026, 11, 1), "America/New_York")
    window = window_for_run(
        tz_name="America/New_York", data_interval_start=day.start, data_interval_end=day.end
    )
    assert window.label == "2026-11-01"
    assert window.end - window.start == dt.timedelta(hours=25)


def test_manual_run_without_interval_takes_the_local_day_before_it_was_triggered():
    run_after = dt.datetime(2026, 11, 21, 3, 30, tzinfo=UTC)  # 22:30 on Nov 20 in New York
    window = window_for_run(tz_name="America/New_York", run_after=run_after)
    assert window.label == "2026-11-19"
    assert window.source == "previous_day"


def test_zero_width_interval_is_treated_as_no_interval():
    moment = dt.datetime(2026, 11, 21, 2, tzinfo=UTC)
    window = window_for_run(
        tz_name="UTC", data_interval_start=moment, data_interval_end=moment, run_after=moment
    )
    assert window.label == "2026-11-20"


def test_params_override_the_interval_and_are_read_in_the_pipeline_time_zone():
    window = window_for_run(
        tz_name="Europe/Paris",
        data_interval_start=dt.datetime(2026, 1, 1, tzinfo=UTC),
        data_interval_end=dt.datetime(2026, 1, 2, tzinfo=UTC),
        window_start="2026-06-01",
        window_end="2026-06-03",
    )
    assert window.source == "params"
    assert window.start == dt.datetime(2026, 5, 31, 22, tzinfo=UTC)
    assert window.end == dt.datetime(2026, 6, 2, 22, tzinfo=UTC)


def test_params_need_both_bounds():
    with pytest.raises(ConfigError, match="window_start and window_end"):
        window_for_run(tz_name="UTC", window_start="2026-06-01")


def test_params_end_must_be_after_start():
    with pytest.raises(ConfigError, match="window_end"):
        window_for_run(tz_name="UTC", window_start="2026-06-03", window_end="2026-06-01")


def test_unparseable_param_names_the_param():
    with pytest.raises(ConfigError, match="window_start"):
        window_for_run(tz_name="UTC", window_start="yesterday-ish", window_end="2026-06-01")


@pytest.mark.parametrize("run_type", ["backfill", DagRunType.BACKFILL])
def test_a_window_in_a_backfills_conf_is_refused_naming_the_params(run_type):
    with pytest.raises(ConfigError, match="window_start and window_end apply to every run of a backfill"):
        window_for_run(tz_name="UTC", window_start="2026-01-01", window_end="2026-01-02", run_type=run_type)


def test_a_window_in_a_manual_runs_conf_is_taken():
    window = window_for_run(
        tz_name="UTC", window_start="2026-01-01", window_end="2026-01-02", run_type=DagRunType.MANUAL
    )
    assert window.source == "params"


def test_days_before_are_local_days_across_a_dst_change():
    # Europe/Berlin leaves summer time on 2026-10-25: the three local days before the window of
    # 2026-10-26 (which starts at 23:00 UTC) hold 73 hours.
    window_start = dt.datetime(2026, 10, 25, 23, 0, tzinfo=dt.UTC)
    start = days_before(window_start, 3, "Europe/Berlin", not_before=dt.date(2026, 1, 1))
    assert start == dt.datetime(2026, 10, 22, 22, 0, tzinfo=dt.UTC)  # midnight of 23 October, Berlin


def test_days_before_never_reach_before_the_first_window_at_its_local_time():
    window_start = dt.datetime(2026, 3, 3, 6, 0, tzinfo=dt.UTC)  # a "0 6 * * *" schedule's window
    assert days_before(window_start, 3, "UTC", not_before=dt.date(2026, 3, 2)) == dt.datetime(
        2026, 3, 2, 6, 0, tzinfo=dt.UTC
    )
