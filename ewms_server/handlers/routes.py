"""The ordered route table (a test proves no route shadows a later one)."""

from __future__ import annotations

from .base import BaseHandler
from .job_runner import (
    JobIDRunnerInputsHandler,
    JobIDRunnerInputsIDHandler,
    JobIDRunnerOutputsIDHandler,
    JobIDRunnerStatusHandler,
)
from .jobs import JobIDFilesHandler, JobIDFilesIDHandler, JobIDHandler, JobsHandler
from .meta import HealthHandler, MainHandler, SchemaHandler
from .metrics import MetricsHandler
from .pages import DashboardConfigHandler, DashboardIDHandler, DocsHandler, DocsIDHandler
from .progress import WorkflowIDActionsRetryDeadLettersHandler, WorkflowIDProgressHandler
from .quarantine import QuarantineHandler, QuarantineIDHandler, TMSQuarantineHandler
from .secrets import PilotSecretsHandler, SecretsHandler, SecretsIDHandler
from .task_directives import (
    QueryTaskDirectivesHandler,
    TaskDirectiveIDActionsAddWorkersHandler,
    TaskDirectiveIDHandler,
)
from .taskforces import QueryTaskforcesHandler, TaskforceUUIDHandler
from .tms import (
    TMSCondorCompleteUUIDHandler,
    TMSCondorRmUUIDFailedHandler,
    TMSCondorRmUUIDHandler,
    TMSCondorSubmitUUIDFailedHandler,
    TMSCondorSubmitUUIDHandler,
    TMSPendingStarterHandler,
    TMSPendingStopperHandler,
    TMSStatusesTaskforcesHandler,
)
from .workflows import (
    MQSWorkflowIDMQProfilesPublicHandler,
    QueryWorkflowsHandler,
    WorkflowIDActionsAbortHandler,
    WorkflowIDActionsFinishedHandler,
    WorkflowIDHandler,
    WorkflowIDMQProfilesPublicHandler,
    WorkflowsHandler,
)

HANDLERS: tuple[type[BaseHandler], ...] = (
    MainHandler,
    HealthHandler,
    SchemaHandler,
    WorkflowsHandler,
    WorkflowIDHandler,
    WorkflowIDActionsAbortHandler,
    WorkflowIDActionsFinishedHandler,
    WorkflowIDMQProfilesPublicHandler,
    MQSWorkflowIDMQProfilesPublicHandler,
    QueryWorkflowsHandler,
    TaskDirectiveIDHandler,
    TaskDirectiveIDActionsAddWorkersHandler,
    QueryTaskDirectivesHandler,
    TaskforceUUIDHandler,
    QueryTaskforcesHandler,
    TMSPendingStarterHandler,
    TMSPendingStopperHandler,
    TMSCondorSubmitUUIDHandler,
    TMSCondorSubmitUUIDFailedHandler,
    TMSCondorRmUUIDHandler,
    TMSCondorRmUUIDFailedHandler,
    TMSCondorCompleteUUIDHandler,
    TMSStatusesTaskforcesHandler,
    TMSQuarantineHandler,
    QuarantineHandler,
    QuarantineIDHandler,
    WorkflowIDProgressHandler,
    WorkflowIDActionsRetryDeadLettersHandler,
    MetricsHandler,
    SecretsHandler,
    SecretsIDHandler,
    PilotSecretsHandler,
    DocsHandler,
    DocsIDHandler,
    DashboardConfigHandler,
    DashboardIDHandler,
    JobsHandler,
    JobIDHandler,
    JobIDFilesHandler,
    JobIDFilesIDHandler,
    JobIDRunnerInputsHandler,
    JobIDRunnerInputsIDHandler,
    JobIDRunnerOutputsIDHandler,
    JobIDRunnerStatusHandler,
)
