"""What `amid doctor`'s checks share: the result of one check and how AWS answers read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

EVENTS_PRINCIPAL = "events.amazonaws.com"
AWS_ERRORS = (ClientError, BotoCoreError, OSError)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok     " if self.ok else "problem"
        text = f"{mark} {self.name}: {self.detail}"
        return text if self.ok or not self.fix else f"{text}\n        fix: {self.fix}"


def error_text(error: BaseException) -> str:
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        return f"{info.get('Code', 'Error')}: {info.get('Message', '')}".rstrip(": ")
    return f"{type(error).__name__}: {error}"


def error_code(error: BaseException) -> str:
    return (
        str(error.response.get("Error", {}).get("Code", ""))
        if isinstance(error, ClientError)
        else ""
    )


def statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    found = policy.get("Statement", [])
    return found if isinstance(found, list) else [found]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def actions(statement: dict[str, Any]) -> set[str]:
    return {str(action).lower() for action in as_list(statement.get("Action", []))}


def service_principals(statement: dict[str, Any]) -> list[str]:
    principal = statement.get("Principal", {})
    return as_list(principal.get("Service", [])) if isinstance(principal, dict) else []
