"""Silences (SPEC 3g): a stage on the road, route -> silence -> batch/deliver.

- window.py: when a recurring (cron + duration + time zone) or fixed silence is active; pure.
- hold.py: which handlers an active silence holds for an event, and which silence; pure.
- refresh.py: the daemon's task that keeps the run-time silences (from the store) fresh.
"""

from amid.silences.hold import Hold, Silence, Silences, held_notices, hold

__all__ = ["Hold", "Silence", "Silences", "held_notices", "hold"]
