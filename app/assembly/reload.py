"""Config reload without dropping traffic (``SIGHUP`` or ``POST {ops_prefix}/reload``).

``Reloader.reload`` re-reads the config file and validates it; an invalid
file raises ``ReloadRejected`` with field-level errors and nothing changes.
A valid one becomes a new ``Generation`` (route table, pools, filter chains,
upstream clients, health checks), opened before the gateway's one reference
is swapped to it. Requests already running finish on the old generation,
whose clients are closed when the last of them ends (or after
``shutdown_grace``).

Reloaded: the routes and every setting they are built from (timeouts,
limits, resilience, auth, CORS and rate-limit defaults, upstream transport).
Settings of the process itself (ops prefix, admin token, trusted proxies,
header limits, Redis, logging, tracing) need a restart: a reload that changes
them says so in ``restart_required``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from app.assembly.gateway import Gateway
from app.assembly.generation import Generation
from app.config.settings import ConfigError, Settings, load_settings
from app.edge.resources import EdgeResources

log = logging.getLogger("gatehouse")

RELOADED = frozenset(
    {
        "routes",
        "timeout",
        "limits",
        "balancing",
        "passive_health",
        "health_check",
        "retries",
        "circuit_breaker",
        "max_concurrent",
        "auth",
        "cors",
        "rate_limit",
        "upstream_transport",
    }
)


class NotReloadable(Exception):
    """There is no config file to re-read: the request is fine, the gateway's state refuses it (409)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ReloadRejected(Exception):
    """The new configuration is invalid; ``errors`` are ``{"field", "message"}`` pairs."""

    def __init__(self, detail: str, errors: list[dict[str, str]]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class Reloader:
    def __init__(self, gateway: Gateway, settings: Settings, edge: EdgeResources) -> None:
        self._gateway = gateway
        self._settings = settings
        self._edge = edge
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        # Set by a server with several worker processes: after this one reloads, the others are told to.
        self.fan_out: Callable[[], None] | None = None

    async def reload(self) -> dict[str, Any]:
        """Swap in a generation built from the config file as it is now (see the module docstring)."""
        async with self._lock:
            if self._settings.config is None:
                raise NotReloadable(
                    "Gatehouse was not started from a config file (--config / GATEHOUSE_CONFIG): nothing to re-read."
                )
            try:
                settings = load_settings(self._settings.config)
            except ConfigError as exc:
                raise ReloadRejected(
                    "The new configuration is invalid; the current one keeps serving.", field_errors(str(exc))
                ) from None
            old = self._gateway.generation
            new = Generation.from_settings(settings, self._edge, self._gateway.metrics, old.number + 1)
            try:
                new.open(settings.limits, settings.upstream_transport)
            except Exception as exc:
                await new.close(0)
                raise ReloadRejected(f"The new configuration could not be opened: {exc}", []) from exc
            self._gateway.generation = new  # the swap: requests from now on run on ``new``
            task = asyncio.create_task(old.close(self._settings.shutdown_grace), name=f"retire-gen-{old.number}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            changed = sorted(
                name
                for name in Settings.model_fields
                if name not in RELOADED
                and name != "config"
                and getattr(settings, name) != getattr(self._settings, name)
            )
            log.info("config reloaded: generation %d, %d route(s)", new.number, len(new.routes.routes))
            if changed:
                log.warning("config reload: changes to %s take effect only after a restart", ", ".join(changed))
            outcome: dict[str, Any] = {
                "generation": new.number,
                "routes": [route.name for route in new.routes.routes],
                "restart_required": changed,
            }
            if self.fan_out is not None:
                self.fan_out()
                outcome["workers"] = "restarting one by one with the new configuration"
            return outcome

    async def reload_logged(self) -> None:
        """For SIGHUP: reload and log the outcome (there is no one to answer)."""
        try:
            await self.reload()
        except ReloadRejected as exc:
            lines = "; ".join(f"{e['field']}: {e['message']}" for e in exc.errors)
            log.error("config reload rejected: %s %s", exc.detail, lines)
        except NotReloadable as exc:
            log.error("config reload rejected: %s", exc.detail)
        except Exception:
            log.exception("config reload failed; the current configuration keeps serving")

    async def aclose(self) -> None:
        """Wait for retiring generations to close (at shutdown)."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)


def field_errors(message: str) -> list[dict[str, str]]:
    """``ConfigError``'s lines (``where: message``) as ``{"field", "message"}`` pairs."""
    if not message.startswith("invalid configuration:"):  # unreadable or unparsable file
        return [{"field": "config", "message": message}]
    lines = [line.strip() for line in message.splitlines()[1:] if line.strip()]
    out = []
    for line in lines:
        field, sep, text = line.partition(": ")
        out.append({"field": field, "message": text} if sep else {"field": "config", "message": line})
    return out
