"""Wiring: settings (the only reader of the environment), logging, the Celery app."""
