"""Assembly: where the parts become one app.

``factory.create_app`` builds the ASGI app; ``gateway`` is the proxy's ASGI
entry point; ``generation`` is one version of the route table with its
pools, filter chains and clients; ``filters`` is the one list of a route's
filters in order; ``lifespan`` opens and closes what lives as long as the
process (``heap``: freed heap kept while busy, handed back after); ``reload`` swaps
generations; ``drain`` is the shutdown flag; ``ops``, ``webhooks_ops`` and
``problems`` are the ops endpoints (``fastapi_v1``: FastAPI's pydantic-v1 check for
them without importing ``pydantic.v1``).

May import: everything below it (``app.config``, ``app.errors``, ``app.wire``,
``app.observability``, ``app.outbound``, ``app.proxy``, ``app.resilience``,
``app.edge``, ``app.webhooks``).
"""
