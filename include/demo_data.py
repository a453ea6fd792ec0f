"""Deterministic demo call transcripts, and a seeder for the demo's SQLite warehouse.

Every record is drawn from its own ``random.Random`` seeded by (seed, day, index), so a record does not
depend on how many are generated: seeding 600 after 500 keeps the first 500 and adds 100. The mix is
chosen to exercise the pipeline: short and very long calls (some over 20k characters), accents, CJK
and emoji, and a few empty or whitespace-only transcripts that the record builder must reject.

    python include/demo_data.py --sqlite PATH --day YYYY-MM-DD --count 500 --seed 7
"""

from __future__ import annotations

import argparse
import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

SOURCE_DDL = Path(__file__).resolve().parent / "sql" / "demo_call_transcripts.sql"
SOURCE_TABLE = "call_transcripts"

_CUSTOMERS = (
    "Alex",
    "Priya",
    "José",
    "Zoë",
    "Björn",
    "Chloé",
    "Jürgen",
    "Amélie",
    "Wei",
    "Yuki",
    "Olusegun",
    "Siobhán",
    "Mateus",
    "Ngozi",
    "Dmitri",
)
_AGENTS = ("Sam", "Dana", "Lee", "Morgan", "Ravi", "Inés", "Kofi", "Hana")

_TOPICS: dict[str, dict[str, tuple[str, ...]]] = {
    "billing": {
        "customer": (
            "I was charged twice for my subscription this month.",
            "My invoice shows a fee of {amount} that I don't recognise.",
            "Can you explain why the bill went up to {amount}?",
            "I set up autopay but the payment still failed.",
        ),
        "agent": (
            "I can see two charges of {amount} on {date}; I'll refund the duplicate.",
            "That fee is the late-payment charge, but I can waive it as a one-off.",
            "The refund will reach your card in three to five business days.",
            "I've updated the billing address on the account.",
        ),
    },
    "outage": {
        "customer": (
            "My internet has been down since this morning.",
            "The service keeps dropping every few minutes.",
            "Nothing loads, the router light is blinking orange.",
            "Is there an outage in {city}? My neighbours have the same problem.",
        ),
        "agent": (
            "There is a known outage in {city}; engineers expect a fix within four hours.",
            "Please restart the router by holding the reset button for ten seconds.",
            "I've opened ticket {ticket} and we'll text you when it's resolved.",
            "I can add a credit for the downtime to your next bill.",
        ),
    },
    "cancellation": {
        "customer": (
            "I'd like to cancel my plan, it's too expensive.",
            "I'm moving abroad and need to close the account.",
            "A competitor offered me a better price.",
            "How much is the early termination fee?",
        ),
        "agent": (
            "I'm sorry to hear that; I can offer you 20% off for the next six months.",
            "The early termination fee would be {amount}.",
            "I've scheduled the cancellation for the end of the billing cycle.",
            "You'll receive a confirmation email with reference {ticket}.",
        ),
    },
    "password reset": {
        "customer": (
            "I can't log in, it says my password is wrong.",
            "The reset email never arrives.",
            "My account got locked after too many attempts.",
            "I changed my phone and lost the two-factor app.",
        ),
        "agent": (
            "I've sent a new reset link; it's valid for thirty minutes.",
            "Please check your spam folder for a message from our support address.",
            "I've unlocked the account; try again in a minute.",
            "For security I need to verify your date of birth first.",
        ),
    },
    "shipping": {
        "customer": (
            "My order {ticket} hasn't arrived yet.",
            "The parcel tracking hasn't moved in a week.",
            "The box arrived damaged and the screen is cracked.",
            "I received the wrong colour.",
        ),
        "agent": (
            "The carrier shows the parcel at the {city} depot; delivery is expected tomorrow.",
            "I'll send a replacement at no cost and a prepaid return label.",
            "I've filed a claim with the carrier, reference {ticket}.",
            "You can keep the wrong item; the right one ships today.",
        ),
    },
    "plan upgrade": {
        "customer": (
            "What faster plans do you have?",
            "I need more data on my mobile plan.",
            "Can I add a second line for my daughter?",
        ),
        "agent": (
            "The premium plan is {amount} a month with unlimited data.",
            "I can switch you today; the new price starts next cycle.",
            "The second line is half price for the first year.",
        ),
    },
}
_SMALL_TALK = (
    "Thanks for your patience.",
    "Let me check that for you.",
    "Could you confirm the account number?",
    "Sure, one moment please.",
    "Okay.",
    "Is there anything else I can help with?",
    "That's all, thank you.",
)
_NON_ASCII = (
    "Merci beaucoup, très gentil !",
    "¿Puede repetir, por favor?",
    "谢谢你的帮助。",
    "ありがとうございます、助かりました。",
    "감사합니다.",
    "Danke schön, das hilft mir sehr. 👍",
    "Great, thanks! 🙂",
    "The package 📦 still hasn't come.",
    "Straße, Größe, naïve café — all fine now.",
)
_CITIES = ("Lyon", "São Paulo", "Kraków", "Osaka", "Leeds", "Austin", "Nairobi", "Zürich")


def _fill(rng: random.Random, template: str, day: date) -> str:
    return template.format(
        amount=f"${rng.randint(5, 400)}.{rng.randint(0, 99):02d}",
        date=(day - timedelta(days=rng.randint(1, 40))).isoformat(),
        city=rng.choice(_CITIES),
        ticket=f"T-{rng.randint(100000, 999999)}",
    )


def _transcript(rng: random.Random, day: date, topic: str, turns: int, unicode_share: float) -> str:
    lines_by = _TOPICS[topic]
    agent, customer = rng.choice(_AGENTS), rng.choice(_CUSTOMERS)
    lines = [
        f"Agent: Thank you for calling, my name is {agent}. How can I help?",
        f"Customer: Hi, this is {customer}. {_fill(rng, rng.choice(lines_by['customer']), day)}",
    ]
    for turn in range(turns):
        speaker = "Agent" if turn % 2 == 0 else "Customer"
        pool = lines_by["agent" if speaker == "Agent" else "customer"]
        if rng.random() < unicode_share:
            text = rng.choice(_NON_ASCII)
        elif rng.random() < 0.3:
            text = rng.choice(_SMALL_TALK)
        else:
            text = _fill(rng, rng.choice(pool), day)
        lines.append(f"{speaker}: {text}")
    lines.append("Agent: Thanks for calling, have a good day.")
    return "\n".join(lines)


def call_id_for(day: date, index: int) -> str:
    """Deterministic key of the ``index``-th call of ``day``."""
    return f"call-{day:%Y%m%d}-{index:06d}"


def generate(day: date, count: int, seed: int) -> Iterator[dict[str, Any]]:
    """``count`` call records of ``day`` (UTC) as dicts with the ``call_transcripts`` columns."""
    midnight = datetime.combine(day, time(0), tzinfo=UTC)
    for index in range(count):
        rng = random.Random(f"{seed}:{day.isoformat()}:{index}")
        roll = rng.random()
        topic = rng.choice(sorted(_TOPICS))
        if roll < 0.03:
            transcript = rng.choice(("", " ", "\n\n", " \t \n"))
        elif roll < 0.08:  # very long calls: 20k+ characters
            transcript = _transcript(rng, day, topic, rng.randint(450, 900), 0.05)
        elif roll < 0.25:
            transcript = _transcript(rng, day, topic, rng.randint(25, 120), 0.08)
        else:
            transcript = _transcript(rng, day, topic, rng.randint(2, 20), 0.12)
        yield {
            "call_id": call_id_for(day, index),
            "started_at": midnight + timedelta(seconds=rng.randrange(86_400)),
            "agent_id": f"agent-{rng.randint(1, 40):03d}",
            "customer_id": f"cust-{rng.randint(1, 99_999):05d}",
            "transcript": transcript,
        }


def source_ddl() -> list[str]:
    """Statements creating the demo source table (idempotent)."""
    lines = [
        line for line in SOURCE_DDL.read_text(encoding="utf-8").splitlines() if not line.startswith("--")
    ]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


def source_rows(day: date, count: int, seed: int, *, sqlite: bool) -> Iterator[tuple[Any, ...]]:
    """``generate``'s calls as source-table rows (call_id, started_at, agent_id, customer_id, transcript).

    ``started_at`` is UTC: text ``YYYY-MM-DD HH:MM:SS`` on SQLite (so window filters compare as
    text), a naive datetime for a ``TIMESTAMP`` column elsewhere.
    """
    for row in generate(day, count, seed):
        started = row["started_at"]
        stamp = started.strftime("%Y-%m-%d %H:%M:%S") if sqlite else started.replace(tzinfo=None)
        yield (row["call_id"], stamp, row["agent_id"], row["customer_id"], row["transcript"])


def seed_sqlite(path: str | Path, day: date, count: int, seed: int) -> int:
    """Create the source table if missing and insert (or replace) the day's records; return the count.

    ``started_at`` is stored as UTC text ``YYYY-MM-DD HH:MM:SS`` so window filters compare correctly.
    """
    rows = source_rows(day, count, seed, sqlite=True)
    conn = sqlite3.connect(path, timeout=30)
    try:
        with conn:
            for statement in source_ddl():
                conn.execute(statement)
            conn.executemany(
                f"INSERT OR REPLACE INTO {SOURCE_TABLE}"
                " (call_id, started_at, agent_id, customer_id, transcript) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
    finally:
        conn.close()
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Seed demo call transcripts into a SQLite warehouse.")
    parser.add_argument(
        "--sqlite", required=True, type=Path, help="SQLite database file (created if missing)"
    )
    parser.add_argument(
        "--day", required=True, type=date.fromisoformat, help="UTC day of the calls, YYYY-MM-DD"
    )
    parser.add_argument("--count", type=int, default=500, help="number of calls (default 500)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    args = parser.parse_args(argv)
    if args.count < 0:
        parser.error("--count must be >= 0")
    args.sqlite.parent.mkdir(parents=True, exist_ok=True)
    seeded = seed_sqlite(args.sqlite, args.day, args.count, args.seed)
    print(f"seeded {seeded} calls of {args.day} into {args.sqlite}:{SOURCE_TABLE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
