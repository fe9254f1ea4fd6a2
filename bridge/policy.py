"""Tool allow/deny rules: which remote tools the desktop may see and call.

Alloy can restrict connectors and actions on the server; these rules let the
person running the bridge narrow it further on their own machine (e.g. hide
every `*delete*` action from an assistant). Patterns are shell-style globs
matched against the tool name, case-sensitively.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any


def _patterns(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(item.strip() for item in value.split(",") if item.strip())


@dataclass(frozen=True)
class ToolPolicy:
    allowed: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, allowed: str | None, blocked: str | None) -> ToolPolicy:
        return cls(_patterns(allowed), _patterns(blocked))

    @property
    def active(self) -> bool:
        return bool(self.allowed or self.blocked)

    def permits(self, name: str) -> bool:
        if self.allowed and not any(fnmatchcase(name, p) for p in self.allowed):
            return False
        return not any(fnmatchcase(name, p) for p in self.blocked)

    def filter_tools_result(self, result: Any) -> Any:
        """A `tools/list` result without the tools the desktop may not use (other fields untouched)."""
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            return result
        tools = [t for t in result["tools"] if not isinstance(t, dict) or self.permits(str(t.get("name", "")))]
        return {**result, "tools": tools}
