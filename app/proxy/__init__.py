"""The proxy path: one request from raw target to streamed response.

Pure: ``urls`` (path normalisation, upstream targets, Location rewriting),
``headers`` (the per-route header plan), ``routing`` (the compiled route table),
``exchange`` (the per-request object filters share, and how filters chain).
I/O: ``body`` (the client's body as an httpx stream), ``forwarding`` (send and
relay, the one place httpx errors become gateway errors), ``clients`` (the
per-upstream clients, made by ``app.outbound``).

May import: ``app.config``, ``app.errors``, ``app.wire``, ``app.observability``, ``app.outbound``.
"""
