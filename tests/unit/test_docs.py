"""Every setting is documented: the README's configuration reference and ``.env.example`` name each one.

A block of settings is documented either as one JSON value (``retries``, ``GATEHOUSE_RETRIES``) or
key by key (``timeout.read``, ``GATEHOUSE_TIMEOUT__READ``).
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from app.config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PREFIX = str(Settings.model_config.get("env_prefix", ""))
DELIMITER = str(Settings.model_config.get("env_nested_delimiter", "__"))
NAMES = sorted(Settings.model_fields)


def _block(annotation: object) -> type[BaseModel] | None:
    """The model of a settings block (``Tls`` for ``Tls | None``); None for a plain value or a list."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _forms(name: str) -> list[list[tuple[str, str]]]:
    """Ways ``name`` may be documented, each a list of (setting, env var) that must all appear."""
    whole = [(name, (PREFIX + name).upper())]
    block = _block(Settings.model_fields[name].annotation)
    if block is None:
        return [whole]
    keys = [(f"{name}.{key}", (PREFIX + name + DELIMITER + key).upper()) for key in block.model_fields]
    return [whole, keys]


@pytest.mark.parametrize("name", NAMES)
def test_every_setting_is_in_the_readme_with_its_env_var(name: str) -> None:
    readme = (ROOT / "README.md").read_text()
    forms = _forms(name)
    assert any(all(f"`{s}`" in readme and f"`{var}`" in readme for s, var in form) for form in forms), (
        f"README.md does not document {name!r} with its env var (as one of {forms})"
    )


@pytest.mark.parametrize("name", NAMES)
def test_every_setting_is_in_env_example(name: str) -> None:
    listed = {line.lstrip("# ").split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()}
    forms = _forms(name)
    assert any(all(var in listed for _, var in form) for form in forms), f".env.example does not list {forms}"
