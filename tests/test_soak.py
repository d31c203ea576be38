"""The soak, short: a few simulated days of faults and kills, the warehouse equal to the org after each.

`make bench` plays the full 30 days (benchmarks/soak.py); the story is the same.
"""

from __future__ import annotations

from sandbox import SandboxOrg
from tests.support.soak import soak
from tests.support.workspace import Workspace
from tests.test_extract import assert_warehouse_equals_org


def test_days_of_faults_and_kills_never_cost_the_warehouse_its_equality_with_the_org(workspace: Workspace) -> None:
    """GIVEN a loaded warehouse and an org that lives on, day after day, behind an API that fails 15% of its
         calls in every way Zoho and its network do (seeded), and a scheduler that sometimes kills the
         extract (SIGKILL) at a random moment and starts it again
    WHEN three days pass, the extract running each day until a run succeeds
    THEN after every day the warehouse equals the org, and the day's API calls stay within the minimum
         (the record pages from the cursor, the deletion logs, the users check) plus what the faults
         and the kills forced."""

    def compare(org: SandboxOrg) -> None:
        assert_warehouse_equals_org(workspace, "duckdb", org, log_fields=False)

    days = list(soak(workspace, 3, seed=5, fault_rate=0.15, kill_chance=0.5, compare=compare))

    assert [d.day for d in days] == [1, 2, 3]
    assert all(d.within_budget for d in days), "\n".join(d.line() for d in days)
    assert sum(d.injected for d in days) > 0
    print("\n".join(d.line() for d in days))
