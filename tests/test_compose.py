"""What docker-compose.yml gives each container, checked without a Docker engine: every setting
reaches the poller services through ``.env``, ``.env.example`` names every setting the settings
models define, and the consoles are behind a login and on the host's loopback by default.

The settings are read from the models at test time, so a provider added to the registry (or a
field added to one) fails here until ``.env.example`` shows it."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from config.settings import Settings
from config.validation import unknown_variables

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PROMETHEUS = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
ENV_EXAMPLE = (ROOT / ".env.example").read_text()

#: A variable line of .env.example, set (``NAME=value``) or left at its default (``#NAME=value``).
ENV_LINE = re.compile(r"^(#?)([A-Z][A-Z0-9_]*)=(.*)$", re.M)
#: A whole POLLER_* name in prose: not a prefix (``POLLER_BILLIT__…``) or a placeholder (``<P>``).
PROSE_NAME = re.compile(r"\bPOLLER_[A-Z0-9_]*[A-Z0-9](?![A-Za-z0-9_<])")
#: Compose refuses to start while this variable is unset or empty: ``${NAME:?message}``.
REQUIRED = re.compile(r"^\$\{(\w+):\?[^}]+\}$")


def _models(annotation: object) -> list[type[BaseModel]]:
    """The settings models ``annotation`` names (itself, or inside ``X | None``)."""
    if isinstance(annotation, type):
        return [annotation] if issubclass(annotation, BaseModel) else []
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    return []


def _is_secret(annotation: object) -> bool:
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def setting_names(model: type[BaseModel] = Settings, prefix: str = "POLLER_") -> dict[str, str]:
    """Every variable of ``model``'s fields, walking nested models with ``__``: name -> ``value``
    (a plain setting), ``secret``, or ``mapping`` (a provider's ``accounts``: the name is followed
    by ``__<KEY>__<SETTING>``)."""
    names: dict[str, str] = {}
    for field, info in model.model_fields.items():
        name = prefix + field.upper()
        nested = _models(info.annotation)
        if nested:
            for sub in nested:
                names |= setting_names(sub, name + "__")
        elif typing.get_origin(info.annotation) is dict:
            names[name] = "mapping"
        else:
            names[name] = "secret" if _is_secret(info.annotation) else "value"
    return names


def example_lines() -> dict[str, tuple[bool, str]]:
    """.env.example's variables: name -> (commented out, value shown)."""
    return {name: (bool(hash_), value) for hash_, name, value in ENV_LINE.findall(ENV_EXAMPLE)}


def poller_services() -> dict[str, dict]:
    """The services that run this repository's image (built from its Dockerfile)."""
    return {name: svc for name, svc in SERVICES.items() if "build" in svc}


def _defaults(text: str) -> str:
    """``text`` with each ``${VAR:-default}`` as Compose reads it when VAR is unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)


def test_setting_names_walk_every_provider_and_its_accounts():
    """The walk reaches a nested provider's own fields and its accounts mapping (guards the helper)."""
    names = setting_names()
    assert names["POLLER_TICK_SECONDS"] == "value" and names["POLLER_SECRET_KEYS"] == "secret"
    providers = {n.split("__")[0] for n in names if "__" in n}
    assert len(providers) >= 2
    for provider in providers:
        assert names[provider + "__ACCOUNTS"] == "mapping"
        assert names[provider + "__BASE_URL"] == "value"


def test_every_poller_service_reads_the_env_file():
    """migrate, worker, beat and api each get the whole .env beside the compose file, which may
    be absent (the required variables then come from the shell)."""
    services = poller_services()
    assert {"migrate", "worker", "beat", "api"} <= set(services)
    for name, svc in services.items():
        entries = svc.get("env_file")
        assert isinstance(entries, list), name
        dotenv = [e for e in entries if isinstance(e, dict) and e["path"] in (".env", "./.env")]
        assert dotenv and dotenv[0].get("required") is False, (name, entries)


def test_compose_environment_sets_only_real_core_settings():
    """What compose sets itself is a real setting, and never a provider's: a provider variable
    there would override (or blank) the one in .env."""
    for name, svc in poller_services().items():
        env = svc["environment"]
        poller = [k for k in env if k.startswith("POLLER_")]
        assert unknown_variables(Settings, poller) == [], name
        assert not [k for k in poller if "__" in k], name


def test_env_example_shows_every_setting():
    """Every variable the settings models define is in .env.example, and each provider's
    accounts mapping has an example; every POLLER_* name there is a real setting."""
    shown = example_lines()
    names = setting_names()
    plain = {n for n, kind in names.items() if kind != "mapping"}
    assert plain - set(shown) == set()
    for mapping in (n for n, kind in names.items() if kind == "mapping"):
        assert any(re.fullmatch(rf"{mapping}__[A-Z0-9]+__[A-Z0-9_]+", s) for s in shown), mapping
    assert unknown_variables(Settings, [n for n in shown if n.startswith("POLLER_")]) == []


def test_env_example_sets_nothing_and_holds_no_secret():
    """Copied as .env, the example changes nothing: every POLLER_* line is commented out, and
    no secret (nor a compose login) shows a value."""
    shown = example_lines()
    names = setting_names()
    assert [n for n, (commented, _) in shown.items() if n.startswith("POLLER_") and not commented] == []
    secrets = [n for n, kind in names.items() if kind == "secret"] + [n for n in shown if "__ACCOUNTS__" in n]
    logins = [REQUIRED.match(v).group(1) for svc in SERVICES.values()
              for v in (svc.get("environment") or {}).values() if isinstance(v, str) and REQUIRED.match(v)]
    assert logins
    assert {n: shown[n][1] for n in secrets + logins if shown.get(n, (True, ""))[1]} == {}


def test_env_example_shows_the_true_defaults(tmp_path):
    """Each value .env.example shows, uncommented, loads as the setting's default."""
    shown = {n: v for n, (_, v) in example_lines().items() if n.startswith("POLLER_") and v}
    assert len(shown) > 50
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{n}={v}\n" for n, v in shown.items()))
    assert Settings(_env_file=env_file).model_dump() == Settings(_env_file=None).model_dump()


@pytest.mark.parametrize("doc", ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))])
def test_docs_name_only_real_settings(doc):
    """Every whole POLLER_* name in the README (and docs/) is a setting, or a variable the scripts
    read, so .env.example, which shows every setting, covers it."""
    scripts = "".join(p.read_text() for p in (ROOT / "scripts").iterdir() if p.is_file())
    read_by_scripts = set(re.findall(r"\$\{?(POLLER_\w+)", scripts))
    named = set(PROSE_NAME.findall((ROOT / doc).read_text())) - read_by_scripts
    assert named or doc != "README.md"
    assert unknown_variables(Settings, sorted(named)) == []


@pytest.mark.parametrize("service", sorted(n for n, s in SERVICES.items() if s.get("ports")))
def test_published_ports_are_on_the_host_loopback_by_default(service):
    """No port reaches beyond the host unless its *_PUBLISH variable says so."""
    for port in SERVICES[service]["ports"]:
        assert _defaults(str(port)).startswith("127.0.0.1:"), (service, port)


def test_flower_and_grafana_require_a_login():
    """Compose refuses to start Flower without FLOWER_BASIC_AUTH, or Grafana without an admin
    password; Grafana lets nobody in anonymously."""
    flower, grafana = SERVICES["flower"]["environment"], SERVICES["grafana"]["environment"]
    assert REQUIRED.match(flower["FLOWER_BASIC_AUTH"]).group(1) == "FLOWER_BASIC_AUTH"
    assert REQUIRED.match(grafana["GF_SECURITY_ADMIN_PASSWORD"]).group(1) == "GF_SECURITY_ADMIN_PASSWORD"
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_prometheus_scrapes_flower_and_the_ports_compose_sets():
    """Prometheus scrapes Flower's port in the compose network, and the worker and beat /metrics
    ports compose gives them."""
    jobs = {j["job_name"]: j for j in PROMETHEUS["scrape_configs"]}
    flower_port = str(SERVICES["flower"]["ports"][0]).rsplit(":", 1)[1]
    targets = [t for j in jobs.values() for c in j.get("static_configs", []) for t in c["targets"]]
    assert f"flower:{flower_port}" in targets
    env = SERVICES["worker"]["environment"]
    sd = {c["names"][0]: c["port"] for j in jobs.values() for c in j.get("dns_sd_configs", [])}
    assert sd == {"worker": int(env["POLLER_METRICS_PORT"]), "beat": int(env["POLLER_BEAT_METRICS_PORT"])}
