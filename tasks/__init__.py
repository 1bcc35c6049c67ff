"""Thin Celery tasks: bind log context, call worker.service, nothing else."""
