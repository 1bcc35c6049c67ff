"""The docs are true: the configuration page is what the settings model generates, every setting
and every exported metric is documented, every event type is in the contract, every link between
the pages resolves, and every `poller` command the pages show exists."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import typing
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _generator() -> ModuleType:
    """scripts/config_doc.py, imported (it is a script, not a package module)."""
    if "config_doc" not in sys.modules:
        spec = importlib.util.spec_from_file_location("config_doc", ROOT / "scripts" / "config_doc.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["config_doc"] = module  # its dataclasses look their module up while being defined
        spec.loader.exec_module(module)
    return sys.modules["config_doc"]


def test_configuration_page_is_what_the_generator_writes():
    """docs/configuration.md equals scripts/config_doc.py's output for today's settings model."""
    current = (DOCS / "configuration.md").read_text()
    assert current == _generator().render(), \
        "docs/configuration.md is out of date: run .venv/bin/python scripts/config_doc.py"


def _env_names(model: type[BaseModel], prefix: str) -> list[str]:
    """Every variable pydantic-settings reads for ``model``, walked here independently of the generator."""
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = args[0] if len(args) == 1 and typing.get_origin(annotation) is not dict else annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            names += _env_names(inner, f"{prefix}{name.upper()}__")
        elif typing.get_origin(inner) is dict:
            names.append(f"{prefix}{name.upper()}__<NAME>__")
        else:
            names.append(prefix + name.upper())
    return names


def test_every_setting_is_documented_with_a_description():
    """Each variable of the settings model, nested ones included, has a row in docs/configuration.md
    that says what it does."""
    from config.settings import Settings

    page = (DOCS / "configuration.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([A-Z0-9_<>]+)` \|.*\| (.*) \|$", page, re.M)}
    names = _env_names(Settings, "POLLER_")
    assert len(names) > 60
    for name in names:
        matches = [row for row in rows if row == name or row.startswith(name)]
        assert matches, f"{name} is not in docs/configuration.md"
        assert all(rows[m].strip() for m in matches), f"{name} has no description"
    for required in ("POLLER_TASK_EVENTS", "POLLER_DELIVERY_LIMIT"):
        assert required in rows


def test_generator_descriptions_name_real_settings():
    """Every description the generator supplies belongs to a field that exists (none left behind)."""
    from config.settings import Settings

    fields: set[tuple[str, str]] = set()

    def walk(model: type[BaseModel]) -> None:
        fields.update((cls.__name__, f) for cls in model.__mro__ for f in model.model_fields)
        for field in model.model_fields.values():
            inner = [a for a in (field.annotation, *typing.get_args(field.annotation))
                     if isinstance(a, type) and issubclass(a, BaseModel)]
            for sub in inner:
                walk(sub)

    walk(Settings)
    listed = {(cls, f) for cls, described in _generator().DESCRIPTIONS.items() for f in described}
    assert listed <= fields, listed - fields


class _NoBreakers:
    """A Redis stand-in with no circuit breakers: enough for the collector to yield its family."""

    def scan_iter(self, **_: object) -> list[str]:
        return []


def exported_metric_names(tmp_path: Path) -> set[str]:
    """Every metric the code exports, by the name a scrape shows (counters with ``_total``)."""
    from prometheus_client import CollectorRegistry

    from config.metrics import RESTARTS_FILE, RestartsCollector
    from worker import metrics
    from worker.metrics_state import StateCollector
    from worker.store.db import make_engine, make_sessionmaker
    from worker.store.migrate import upgrade

    names = set()
    for family in vars(metrics._m()).values():
        names.add(family._name + ("_total" if family._type == "counter" else ""))
    engine = make_engine(f"sqlite+pysqlite:///{tmp_path}/m.db")
    upgrade(engine)
    (tmp_path / RESTARTS_FILE).write_text(json.dumps({"worker": 1}))
    registry = CollectorRegistry()
    registry.register(StateCollector(make_sessionmaker(engine), 5.0, redis=_NoBreakers()))
    registry.register(RestartsCollector(tmp_path))
    for family in registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    engine.dispose()
    return names


def test_every_exported_metric_is_in_the_operations_metrics_table(tmp_path):
    """docs/operations.md's metrics table names every metric /metrics can show, and no other."""
    exported = exported_metric_names(tmp_path)
    assert {"poller_dispatch_last_tick_age_seconds", "poller_restarts_total", "poller_polls_total"} <= exported
    text = (DOCS / "operations.md").read_text()
    table = text[text.index("## Metrics"):text.index("### Alert rules")]
    documented = set(re.findall(r"^\| `(poller_[a-z_]+)`", table, re.M))
    assert exported - documented == set(), "exported but not documented"
    assert documented - exported == set(), "documented but not exported"


def test_every_event_type_is_in_the_contract():
    """docs/events.md's table lists every event type a subscription can receive."""
    from worker.domain import ALL_EVENT_TYPES

    text = (DOCS / "events.md").read_text()
    table = text[text.index("## Event types"):text.index("### The item payload")]
    listed = set(re.findall(r"^\| `([a-z_.]+)` \|", table, re.M))
    assert set(ALL_EVENT_TYPES) | {"test"} == listed
    assert "subscription.disabled" in listed


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", lambda m: "_" if m.group() == "_" else "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    anchors = set(re.findall(r'<a id="([^"]+)">', text))
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    """Each relative link of README.md and docs/*.md names a file that exists, and a heading (or
    an explicit anchor) of it when it has a #fragment."""
    for link in _links(page):
        if re.match(r"[a-z]+:", link):
            continue
        target, _, fragment = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.name}: {link} -> no such file"
        if fragment and path.suffix == ".md":
            assert fragment in _anchors(path), f"{page.name}: {link} -> no such heading"


def test_readme_is_a_front_page():
    """The README starts with the daemon and test commands, stays short, and links every docs page."""
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    assert first_block.splitlines()[0].startswith("./poller run")
    assert first_block.splitlines()[1].startswith("./scripts/test")
    assert len(readme.splitlines()) <= 200
    linked = {Path(link.partition("#")[0]).name for link in _links(ROOT / "README.md")}
    assert {p.name for p in DOCS.glob("*.md")} <= linked


def _commands() -> dict[str, set[str]]:
    """Each command of the CLI -> its subcommands (empty for a plain command)."""
    import typer.main

    from cli.main import app

    group = typer.main.get_command(app)
    return {name: set(getattr(command, "commands", {}))
            for name, command in group.commands.items()}  # type: ignore[attr-defined]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_commands_shown_exist(page):
    """Every `poller COMMAND [SUBCOMMAND]` a page shows in code is a command of the CLI."""
    text = page.read_text()
    blocks = [re.sub(r"(^|\s)#.*$", "", b, flags=re.M) for b in re.findall(r"```.*?```", text, re.S)]
    code = blocks + re.findall(r"`[^`\n]+`", re.sub(r"```.*?```", "", text, flags=re.S))
    commands = _commands()
    for snippet in code:
        for first, second in re.findall(r"(?:^|[\s(/$])poller ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", snippet, re.M):
            assert first in commands, f"{page.name}: `poller {first}` is not a command"
            if commands[first] and second:
                assert second in commands[first], f"{page.name}: `poller {first} {second}` is not a command"
