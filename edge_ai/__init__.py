"""edge-ai: keeps AI API clients answered when the cloud is down."""

__version__ = "0.1.0"
