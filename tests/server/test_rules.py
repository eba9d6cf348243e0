"""Workflow rules the schema cannot say (pure)."""

from __future__ import annotations

import pytest

from ewms_server.errors import Invalid
from ewms_server.rules import check_workflow_request
from tests.conftest import workflow_body

LOCS = {"local": object(), "remote": object()}


def test_aliases_in_first_use_order() -> None:
    assert check_workflow_request(workflow_body(n_tasks=3), LOCS) == ["q0", "q1", "q2", "q3"]


@pytest.mark.parametrize(
    "change,message",
    [
        (
            lambda b: b["tasks"][0].update(cluster_locations=["x"]),
            "unknown cluster location 'x' (known: local, remote)",
        ),
        (lambda b: b["tasks"][0].update(input_queue_aliases=["a", "a"]), "duplicated alias"),
        (lambda b: b["tasks"][0].update(output_queue_aliases=["q0"]), "both input and output"),
        (lambda b: b.update(public_queue_aliases=["q0", "q0"]), "duplicated alias"),
        (lambda b: b.update(public_queue_aliases=["zz"]), "not an input or output"),
    ],
)
def test_rules(change, message: str) -> None:  # type: ignore[no-untyped-def]
    body = workflow_body()
    change(body)
    with pytest.raises(Invalid, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_workflow_request(body, LOCS)
