"""Outbound HTTP: the one seam through which Gatehouse calls anything.

``clients.make_client`` builds every ``httpx.AsyncClient`` Gatehouse creates
(route upstreams, JWKS and OAuth token fetches, webhook delivery), each
without a cookie jar; ``transport`` is the aiohttp-backed HTTP/1.1 transport;
``auth`` holds the ``httpx.Auth`` classes for credentials Gatehouse presents
upstream; ``aiohttp_import`` imports aiohttp without the CA stores it
would load for nothing. May import: ``app.config``, ``app.errors``, ``app.wire``.
"""

from app.outbound.aiohttp_import import import_aiohttp

# Before any module here imports aiohttp: without its import-time CA-store loads (2.7 MiB).
import_aiohttp()
