"""Who is asking: the identity every handler and operation acts for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Caller:
    """The token subject and role ('user', 'admin', 'system-tms')."""

    subject: str
    role: str

    @property
    def entity(self) -> str:
        """How the audit trail names this caller."""
        return f"{self.role}:{self.subject}"

    def scope(self) -> dict[str, Any]:
        """The ownership filter always applied to this caller's reads and writes."""
        return {} if self.role in ("admin", "system-tms") else {"owner": self.subject}
