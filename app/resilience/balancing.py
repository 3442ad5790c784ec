"""Choosing a target: weighted round robin or least connections (pure).

Both pick among the candidates the pool says are available, so health and
breakers stay out of here. Round robin is nginx's smooth weighted round robin:
weights 5:1:1 give ``a a b a c a a``, not five ``a`` in a row. Least
connections picks the lowest ``in_flight / weight`` and breaks ties by round
robin, so an idle pool still spreads load.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Candidate(Protocol):
    index: int
    weight: int
    in_flight: int


class Balancer(Protocol):
    def choose(self, candidates: Sequence[Candidate]) -> Candidate: ...


class RoundRobin:
    def __init__(self, size: int) -> None:
        self._current = [0] * size  # smooth WRR running weights, by target index

    def choose(self, candidates: Sequence[Candidate]) -> Candidate:
        current = self._current
        total = 0
        best: Candidate | None = None
        for candidate in candidates:
            current[candidate.index] += candidate.weight
            total += candidate.weight
            if best is None or current[candidate.index] > current[best.index]:
                best = candidate
        if best is None:
            raise ValueError("no candidates to choose from")
        current[best.index] -= total
        return best


class LeastConnections:
    def __init__(self, size: int) -> None:
        self._tie_break = RoundRobin(size)

    def choose(self, candidates: Sequence[Candidate]) -> Candidate:
        if not candidates:
            raise ValueError("no candidates to choose from")
        lowest = min(c.in_flight / c.weight for c in candidates)
        least = [c for c in candidates if c.in_flight / c.weight == lowest]
        return least[0] if len(least) == 1 else self._tie_break.choose(least)


def balancer_for(strategy: str, size: int) -> Balancer:
    if strategy == "least_connections":
        return LeastConnections(size)
    return RoundRobin(size)
