"""The one pydantic base model for settings, and the ``off`` form of optional sections."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Tag


class ConfigModel(BaseModel):
    """Every settings section: unknown keys are errors (typos fail start-up), values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# Tagged unions keep error messages to the form that was written (``format_errors`` drops the tags).
UNION_TAGS = frozenset({"url-form", "list-form", "settings-form", "off-form"})


def off_or_settings(value: Any) -> str:
    """Discriminator for ``X | false``: ``false`` (or null) turns an inherited default off."""
    return "off-form" if value is None or value is False else "settings-form"


Off = Literal[False] | None
OffForm = Tag("off-form")
SettingsForm = Tag("settings-form")
