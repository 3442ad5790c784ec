from collections import Counter
from dataclasses import dataclass

import pytest

from app.resilience.balancing import LeastConnections, RoundRobin


@dataclass(eq=False)
class C:
    index: int
    weight: int = 1
    in_flight: int = 0


def names(balancer, candidates, n):
    return [balancer.choose(candidates).index for _ in range(n)]


def test_round_robin_cycles_equal_targets_in_order():
    targets = [C(0), C(1), C(2)]
    assert names(RoundRobin(3), targets, 6) == [0, 1, 2, 0, 1, 2]


def test_weighted_round_robin_is_smooth_and_proportional():
    targets = [C(0, weight=5), C(1), C(2)]
    picks = names(RoundRobin(3), targets, 7)
    assert picks == [0, 0, 1, 0, 2, 0, 0]  # nginx's smooth WRR: never five in a row
    assert Counter(names(RoundRobin(3), targets, 700)) == {0: 500, 1: 100, 2: 100}


def test_round_robin_skips_targets_that_are_not_candidates():
    targets = [C(0), C(1), C(2)]
    balancer = RoundRobin(3)
    assert set(names(balancer, [targets[0], targets[2]], 4)) == {0, 2}


def test_least_connections_prefers_the_least_loaded_per_weight():
    targets = [C(0, in_flight=3), C(1, in_flight=1), C(2, weight=4, in_flight=2)]
    assert LeastConnections(3).choose(targets).index == 2  # 2/4 beats 1/1


def test_least_connections_breaks_ties_round_robin():
    targets = [C(0), C(1), C(2)]
    assert names(LeastConnections(3), targets, 3) == [0, 1, 2]


@pytest.mark.parametrize("balancer", [RoundRobin(1), LeastConnections(1)])
def test_choosing_from_nothing_is_an_error(balancer):
    with pytest.raises(ValueError):
        balancer.choose([])
