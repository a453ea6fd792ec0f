"""No AWS credential is committed: every tracked file is scanned for access key ids and secret keys.

The stand-in's dummy credentials ("testing") are fine; a real-looking key id (AKIA/ASIA + 16) or a
40-character secret assigned to an AWS secret setting is not.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.fixtures.ci import missing

REPO = Path(__file__).resolve().parents[2]
ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}\b")
SECRET_ASSIGNMENT = re.compile(
    r"(?i)(?:aws_secret_access_key|secret_access_key|aws_secret|secretaccesskey)"
    r"[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
)
# AWS's own documentation examples (never valid keys) may appear in docs.
DOCUMENTED_EXAMPLES = {"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
MAX_BYTES = 5_000_000


def tracked_files() -> list[Path]:
    done = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=False, timeout=60)
    if done.returncode != 0:
        missing("not a git checkout")
    return [REPO / name for name in done.stdout.decode().split("\0") if name]


def secrets_in(text: str) -> list[str]:
    found = ACCESS_KEY_ID.findall(text) + SECRET_ASSIGNMENT.findall(text)
    return [value for value in found if value not in DOCUMENTED_EXAMPLES]


def test_the_scanner_finds_a_key_id_and_a_secret():
    fake_id = "AKIA" + "Q3EXAMPLE7ZX2PLM"
    fake_secret = "k7Qy" + "Zr9mV2xWcB4nT6pL0sD8fG1hJ3aE5uI7oKqR"
    assert secrets_in(f"key = {fake_id}") == [fake_id]
    assert secrets_in(f'aws_secret_access_key = "{fake_secret}"') == [fake_secret]


def test_the_dummy_testing_credentials_are_not_secrets():
    assert secrets_in('AWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY="testing"') == []


def test_no_tracked_file_holds_an_aws_credential():
    files = tracked_files()
    assert files
    leaks = []
    for path in files:
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        leaks += [f"{path.relative_to(REPO)}: {value[:8]}..." for value in secrets_in(text)]
    assert leaks == []
