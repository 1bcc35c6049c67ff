"""status-poller application package: domain, diff, providers, store and service. Never imports Celery."""
