"""`make bench`: the project's data paths measured next to naive baselines and raw limits.

Run ``python -m bench`` from the repository root (``PYTHONPATH=plugins:.``); see docs/performance.md.
Every measurement runs in its own subprocess so that its peak RSS is its own.
"""
