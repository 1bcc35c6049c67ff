"""The HTTP API (FastAPI): the poller's front door for other services, and its status page."""
