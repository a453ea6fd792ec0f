"""A tiny deterministic extractive summarizer: the stand-in's "model".

It keeps the most informative sentences of the user text (words frequent in the text but not stop
words), in their original order, so a summary always quotes its own record.
"""

from __future__ import annotations

import math
import re
from collections import Counter

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[A-Za-z0-9']+")
_STOP_WORDS = (
    "a an and are as at be but by for from has have he her his i in is it its me my of on or our she so"
    " that the their them they this to was we were what will with you your"
)
_STOP = frozenset(_STOP_WORDS.split(" "))


def count_tokens(text: str) -> int:
    """Plausible token count: about four characters per token."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def summarize(text: str, *, max_sentences: int = 2) -> str:
    """The ``max_sentences`` most informative sentences of ``text``, in text order."""
    # A sentence said twice (agents repeat themselves) is summarized once.
    sentences = list(dict.fromkeys(s.strip() for s in _SENTENCE.split(text) if s.strip()))
    if not sentences:
        return "Nothing to summarize."
    freq = Counter(w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP)

    def score(item: tuple[int, str]) -> tuple[float, int]:
        words = [w.lower() for w in _WORD.findall(item[1])]
        useful = [freq[w] for w in words if w not in _STOP]
        return (sum(useful) / math.sqrt(len(words) + 1), -item[0])

    chosen = sorted(sorted(enumerate(sentences), key=score, reverse=True)[:max_sentences])
    return " ".join(sentence for _, sentence in chosen)


def generate(text: str, *, max_tokens: int, stop_sequences: list[str] | None = None) -> tuple[str, str, int]:
    """(completion, reason, output_tokens); reason is ``end``, ``max_tokens`` or ``stop_sequence``."""
    summary = "Summary: " + summarize(text)
    for stop in stop_sequences or []:
        if stop and stop in summary:
            summary = summary[: summary.index(stop)]
            return summary, "stop_sequence", count_tokens(summary)
    if count_tokens(summary) > max_tokens:
        summary = summary[: max_tokens * 4].rstrip()
        return summary, "max_tokens", count_tokens(summary)
    return summary, "end", count_tokens(summary)
