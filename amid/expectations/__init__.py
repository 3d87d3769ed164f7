"""Expectations (SPEC 3c): a watcher beside the road that notices the AMI event that did not come.

- due.py: when an expectation falls due (pure arithmetic, every or cron + time zone).
- plan.py: what to do now about one expectation (open or end an episode, who is owed what).
- watch.py: the daemon's task that sleeps until the next due time and sends the notices
  through the same `deliver` as events, once per handler per episode.
"""

from amid.expectations.plan import Expectation, Expectations

__all__ = ["Expectation", "Expectations"]
