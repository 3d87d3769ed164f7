"""amid: the AMI event daemon."""

__version__ = "0.1.0"
