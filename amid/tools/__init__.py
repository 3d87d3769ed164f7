"""The tools around the daemon: demo, doctor and the offline commands."""
