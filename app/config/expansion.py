"""``${VAR}`` and ``${VAR:-default}`` in the config file, expanded from the environment.

Containers pass configuration and secrets in the environment (or as mounted
files), so a YAML value may name them instead of holding them:

- ``${VAR}``: the value of ``VAR``. If ``VAR`` is unset but ``VAR_FILE`` is set, the
  contents of that file, without the trailing newline (the convention of Docker's
  official images, for secrets mounted by Docker or Kubernetes). If neither is set, it
  is an error that names the setting.
- ``${VAR:-default}``: the same, but ``default`` when ``VAR`` is unset or empty.
- ``$${...}``: a literal ``${...}``.

Only string values are expanded, after the file is parsed, so a value can never
change the file's structure. Keys are taken as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_REFERENCE = re.compile(r"\$(\$?)\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Location = tuple[str | int, ...]


@dataclass
class Expansion:
    """The outcome of expanding a parsed file: problems by location, and what was substituted."""

    problems: list[tuple[Location, str]] = field(default_factory=list)
    # Every substituted value: error messages must not echo them (they are often secrets).
    substituted: set[str] = field(default_factory=set)


def expand(data: Any, environ: Mapping[str, str]) -> tuple[Any, Expansion]:
    """``data`` with every ``${...}`` in its string values replaced; problems are collected, not raised."""
    outcome = Expansion()
    return _walk(data, (), environ, outcome), outcome


def _walk(value: Any, where: Location, environ: Mapping[str, str], outcome: Expansion) -> Any:
    if isinstance(value, str):
        return _expand_string(value, where, environ, outcome) if "${" in value else value
    if isinstance(value, dict):
        return {key: _walk(item, (*where, str(key)), environ, outcome) for key, item in value.items()}
    if isinstance(value, list):
        return [_walk(item, (*where, index), environ, outcome) for index, item in enumerate(value)]
    return value


def _expand_string(text: str, where: Location, environ: Mapping[str, str], outcome: Expansion) -> str:
    def replace(match: re.Match[str]) -> str:
        escaped, body = match.group(1), match.group(2)
        if escaped:
            return "${" + body + "}"
        name, has_default, default = body.partition(":-")
        if not _NAME.fullmatch(name):
            outcome.problems.append(
                (where, f"${{{body}}} is not a valid reference; use ${{NAME}} or ${{NAME:-default}}")
            )
            return ""
        value = _lookup(name, environ, where, outcome)
        if value is None or (has_default and not value):
            if has_default:
                return default
            outcome.problems.append((where, f"environment variable {name} is not set (nor {name}_FILE)"))
            return ""
        if value:
            outcome.substituted.add(value)
        return value

    return _REFERENCE.sub(replace, text)


def _lookup(name: str, environ: Mapping[str, str], where: Location, outcome: Expansion) -> str | None:
    if name in environ:
        return environ[name]
    path = environ.get(f"{name}_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        outcome.problems.append((where, f"{name}_FILE: cannot read {path!r}: {reason}"))
        return ""
