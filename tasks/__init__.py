"""Thin Celery tasks: each binds its log context and calls the service it fronts (polling,
delivery, sweeps, the prune), nothing else; the HTTP API calls the same services."""
