"""The API tests again, against a real MongoDB at EWMS_TEST_MONGODB_URL (CI runs one in a
service container; this machine has no MongoDB server, so here they are skipped)."""

from __future__ import annotations

import os
import secrets

import pytest

from tests.server.test_bad_input import *  # noqa: F403
from tests.server.test_jobs_api import *  # noqa: F403
from tests.server.test_lifecycle import *  # noqa: F403
from tests.server.test_pagination import *  # noqa: F403

URL = os.environ.get("EWMS_TEST_MONGODB_URL")
pytestmark = pytest.mark.skipif(not URL, reason="no MongoDB server here: set EWMS_TEST_MONGODB_URL")


@pytest.fixture
def backend() -> str:  # overrides the conftest fixture: one fresh database per test
    assert URL
    return URL


@pytest.fixture
def server_env() -> dict[str, str]:
    return {
        "EWMS_MONGODB_DB": f"ewms_test_{secrets.token_hex(6)}",
        "EWMS_QUERY_PAGE_DOCS": "400",
        "EWMS_QUERY_PAGE_BYTES": "200000",
    }
