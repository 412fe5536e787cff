"""KAT: kernel-level anomaly troubleshooter for distributed large-model inference."""

__version__ = "0.1.0"
