"""The demo generator is deterministic and varied enough to exercise every path of the pipeline."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

from include.demo_data import call_id_for, generate, seed_sqlite

DAY = date(2026, 11, 20)
REPO = Path(__file__).resolve().parents[2]


def test_same_seed_gives_the_same_records():
    assert list(generate(DAY, 50, seed=7)) == list(generate(DAY, 50, seed=7))


def test_another_seed_gives_other_transcripts():
    first = [row["transcript"] for row in generate(DAY, 20, seed=7)]
    second = [row["transcript"] for row in generate(DAY, 20, seed=8)]

    assert first != second


def test_a_record_does_not_depend_on_the_count():
    assert list(generate(DAY, 30, seed=7))[:10] == list(generate(DAY, 10, seed=7))


def test_call_ids_are_unique_and_derived_from_day_and_index():
    rows = list(generate(DAY, 200, seed=7))

    assert [row["call_id"] for row in rows] == [call_id_for(DAY, i) for i in range(200)]
    assert len({row["call_id"] for row in rows}) == 200
    assert rows[0]["call_id"] == "call-20261120-000000"


def test_calls_start_within_the_day_in_utc():
    stamps = [row["started_at"] for row in generate(DAY, 300, seed=7)]

    assert all(stamp.tzinfo is UTC and stamp.date() == DAY for stamp in stamps)
    assert max(stamps) - min(stamps) > (datetime(2026, 11, 20, 20) - datetime(2026, 11, 20, 4))


def test_transcripts_vary_in_length_script_and_emptiness():
    texts = [row["transcript"] for row in generate(DAY, 500, seed=7)]
    spoken = [text for text in texts if text.strip()]

    assert any(not text.strip() for text in texts)
    assert any(len(text) > 20_000 for text in texts)
    assert any(len(text) < 600 for text in spoken)
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in text) for text in texts)  # CJK
    assert any(any(ord(ch) > 0xFFFF for ch in text) for text in texts)  # emoji
    assert any("é" in text for text in texts)
    assert all(text.startswith("Agent: ") and "\nCustomer: " in text for text in spoken)


def test_transcripts_cover_several_topics():
    texts = "\n".join(row["transcript"] for row in generate(DAY, 300, seed=7))

    for phrase in ("charged twice", "outage", "cancel", "password", "parcel"):
        assert phrase in texts


def test_seeding_twice_keeps_one_row_per_call(tmp_path):
    path = tmp_path / "demo.sqlite"

    seed_sqlite(path, DAY, 40, seed=7)
    seed_sqlite(path, DAY, 60, seed=7)

    with sqlite3.connect(path) as conn:
        count, first = conn.execute("SELECT COUNT(*), MIN(started_at) FROM call_transcripts").fetchone()
    assert count == 60
    assert len(first) == len("2026-11-20 00:00:00") and first.startswith("2026-11-20 ")


def test_cli_seeds_a_sqlite_file(tmp_path):
    path = tmp_path / "sub" / "demo.sqlite"

    done = subprocess.run(
        [
            sys.executable,
            "include/demo_data.py",
            "--sqlite",
            str(path),
            "--day",
            "2026-11-20",
            "--count",
            "25",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM call_transcripts").fetchone() == (25,)
