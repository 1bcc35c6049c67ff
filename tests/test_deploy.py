"""The deployment files, checked without a Docker engine: the compose file against the Compose
Specification's schema, and every metric the alerts and the dashboard use against what the code exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
ALERTS = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
DASHBOARD = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "status-poller.json").read_text())


def compose_schema() -> dict:
    """The Compose Specification's JSON Schema of docker-compose 1.29.2, with the long form of
    ``env_file`` (``{path, required, format}``) the specification gained since (Compose 2.24)."""
    schema = json.loads((ROOT / "tests" / "data" / "compose" / "compose_spec.json").read_text())
    entry = {"type": "object", "required": ["path"], "additionalProperties": False,
             "properties": {"path": {"type": "string"}, "required": {"type": ["boolean", "string"]},
                            "format": {"type": "string"}}}
    schema["definitions"]["service"]["properties"]["env_file"] = {"oneOf": [
        {"type": "string"}, {"type": "array", "items": {"oneOf": [{"type": "string"}, entry]}}]}
    return schema


def test_compose_file_follows_the_compose_specification():
    """docker-compose.yml validates against the Compose Specification's JSON Schema."""
    jsonschema.Draft7Validator(compose_schema()).validate(COMPOSE)


def test_compose_schema_still_refuses_a_misspelt_env_file_entry():
    """The long form of env_file added to the old schema is no wildcard: a misspelt key fails."""
    bad = {"services": {"worker": {"image": "x", "env_file": [{"path": ".env", "requird": False}]}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(compose_schema()).validate(bad)


def test_compose_has_the_whole_topology():
    """Redis, PostgreSQL, a one-shot migration, workers, two beats, the API, Flower, Prometheus,
    Grafana; workers, beats and the API run the one image."""
    services = COMPOSE["services"]
    assert set(services) == {"redis", "postgres", "migrate", "worker", "beat", "api", "flower", "prometheus",
                             "grafana"}
    assert services["worker"]["image"] == services["beat"]["image"] == services["migrate"]["image"] \
        == services["api"]["image"]
    assert services["worker"]["command"] == ["worker"] and services["beat"]["command"] == ["beat"]
    assert services["beat"]["deploy"]["replicas"] == 2
    assert services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    mounted = [v.split(":")[0] for v in services["prometheus"]["volumes"] + services["grafana"]["volumes"]]
    assert all((ROOT / m).exists() for m in mounted), mounted


def _defaults(text: str) -> str:
    """``text`` with each ``${VAR:-default}`` as Compose reads it when VAR is unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)


def test_compose_api_service_serves_the_api_to_the_host_loopback():
    """`poller api` listens on every address of its container, published on the host's loopback
    only by default, with the workers' environment, after the migration, health-checked on /healthz
    without curl (the image has none)."""
    api, worker = COMPOSE["services"]["api"], COMPOSE["services"]["worker"]
    assert api["command"] == ["api"]
    env = api["environment"]
    assert env["POLLER_API_ADDR"] == "0.0.0.0" and env["POLLER_API_PORT"] == "8000"
    assert {k: v for k, v in env.items() if k in worker["environment"]} == worker["environment"]
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert [_defaults(p) for p in api["ports"]] == ["127.0.0.1:8000:8000"]
    test = api["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"] and "/healthz" in test[3] and "curl" not in " ".join(test)


@pytest.mark.parametrize("up", [True, False])
def test_compose_api_healthcheck_passes_on_a_live_api_and_fails_without_one(api, up):
    """The healthcheck's own command, pointed at a real API: exit 0 when it answers, non-zero when not."""
    import subprocess
    import sys

    code = COMPOSE["services"]["api"]["healthcheck"]["test"][3]
    if not up:
        api.stop()
    proc = subprocess.run([sys.executable, "-c", code.replace("127.0.0.1:8000", f"127.0.0.1:{api.port}")],
                          capture_output=True, text=True, timeout=30)
    assert (proc.returncode == 0) is up, proc.stderr


def test_the_image_holds_every_package():
    """The Dockerfile copies every package pyproject.toml installs (`poller api` needs api/)."""
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert {p.rstrip("*") for p in include} <= copied


def exported_series(redis_url: str) -> set[str]:
    """Every series name the code exports: counters as *_total, histograms as *_bucket/_count/_sum."""
    from worker import metrics
    from worker.metrics_state import StateCollector
    from worker.store.db import make_engine, make_sessionmaker
    from worker.store.migrate import upgrade

    names: set[str] = set()
    for family in metrics._m().__dict__.values():
        kind, name = family._type, family._name
        names |= {name + "_total"} if kind == "counter" else {name + s for s in ("_bucket", "_count", "_sum")}
    import tempfile

    import redis as redis_lib

    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite+pysqlite:///{tmp}/m.db")
        upgrade(engine)
        registry = CollectorRegistry()
        client = redis_lib.Redis.from_url(redis_url)
        registry.register(StateCollector(make_sessionmaker(engine), 5.0, redis=client))
        names |= {family.name for family in registry.collect()}
        client.close()
        engine.dispose()
    return names


def used_series(expr: str) -> set[str]:
    return set(re.findall(r"\bpoller_[a-z_]+\b", expr))


@pytest.fixture(scope="module")
def exported(redis_server):
    return exported_series(redis_server.url)


def test_alert_rules_cover_the_required_cases_and_use_real_metrics(exported):
    """Beat down, items overdue, provider failing, delivery backlog, subscription disabled; each
    expression only uses metrics the code exports."""
    rules = {r["alert"]: r["expr"] for g in ALERTS["groups"] for r in g["rules"]}
    assert {"PollerBeatDown", "PollerItemsOverdue", "PollerProviderFailing", "PollerDeliveryBacklog",
            "PollerSubscriptionDisabled"} <= set(rules)
    for name, expr in rules.items():
        assert used_series(expr) and used_series(expr) <= exported, (name, used_series(expr) - exported)


def test_dashboard_uses_real_metrics(exported):
    """Every panel query of the provisioned Grafana dashboard uses only exported metrics."""
    exprs = [t["expr"] for p in DASHBOARD["panels"] for t in p["targets"]]
    assert len(exprs) >= 12
    used = set().union(*(used_series(e) for e in exprs))
    assert used <= exported, used - exported
