"""Fields a filter adds to the upstream's response (CORS, rate limits), without httpx's editing costs.

httpx's ``Headers`` editing API is costly on a hot path: a ``name in headers`` that
misses raises and catches a ``KeyError``, each ``headers[name] = value`` encodes,
lower-cases and scans every field, and ``httpx.Headers(fields)`` normalises each
field again. ``with_fields`` edits the ``(name as sent, lower-case name, value)``
list that ``Headers`` keeps (httpx 0.28's private ``_list``, as
``app.outbound.fastpath.raw_headers`` builds it) with C-level scans: CORS's two
fields cost 45k instructions per request through the editing API, 10k here
(callgrind). ``tests/unit/edge/test_fields.py`` pins the behaviour.
"""

from __future__ import annotations

from operator import itemgetter

import httpx

Fields = list[tuple[bytes, bytes]]

_LOWER_NAME = itemgetter(1)


def with_fields(response: httpx.Response, add: Fields, drop: frozenset[bytes] = frozenset()) -> httpx.Response:
    """``response`` without its fields named in ``drop`` (lower case), with ``add`` (lower-case names) after the rest.

    A ``Vary`` in ``add`` is joined to the upstream's ``Vary``, if it sent one.
    """
    headers = response.headers
    entries: list[tuple[bytes, bytes, bytes]] = headers._list
    names = list(map(_LOWER_NAME, entries))
    if drop and not drop.isdisjoint(names):
        entries = headers._list = [entry for entry in entries if entry[1] not in drop]
        names = list(map(_LOWER_NAME, entries))
    for name, value in add:
        if name == b"vary" and b"vary" in names:
            at = len(names) - 1 - names[::-1].index(b"vary")  # the last Vary the upstream sent
            sent, lower, old = entries[at]
            entries[at] = (sent, lower, old + b", " + value)
        else:
            entries.append((name, name, value))
    headers._encoding = None  # an echoed Origin may not be ASCII: decide again if anyone decodes
    return response
