"""Property: for any n, t, d, graph and dropout pattern, the round either yields the exact ring
sum of exactly the banks that sent masked inputs, or aborts exactly when a threshold fails."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraudfl.secagg import ServerStatus
from tests.secagg.secagg_driver import make_driver


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_result_or_abort_matches_the_dropout_pattern(data: st.DataObject) -> None:
    n = data.draw(st.integers(3, 9), label="n")
    neighbours = data.draw(st.sampled_from([0, 2, 4]), label="k")
    d = data.draw(st.integers(1, 12), label="d")
    weighted = data.draw(st.booleans(), label="weighted")
    drv = make_driver(n=n, t=2, d=d, neighbours=neighbours, seed=n * 100 + d)
    groups = drv.server.params.groups
    group = min(len(g) for g in groups)
    t = data.draw(st.integers(group // 2 + 1, group), label="t")
    drv = make_driver(
        n=n, t=t, d=d, neighbours=neighbours, weighted=weighted, seed=n * 100 + d
    )
    stages = data.draw(
        st.lists(st.sampled_from([None, 1, 2, 3, 4]), min_size=n, max_size=n), label="drop"
    )
    drops = {name: s for name, s in zip(drv.names, stages, strict=True) if s is not None}
    drv.run(drops)
    # SecAgg+ fixes the graph only after every bank's nonce is revealed: the server's final
    # parameters hold the graph the round actually used.
    groups = drv.server.params.groups

    def alive(stage: int) -> set[int]:
        return {i for i, s in enumerate(stages) if s is None or s > stage}

    def prune(members: set[int]) -> set[int]:
        while starved := {u for u in members if len(groups[u] & members) < t}:
            members = members - starved
        return members

    # The server excludes banks left with fewer than t group members after stages 1 and 2.
    u1 = prune(alive(1))
    u2 = prune(alive(2) & u1)
    u3 = alive(3) & u2
    u4 = alive(4) & u3
    ok = all(len(u) >= t for u in (u1, u2, u3, u4)) and all(
        len(groups[v] & u4) >= t for v in u2
    )
    if ok:
        assert drv.server.status is ServerStatus.DONE, drv.server.abort_reason
        summed = [drv.names[i] for i in sorted(u3)]
        assert drv.server.survivors == summed
        np.testing.assert_array_equal(drv.server.result, drv.expected_total(summed))
    else:
        assert drv.server.status is ServerStatus.ABORTED
