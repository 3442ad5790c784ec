"""The edge filters: who may call (auth), from where (CORS), how often (rate limits), and as whom upstream.

Each filter is built per route at start-up and plugs into the pipeline
(``app.proxy.exchange``); the order they run in is written down once, in
``app.assembly.filters``. ``resources`` holds what they share for the life of
the process (the outbound client for JWKS/OAuth, the rate-limit storage).

May import: ``app.config``, ``app.errors``, ``app.wire``, ``app.outbound``, ``app.proxy``.
"""
