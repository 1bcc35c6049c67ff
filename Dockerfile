# One image for migrate, worker, beat and api (they differ only in command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    POLLER_HOME=/var/lib/poller POLLER_LOG_FORMAT=json

WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY worker ./worker
COPY tasks ./tasks
COPY cli ./cli
COPY api ./api
COPY simulator ./simulator
RUN pip install --no-cache-dir . \
 && useradd --system --home-dir /var/lib/poller --create-home poller

USER poller
ENTRYPOINT ["poller"]
CMD ["worker"]
