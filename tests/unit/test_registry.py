"""Issue 15: the registry is the one list of providers; the settings model and the event schema's
provider enum are derived from it, and refuse what would break them."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest

from config.settings import CoreSettings, Settings, settings_model
from worker.errors import InputError
from worker.providers.billit import BillitSettings
from worker.providers.registry import REGISTRY, ProviderSpec, registry_of
from worker.providers.settings import ProviderSettings
from worker.webhooks.schema import PROVIDER_PATH, SCHEMA_FILE, event_schema, main, with_providers


def settings_named(name: str) -> type[ProviderSettings]:
    """A settings model whose NAME is ``name``."""
    return type("Named", (ProviderSettings,), {"NAME": name, "__annotations__": {"NAME": ClassVar[str]}})


def spec_named(name: str, settings_name: str | None = None) -> ProviderSpec:
    return ProviderSpec(name, settings_named(settings_name or name), lambda s, a, ctx: None)  # type: ignore[arg-type,return-value]


# -- the registry ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Billit", "1st", "with space", "a__b", "dash-ed", "", "x" * 41])
def test_registry_refuses_a_name_that_cannot_be_a_variable(name):
    """A provider's name is its POLLER_<NAME>__ prefix: uppercase, dashes or a double underscore
    would make variables that never reach it."""
    with pytest.raises(ValueError, match="lowercase letters"):
        registry_of([spec_named(name)])


def test_registry_refuses_a_name_twice_and_settings_named_otherwise():
    """Two providers of one name, or settings whose NAME is another (its variable names in errors
    would be wrong), are refused when the registry is built."""
    with pytest.raises(ValueError, match="registered twice"):
        registry_of([spec_named("acme"), spec_named("acme")])
    with pytest.raises(ValueError, match="NAME is 'other', not 'acme'"):
        registry_of([spec_named("acme", settings_name="other")])


# -- the settings model ------------------------------------------------------------------------

def test_settings_have_one_field_per_registered_provider():
    """The build's settings model is the core plus each registered provider, in registry order."""
    assert Settings.PROVIDERS is REGISTRY
    assert [f for f in Settings.model_fields if f not in CoreSettings.model_fields] == list(REGISTRY)
    for name, spec in REGISTRY.items():
        assert Settings.model_fields[name].annotation is spec.settings_cls


def test_provider_accessor_is_typed_and_names_the_known_providers(tmp_path):
    """``settings.provider("billit")`` and ``settings.provider(BillitSettings)`` are Billit's
    settings; an unknown name is an InputError listing the known ones."""
    settings = Settings(home=tmp_path, billit=BillitSettings(party_id="42"))
    assert settings.provider("billit") is settings.provider(BillitSettings)
    assert settings.provider(BillitSettings).party_id == "42"
    assert list(settings.providers()) == list(REGISTRY)
    with pytest.raises(InputError, match="unknown provider 'nope'; known: amili_ada, "):
        settings.provider("nope")
    with pytest.raises(InputError, match="unknown provider 'billit'; known: $"):
        CoreSettings(home=tmp_path).provider(BillitSettings)  # the core alone has no providers


@pytest.mark.parametrize("name", ["home", "retention", "provider"])
def test_settings_model_refuses_a_provider_named_like_a_core_setting(name):
    """A provider called ``home`` would take POLLER_HOME's field; ``retention`` would hide a method."""
    with pytest.raises(ValueError, match="taken by core settings"):
        settings_model(registry_of([spec_named(name)]))


# -- the event schema --------------------------------------------------------------------------

def test_published_schema_enum_is_the_registry():
    """docs/event.schema.json names exactly the registered providers, in registry order
    (`python -m worker.webhooks.schema` rewrites it after a provider is added)."""
    published = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert published == event_schema(REGISTRY)
    node = published
    for key in PROVIDER_PATH:
        node = node[key]
    assert node == list(REGISTRY)
    assert main(["--check"]) == 0


def test_schema_generation_changes_only_the_enum():
    """Regenerating keeps the hand-written file as written: one line differs, the enum's."""
    text = SCHEMA_FILE.read_text(encoding="utf-8")
    changed = with_providers(text, [*REGISTRY, "acme"])
    diff = [(a, b) for a, b in zip(text.splitlines(), changed.splitlines(), strict=True) if a != b]
    assert len(diff) == 1 and diff[0][1].strip().endswith('"amili_arm", "acme"]},')
    assert with_providers(changed, REGISTRY) == text


def test_schema_without_the_enum_is_an_error():
    """A schema whose provider enum was reshaped is refused, not silently left stale."""
    with pytest.raises(ValueError, match="found 0"):
        with_providers('{"provider": {"type": "string"}}', REGISTRY)
    with pytest.raises(ValueError, match="not at"):
        with_providers('{"x": {"provider": {"enum": []}}}', REGISTRY)
