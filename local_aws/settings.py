"""Process-wide settings of one stand-in (from the command line)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from local_aws.quotas import Quotas

ACCOUNT_ID = "123456789012"
"""The account every ARN of the stand-in carries (moto's default account)."""


@dataclass
class Settings:
    """``speed`` divides every simulated duration; ``seed`` makes shuffles and faults repeatable."""

    host: str = "127.0.0.1"
    port: int = 4566
    state_dir: Path | None = None
    speed: float = 1.0
    seed: int = 0
    region: str = "us-east-1"
    runtime_rps: float | None = None
    quotas: Quotas = field(default_factory=Quotas)
