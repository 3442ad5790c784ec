"""Outbound HTTP: the one seam through which Gatehouse calls anything.

``clients.make_client`` builds every ``httpx.AsyncClient`` Gatehouse creates
(route upstreams, JWKS and OAuth token fetches, webhook delivery), each
without a cookie jar; ``transport`` is the aiohttp-backed HTTP/1.1 transport;
``auth`` holds the ``httpx.Auth`` classes for credentials Gatehouse presents
upstream. May import: ``app.config``, ``app.errors``, ``app.wire``.
"""
