"""The command line of ``python -m local_aws``."""

from __future__ import annotations

from pathlib import Path

import pytest

from local_aws.__main__ import parse_args


def test_quota_flags_set_the_server_quotas():
    settings = parse_args(["--port", "1234", "--min-records-per-job", "3", "--max-file-bytes", "500"])
    assert settings.port == 1234
    assert settings.quotas.min_records_per_job == 3
    assert settings.quotas.max_file_bytes == 500
    assert settings.quotas.max_records_per_file == 50_000


def test_speed_seed_and_state_dir_are_read(tmp_path):
    settings = parse_args(["--speed", "10", "--seed", "7", "--state-dir", str(tmp_path)])
    assert (settings.speed, settings.seed, settings.state_dir) == (10.0, 7, Path(tmp_path))


def test_a_non_positive_speed_is_refused():
    with pytest.raises(SystemExit):
        parse_args(["--speed", "0"])
