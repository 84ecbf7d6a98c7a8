"""callpark: a disaster-recovery-aware, clustered SIP Call Park service."""

__version__ = "0.1.0"
