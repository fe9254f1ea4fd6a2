"""The user's own least privilege: which remote tools the desktop may see and call.

Alloy restricts connectors and actions on the server; these rules let the
person running the bridge narrow it further on their own machine:

- `ALLOY_ALLOWED_TOOLS` / `ALLOY_BLOCKED_TOOLS`: shell-style globs matched
  against the tool name, case-sensitively (e.g. hide every `*delete*`);
- `ALLOY_READ_ONLY`: only tools whose annotations say `readOnlyHint: true`.
  A tool without annotations is hidden (when in doubt, hide), and a call to a
  tool no `tools/list` has shown as read-only is refused.

A tool must pass every rule. Hidden tools are removed from each `tools/list`
page (cursors pass unchanged), and calls to them are refused locally, never
reaching the remote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

RULES = ("allowed", "blocked", "read_only")


def _patterns(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(item.strip() for item in value.split(",") if item.strip())


def is_read_only(tool: dict[str, Any]) -> bool:
    annotations = tool.get("annotations")
    return isinstance(annotations, dict) and annotations.get("readOnlyHint") is True


@dataclass
class ToolPolicy:
    allowed: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    read_only: bool = False
    _read_only_tools: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    @classmethod
    def from_settings(cls, allowed: str | None, blocked: str | None, read_only: bool = False) -> ToolPolicy:
        return cls(_patterns(allowed), _patterns(blocked), read_only)

    @property
    def active(self) -> bool:
        return bool(self.allowed or self.blocked or self.read_only)

    def refusal(self, name: str, tool: dict[str, Any] | None = None) -> str | None:
        """Which rule hides the tool (`allowed`, `blocked`, `read_only`), or None when it may be used.

        Without the tool's description, read-only is judged from what `tools/list` has shown.
        """
        if self.allowed and not any(fnmatchcase(name, p) for p in self.allowed):
            return "allowed"
        if any(fnmatchcase(name, p) for p in self.blocked):
            return "blocked"
        if self.read_only:
            if tool is not None:
                return None if is_read_only(tool) else "read_only"
            if name not in self._read_only_tools:
                return "read_only"
        return None

    def refused_call(self, name: Any) -> str | None:
        """Why a `tools/call` of `name` is refused, for the desktop; None when it may go to the remote."""
        if not isinstance(name, str):
            return "A tools/call must name its tool with a string (params.name); the bridge's tool policy " \
                   "cannot judge it."
        rule = self.refusal(name)
        if rule is None:
            return None
        reason = {
            "allowed": "it is not in ALLOY_ALLOWED_TOOLS",
            "blocked": "it matches ALLOY_BLOCKED_TOOLS",
            "read_only": "ALLOY_READ_ONLY is on and no tools/list has shown it as read-only (readOnlyHint)",
        }[rule]
        return f"Tool {name!r} is blocked by the bridge's tool policy: {reason}."

    def filter_tools_result(self, result: Any) -> Any:
        """A `tools/list` result without the tools the desktop may not use (other fields untouched)."""
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            return result
        kept = []
        for tool in result["tools"]:
            if not isinstance(tool, dict):
                kept.append(tool)
                continue
            name = str(tool.get("name", ""))
            if is_read_only(tool):
                self._read_only_tools.add(name)
            else:
                self._read_only_tools.discard(name)
            if self.refusal(name, tool) is None:
                kept.append(tool)
        return {**result, "tools": kept}

    def hidden_by_rule(self, tools: list[dict[str, Any]]) -> dict[str, int]:
        """How many of `tools` each rule hides (a tool counts for the first rule that hides it)."""
        counts = dict.fromkeys(RULES, 0)
        for tool in tools:
            rule = self.refusal(str(tool.get("name", "")), tool)
            if rule is not None:
                counts[rule] += 1
        return counts
