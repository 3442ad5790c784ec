"""The route table: match a normalised path to a compiled route (pure).

Everything a request needs from its route is computed here once, at start-up:
the upstream's origin and base path, the header plan, the methods and their
``Allow`` value, the timeouts as httpx wants them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from app.config.routes import EdgePolicy, EncodedSlashes, Reading, Resilience, Route, Timeouts
from app.config.settings import Settings
from app.config.upstream import Upstream, parse_upstream
from app.errors import BadRequest
from app.proxy.ambiguity import PathReadings, reads_one_way
from app.proxy.headers import HeaderPlan
from app.proxy.urls import NormalisedPath, climbs_out

ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Allowed only on routes that list them: CONNECT tunnels out of the route's base path, TRACE echoes credentials.
OPT_IN_METHODS = frozenset({"CONNECT", "TRACE"})


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A ``Route`` with everything per-request work needs precomputed."""

    route: Route
    name: str
    prefix: str
    upstream: Upstream  # the first target: base path and scheme are the same for all
    targets: tuple[Upstream, ...]
    weights: tuple[int, ...]
    resilience: Resilience
    edge: EdgePolicy
    strip_prefix: bool
    methods: frozenset[str] | None  # None: every method
    allow: bytes
    timeouts: Timeouts
    timeout_extension: dict[str, float]
    headers: HeaderPlan
    max_body_bytes: int | None
    http2: bool
    verify: bool | Path
    encoded_slashes: EncodedSlashes
    ignore_path_readings: frozenset[Reading]
    client_cert: tuple[Path, Path] | None  # (certificate, key) for upstreams that require mutual TLS

    @classmethod
    def compile(
        cls,
        route: Route,
        default_timeouts: Timeouts,
        resilience: Resilience | None = None,
        edge: EdgePolicy | None = None,
        *,
        protected_headers: Iterable[str] = (),
        underscores_in_headers: bool = False,
    ) -> CompiledRoute:
        """Precompute ``route``; ``resilience`` and ``edge`` come from ``Settings.policies_for``,
        ``protected_headers`` from ``Settings.protected_header_names``."""
        targets = route.target_list
        parsed = tuple(parse_upstream(target.url) for target in targets)
        upstream = parsed[0]
        timeouts = route.timeout.over(default_timeouts)
        return cls(
            route=route,
            name=route.name,
            prefix=route.prefix,
            upstream=upstream,
            targets=parsed,
            weights=tuple(target.weight for target in targets),
            resilience=resilience if resilience is not None else Resilience(),
            edge=edge if edge is not None else EdgePolicy(),
            strip_prefix=route.strip_prefix,
            methods=frozenset(route.methods) if route.methods else None,
            allow=", ".join(route.methods or ALL_METHODS).encode(),
            timeouts=timeouts,
            timeout_extension=timeouts.model_dump(),
            headers=HeaderPlan.build(
                upstream_authority=upstream.authority,
                preserve_host=route.preserve_host,
                prefix=route.prefix,
                strip_prefix=route.strip_prefix,
                request_set=route.request_headers.set,
                request_remove=route.request_headers.remove,
                response_set=route.response_headers.set,
                response_remove=route.response_headers.remove,
                protected=protected_headers,
                allow_method_override=route.allow_method_override,
                allow_underscores=underscores_in_headers,
            ),
            max_body_bytes=route.max_body_bytes,
            http2=route.http2,
            verify=route.verify,
            encoded_slashes=route.encoded_slashes,
            ignore_path_readings=frozenset(route.ignore_path_readings),
            client_cert=(
                (route.client_cert_file, route.client_key_file)
                if route.client_cert_file is not None and route.client_key_file is not None
                else None
            ),
        )

    @property
    def pooled(self) -> bool:
        """Whether requests go through a target pool (balancing, health, retries, breaker).

        A single URL with none of those takes the plain path and costs nothing extra.
        """
        r = self.resilience
        return len(self.targets) > 1 or any(x is not None for x in (r.health_check, r.retries, r.circuit_breaker))

    def allows(self, method: str) -> bool:
        if self.methods is None:
            return method not in OPT_IN_METHODS
        # HEAD is served wherever GET is (RFC 9110 §9.3.2).
        return method in self.methods or (method == "HEAD" and "GET" in self.methods)


class RouteTable:
    """Longest whole-segment prefix match over the configured routes.

    ``match`` walks the path's segment boundaries from the longest candidate
    down, with one dict lookup each: cost grows with path depth, not with the
    number of routes.
    """

    def __init__(self, routes: Iterable[CompiledRoute]) -> None:
        self._by_prefix = {route.prefix: route for route in routes}
        self.routes = tuple(sorted(self._by_prefix.values(), key=lambda r: r.prefix))
        self._readings = PathReadings(self._by_prefix)

    @classmethod
    def from_settings(cls, settings: Settings) -> RouteTable:
        """The table for ``settings``' routes, each with its policies and the gateway-wide header rules."""
        protected = settings.protected_header_names()
        return cls(
            CompiledRoute.compile(
                route,
                settings.timeout,
                *settings.policies_for(route),
                protected_headers=protected,
                underscores_in_headers=settings.underscores_in_headers,
            )
            for route in settings.routes
        )

    def match(self, path: str) -> CompiledRoute | None:
        by_prefix = self._by_prefix
        candidate = path[:-1] if len(path) > 1 and path.endswith("/") else path
        while True:
            route = by_prefix.get(candidate)
            if route is not None:
                return route
            cut = candidate.rfind("/")
            if cut <= 0:
                return by_prefix.get("/")
            candidate = candidate[:cut]

    def resolve(self, path: NormalisedPath) -> tuple[CompiledRoute | None, str]:
        """The route for a normalised path, and the path to forward.

        The route is chosen by the resolved path, which is also what is sent
        upstream, so no upstream ever sees a dot segment. A raw path that starts
        inside a route's prefix and climbs above it (``/api/users/../../etc``,
        ``/api/%2e%2e/admin``) is refused with 400 rather than re-routed, and so
        is a path that an upstream could read as another route
        (``AmbiguousPath``, see ``app.proxy.ambiguity``).
        """
        route = self.match(path.path)
        if path.raw_segments is not None:
            start = self.match("/" + "/".join(path.raw_segments))
            if start is not None and climbs_out(path.raw_segments, start.prefix):
                raise BadRequest(f"Dot segments in the path would leave the route {start.name!r}.")
        if route is None or reads_one_way(path.path):
            return route, path.path
        forwarded = self._readings.check(
            path.path,
            route.prefix,
            encoded_slashes=route.encoded_slashes,
            ignore=route.ignore_path_readings,
        )
        return route, forwarded
