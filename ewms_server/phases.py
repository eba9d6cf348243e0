"""Taskforce phases and which transitions each step may make."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    PRE_MQ_ACTIVATION = "pre-mq-activation"
    """Created; its workflow's queues are not made yet."""
    PRE_LAUNCH = "pre-launch"
    """Queues exist; launch control has not released it yet."""
    PENDING_STARTER = "pending-starter"
    """Offered to the TMS of its schedd."""
    CONDOR_SUBMIT = "condor-submit"
    """Its HTCondor cluster exists."""
    PENDING_STOPPER = "pending-stopper"
    """Its workflow ended; waiting for the TMS to remove the cluster."""
    CONDOR_RM = "condor-rm"
    """The TMS removed the cluster; waiting for HTCondor to report it gone."""
    CONDOR_COMPLETE = "condor-complete"
    """Terminal: HTCondor reported the whole cluster gone."""
    SUBMIT_FAILED = "submit-failed"
    """Terminal: every allowed submit attempt failed."""
    CANCELLED = "cancelled"
    """Terminal: the workflow ended before the taskforce reached HTCondor."""


TERMINAL = frozenset({Phase.CONDOR_COMPLETE, Phase.SUBMIT_FAILED, Phase.CANCELLED})
NOT_YET_IN_HTCONDOR = (Phase.PRE_MQ_ACTIVATION, Phase.PRE_LAUNCH, Phase.PENDING_STARTER)
"""On deactivation these end at once (cancelled) without a TMS round trip."""
IN_HTCONDOR = (Phase.CONDOR_SUBMIT,)
"""On deactivation these go to pending-stopper."""
WATCHED = (Phase.CONDOR_SUBMIT, Phase.PENDING_STOPPER, Phase.CONDOR_RM)
"""condor-complete is accepted from these."""
