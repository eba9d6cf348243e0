"""`Storage.count_by` on every store (see conftest.py): grouped counts of indexed fields."""

from __future__ import annotations

import pytest

from ewms_server.storage.base import Change, Storage

from .test_conformance import tf


async def test_counts_group_by_one_and_two_fields_under_a_filter(store: Storage) -> None:
    phases = ["pending-starter", "condor-submit", "condor-submit", "cancelled"]
    await store.insert(
        "taskforces",
        [tf(i, phase=phases[i % 4], schedd=f"s{i % 3}") for i in range(24)],
    )
    assert await store.count_by("taskforces", ["phase"], {}) == {
        ("pending-starter",): 6,
        ("condor-submit",): 12,
        ("cancelled",): 6,
    }
    by_two = await store.count_by("taskforces", ["phase", "schedd"], {})
    assert sum(by_two.values()) == 24
    assert by_two[("condor-submit", "s0")] == sum(
        1 for i in range(24) if phases[i % 4] == "condor-submit" and i % 3 == 0
    )
    # the same as a count() per group
    for (phase, schedd), n in by_two.items():
        assert await store.count("taskforces", {"phase": phase, "schedd": schedd}) == n
    assert await store.count_by("taskforces", ["schedd"], {"phase": {"$ne": "cancelled"}}) == {
        ("s0",): 6,
        ("s1",): 6,
        ("s2",): 6,
    }
    assert await store.count_by("taskforces", ["phase"], {"phase": "nope"}) == {}


async def test_nulls_missing_fields_and_booleans_group_as_themselves(store: Storage) -> None:
    await store.insert(
        "workflows",
        [
            {"workflow_id": "WF-1", "owner": "a", "deactivated": None, "taskforces_stopped": False},
            {"workflow_id": "WF-2", "owner": "a", "deactivated": None, "taskforces_stopped": False},
            {"workflow_id": "WF-3", "owner": "b", "deactivated": "ABORTED", "taskforces_stopped": True},
            {"workflow_id": "WF-4", "owner": "b"},  # no deactivated field at all
        ],
    )
    assert await store.count_by("workflows", ["deactivated"], {}) == {(None,): 3, ("ABORTED",): 1}
    assert await store.count_by("workflows", ["taskforces_stopped", "owner"], {}) == {
        (False, "a"): 2,
        (True, "b"): 1,
        (None, "b"): 1,
    }
    # the counts follow writes
    await store.update_where("workflows", {"owner": "a"}, Change(set={"deactivated": "FINISHED"}))
    assert await store.count_by("workflows", ["deactivated"], {}) == {
        ("FINISHED",): 2,
        ("ABORTED",): 1,
        (None,): 1,
    }


async def test_only_indexed_fields(store: Storage) -> None:
    for fields in (["worker_config"], [], ["phase", "n_workers"]):
        with pytest.raises(ValueError, match="only indexed fields"):
            await store.count_by("taskforces", fields, {})
