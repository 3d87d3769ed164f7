"""The HTTP surface on the metrics listener: /metrics, /healthz, /readyz (health.py)."""
