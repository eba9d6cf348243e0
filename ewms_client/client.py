"""The user's EWMS REST client: submit, inspect, end workflows, and find their queues."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import requests
from rest_tools.client import RestClient

from ewms_pilot.envelope import ENVELOPE, FORMATS

SETTINGS_DOCS: tuple[tuple[str, str, str], ...] = (
    ("EWMS_URL", "required", "base URL of the EWMS server, e.g. https://ewms.example.org"),
    ("EWMS_TOKEN", "required", "bearer token (JWT) of the user"),
    ("EWMS_LOG_LEVEL", "default WARNING", "log level (DEBUG also shows the broker library's logs)"),
)


class ClientError(Exception):
    """A failure to show the user as one line (bad input, refused request, unreachable server)."""


@dataclass(frozen=True)
class QueueProfile:
    mqid: str
    alias: str
    is_activated: bool
    auth_token: str | None
    broker_type: str | None
    broker_address: str | None
    message_format: str = ENVELOPE
    """How messages are written on it (`ewms_pilot.envelope`): the workflow's tasks' setting."""

    def __repr__(self) -> str:  # never print the token
        return f"QueueProfile(mqid={self.mqid!r}, alias={self.alias!r})"


class EWMSClient:
    def __init__(self, url: str, token: str, *, timeout: float = 30) -> None:
        if not url:
            raise ClientError("EWMS_URL is not set")
        if not token:
            raise ClientError("EWMS_TOKEN is not set")
        self.url = url.rstrip("/")
        self.token = token
        self._rc = RestClient(self.url, token, timeout=timeout, retries=0)
        self._token, self._timeout = token, timeout

    def close(self) -> None:
        self._rc.close()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EWMSClient:
        return cls(env.get("EWMS_URL", ""), env.get("EWMS_TOKEN", ""))

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        with self._errors():
            return self._rc.request_seq(method, path, body)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """The server's refusals and the network's failures, as one-line ClientErrors."""
        try:
            yield
        except requests.HTTPError as e:
            raise ClientError(_http_error(e)) from None
        except requests.RequestException as e:
            raise ClientError(f"cannot reach the EWMS server at {self.url}: {type(e).__name__}") from None

    # -- secrets (values go up, never come back) --------------------------------------------

    def set_secret(self, key: str, value: str) -> dict[str, Any]:
        return self._direct("PUT", f"/v1/secrets/{quote(key, safe='')}", {"value": value})

    def secrets(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._direct("GET", "/v1/secrets")["secrets"]
        return found

    def delete_secret(self, key: str) -> dict[str, Any]:
        return self._direct("DELETE", f"/v1/secrets/{quote(key, safe='')}")

    def _direct(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request, no retry adapter: its 503 ("no EWMS_SECRETS_KEY") is shown with the
        server's message, where RestClient's adapter turns it into a bare RetryError."""
        with self._errors():
            r = requests.request(
                method,
                self.url + path,
                json=body,
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=self._timeout,
            )
            r.raise_for_status()
            return r.json()

    # -- workflows ------------------------------------------------------------------------

    def submit(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/v1/workflows", request)

    def workflow(self, workflow_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/workflows/{workflow_id}")

    def abort(self, workflow_id: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/workflows/{workflow_id}/actions/abort", {})

    def finish(self, workflow_id: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/workflows/{workflow_id}/actions/finished", {})

    def query(
        self, kind: str, query: dict[str, Any], projection: list[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every matching document, following `next_after` pages."""
        body: dict[str, Any] = {"query": query}
        if projection:
            body["projection"] = projection
        key = kind.replace("-", "_")
        while True:
            page = self.request("POST", f"/v1/query/{kind}", body)
            yield from page[key]
            if not page.get("next_after"):
                return
            body["after"] = page["next_after"]

    def workflows(self, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The caller's workflows (an admin's: everyone's) matching `query`, every page."""
        return list(self.query("workflows", query or {}))

    def taskforces(self, workflow_id: str) -> list[dict[str, Any]]:
        return list(self.query("taskforces", {"workflow_id": workflow_id}))

    def task_directives(self, workflow_id: str) -> list[dict[str, Any]]:
        return list(self.query("task-directives", {"workflow_id": workflow_id}))

    # -- queues ---------------------------------------------------------------------------

    def public_queues(self, workflow_id: str) -> list[QueueProfile]:
        resp = self.request("GET", f"/v1/workflows/{workflow_id}/mq-profiles/public")
        return [
            QueueProfile(
                p["mqid"],
                p.get("alias", ""),
                bool(p.get("is_activated")),
                p.get("auth_token"),
                p.get("broker_type"),
                p.get("broker_address"),
            )
            for p in resp["mqprofiles"]
        ]

    def pick_queue(
        self,
        workflow_id: str,
        alias: str | None,
        role: str,
        wait_s: float = 60,
        message_format: str | None = None,
    ) -> QueueProfile:
        """The public queue named `alias`, or by default the first one tasks read (`role`
        "push") or the final output (`role` "pull"); waits for its activation. Its message
        format is `message_format`, or by default that of the workflow's tasks."""
        chosen = self._ready_queue(
            workflow_id, role, wait_s, lambda profiles: self._choose(workflow_id, profiles, alias, role)
        )
        fmt = message_format or self.message_format(workflow_id, chosen.mqid)
        return replace(chosen, message_format=fmt)

    def dead_letter_queues(
        self, workflow_id: str, name: str | None, wait_s: float = 60, message_format: str | None = None
    ) -> list[QueueProfile]:
        """The queues whose dead letters to read: `name` (a public alias, or the id of any
        queue of the workflow, private ones too), or by default every queue a task reads.
        The workflow's one broker user may read every queue of its workflow and their
        dead-letter queues (docs/contracts.md section 3), so a public profile's credentials
        serve for all of them."""
        directives = self.task_directives(workflow_id)
        inputs = list(dict.fromkeys(q for d in directives for q in d.get("input_queues", [])))
        outputs = [q for d in directives for q in d.get("output_queues", []) if q not in inputs]
        known = list(dict.fromkeys(inputs + outputs))
        public = self._ready_queue(
            workflow_id, "pull", wait_s, lambda profiles: _any_profile(workflow_id, profiles)
        )
        aliases = {p.mqid: p.alias for p in self.public_queues(workflow_id)}
        if name is None:
            mqids = inputs
        else:
            mqids = [m for m in known if name in (m, aliases.get(m))]
            if not mqids:
                names = ", ".join(aliases.get(m, m) for m in known)
                raise ClientError(f"no queue {name!r} in workflow {workflow_id} (its queues: {names})")
        return [
            replace(
                public,
                mqid=mqid,
                alias=aliases.get(mqid, mqid),
                message_format=message_format or self.message_format(workflow_id, mqid),
            )
            for mqid in mqids
        ]

    def _ready_queue(
        self,
        workflow_id: str,
        role: str,
        wait_s: float,
        choose: Callable[[list[QueueProfile]], QueueProfile],
    ) -> QueueProfile:
        """The chosen queue once it is activated. An ended workflow takes no more pushes, and
        has nothing left to pull once its queues are closed: both are said at once."""
        deadline = time.monotonic() + wait_s
        while True:
            wf = self.workflow(workflow_id)
            chosen = choose(self.public_queues(workflow_id))
            ended = wf.get("deactivated")
            if ended and role == "push":
                raise ClientError(
                    f"workflow {workflow_id} is {ended} ({deactivated_when(wf)}): it takes no more "
                    "messages; submit a new workflow"
                )
            if chosen.is_activated:
                if not (chosen.broker_type and chosen.broker_address and chosen.auth_token):
                    raise ClientError(
                        f"queue {chosen.alias!r} names no message broker: the EWMS server runs "
                        "without one (its EWMS_BROKER_URL is unset), so nothing can be pushed or pulled"
                    )
                return chosen
            if ended:
                raise ClientError(
                    f"workflow {workflow_id} is {ended} ({deactivated_when(wf)}) and its queues "
                    "are closed: there is nothing left to pull"
                )
            if time.monotonic() >= deadline:
                raise ClientError(
                    f"queue {chosen.alias!r} is not activated yet (waited {wait_s:g} s); "
                    f"see `ewms status {workflow_id}`"
                )
            time.sleep(1)

    def message_format(self, workflow_id: str, mqid: str) -> str:
        """`EWMS_PILOT_MESSAGE_FORMAT` of the tasks that read or write queue `mqid` (of all the
        workflow's tasks if none does): what their pilots write and expect."""
        directives = self.task_directives(workflow_id)
        tasks = {
            d["task_id"] for d in directives if mqid in d.get("input_queues", []) + d.get("output_queues", [])
        }
        formats = set()
        for tf in self.taskforces(workflow_id):
            if not tasks or tf.get("task_id") in tasks:
                env = (tf.get("pilot_config") or {}).get("environment") or {}
                formats.add(env.get("EWMS_PILOT_MESSAGE_FORMAT", "").strip() or ENVELOPE)
        if not formats <= set(FORMATS):
            raise ClientError(f"unknown EWMS_PILOT_MESSAGE_FORMAT in the workflow's tasks: {sorted(formats)}")
        if len(formats) > 1:
            raise ClientError(
                "the workflow's tasks use different message formats; choose with --raw or --envelope"
            )
        return formats.pop() if formats else ENVELOPE

    def _choose(
        self, workflow_id: str, profiles: list[QueueProfile], alias: str | None, role: str
    ) -> QueueProfile:
        if not profiles:
            raise ClientError(f"workflow {workflow_id} has no public queue")
        if alias is not None:
            for p in profiles:
                if p.alias == alias:
                    return p
            names = ", ".join(sorted(p.alias for p in profiles))
            raise ClientError(f"no public queue {alias!r} (public queues: {names})")
        directives = self.task_directives(workflow_id)
        inputs = {q for d in directives for q in d.get("input_queues", [])}
        outputs = {q for d in directives for q in d.get("output_queues", [])}
        if role == "push":
            wanted = [p for p in profiles if p.mqid in inputs]
        else:
            wanted = [p for p in profiles if p.mqid in outputs and p.mqid not in inputs]
        if not wanted:
            what = "that a task reads" if role == "push" else "that is a final output"
            raise ClientError(f"no public queue {what}; name one with --queue")
        return wanted[0]


def _any_profile(workflow_id: str, profiles: list[QueueProfile]) -> QueueProfile:
    if not profiles:
        raise ClientError(f"workflow {workflow_id} has no public queue")
    return profiles[0]


def timestamp(ts: float | None) -> str:
    """A server timestamp as local time, for people."""
    return "?" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def deactivated_when(workflow: dict[str, Any]) -> str:
    return f"deactivated {timestamp(workflow.get('deactivated_ts'))}"


def _http_error(e: requests.HTTPError) -> str:
    resp = e.response
    if resp is None:
        return str(e)
    try:
        detail = resp.json().get("error") or resp.text
    except ValueError:
        detail = resp.text[:200]
    return f"{resp.status_code} from the EWMS server: {detail}"
