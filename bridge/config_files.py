"""Merging one server entry into a client's config file without losing anything else.

The rules: everything else in the file stays as it was (other servers, other
settings, key order); a file that is not valid JSON or TOML, or that has
comments this writer cannot keep (JSONC), is refused and left untouched; an
existing entry of the same name is replaced only when asked; a timestamped
backup is written first; the new content replaces the old in one rename, so
nothing is ever half-written; a new file is readable by the user only.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.client_configs import ClientSpec, ServerEntry, placeholder

_INDENT = re.compile(r"\n([ \t]+)\S")


class ConfigFileError(Exception):
    """The file cannot be merged into; the message says why and what to do."""


class UnmergeableConfigFile(ConfigFileError):
    """The file cannot take the entry (comments, invalid JSON or TOML, another shape): it is pasted by hand."""


@dataclass(frozen=True)
class Change:
    """What merging an entry into a file would do."""

    path: Path
    before: str | None  # None: the file does not exist yet
    after: str
    replaced: bool  # an entry of that name was there and is replaced

    @property
    def unchanged(self) -> bool:
        return self.before == self.after


def plan(spec: ClientSpec, path: Path, server: ServerEntry, *, force: bool) -> Change:
    """The file's content with `server` merged in; raises `ConfigFileError` when it must not be touched."""
    try:
        before = path.read_text(encoding="utf-8") if path.exists() else None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"cannot read {path} ({type(exc).__name__})") from None
    if spec.format == "toml":
        after, replaced = _merge_toml(spec, path, before, server, force)
    else:
        after, replaced = _merge_json(spec, path, before, server, force)
    return Change(path, before, after, replaced)


def _merge_json(spec: ClientSpec, path: Path, before: str | None, server: ServerEntry,
                force: bool) -> tuple[str, bool]:
    data: Any = {}
    if before is not None and before.strip():
        try:
            data = json.loads(before)
        except ValueError:
            if _is_jsonc(before):
                raise UnmergeableConfigFile(
                    f"{path} has comments (or trailing commas), which this writer cannot keep; it was left "
                    "untouched. Add the entry printed by `config` by hand, or remove the comments first.") from None
            raise UnmergeableConfigFile(
                f"{path} is not valid JSON; it was left untouched. Fix it and try again.") from None
        if not isinstance(data, dict):
            raise UnmergeableConfigFile(f"{path} is not a JSON object; it was left untouched.")
    servers = data.setdefault(spec.key, {})
    if not isinstance(servers, dict):
        raise UnmergeableConfigFile(f"{path}: {spec.key!r} is not an object; it was left untouched.")
    entry = spec.entry(server)
    existing = servers.get(server.name)
    replaced = existing is not None and existing != entry
    if replaced and not force:
        raise ConfigFileError(
            f"{path} already has an entry named {server.name!r} that differs ({_differences(existing, entry)}); "
            "use --force to replace it, or --name to add another.")
    servers[server.name] = entry
    inputs = spec.inputs(server)
    if inputs:
        kept = [item for item in data.get("inputs", []) if not (isinstance(item, dict) and
                                                                 item.get("id") in {i["id"] for i in inputs})]
        data["inputs"] = kept + inputs
    indent = _indent_of(before)
    return json.dumps(data, indent=indent, ensure_ascii=False) + "\n", replaced


def _merge_toml(spec: ClientSpec, path: Path, before: str | None, server: ServerEntry,
                force: bool) -> tuple[str, bool]:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        document = tomlkit.parse(before or "")
    except TOMLKitError:
        raise UnmergeableConfigFile(f"{path} is not valid TOML; it was left untouched. Fix it and try again.") from None
    servers = document.get(spec.key)
    if servers is None:
        servers = tomlkit.table(is_super_table=True)
        document[spec.key] = servers
    elif not isinstance(servers, dict):
        raise UnmergeableConfigFile(f"{path}: {spec.key!r} is not a table; it was left untouched.")
    entry = spec.entry(server)
    existing = servers.get(server.name)
    plain: Any = existing.unwrap() if existing is not None and hasattr(existing, "unwrap") else existing
    replaced = existing is not None and plain != entry
    if replaced and not force:
        raise ConfigFileError(
            f"{path} already has an entry named {server.name!r} that differs ({_differences(plain, entry)}); "
            "use --force to replace it, or --name to add another.")
    servers[server.name] = toml_table(entry)
    return tomlkit.dumps(document), replaced


def toml_table(entry: dict[str, Any]) -> Any:
    """A client entry as a TOML table (`command`, `args`, then an `[….env]` sub-table)."""
    import tomlkit

    table = tomlkit.table()
    table["command"] = entry["command"]
    table["args"] = entry["args"]
    env = tomlkit.table()
    for name, value in entry["env"].items():
        env[name] = value
    table["env"] = env
    return table


def previous_entry(spec: ClientSpec, change: Change, name: str) -> dict[str, Any] | None:
    """The entry named `name` that `change` replaces (None: it adds one)."""
    if not change.replaced or change.before is None or spec.format != "json":
        return None
    try:
        entry = json.loads(change.before)[spec.key][name]
    except (ValueError, KeyError, TypeError):
        return None
    return entry if isinstance(entry, dict) else None


def _mask_value(match: re.Match[str]) -> str:
    value = match.group("value")
    if not value or value == "***" or (value.startswith("<") and value.endswith(">")) or value.startswith("${"):
        return match.group(0)
    return f'{match.group("head")}***{match.group("quote")}'


def _differences(old: Any, new: dict[str, Any]) -> str:
    """Which parts of an entry differ, naming env vars but never showing their values."""
    if not isinstance(old, dict):
        return "it is not an object"
    found = [key for key in ("type", "command", "args") if old.get(key) != new.get(key)]
    old_env, new_env = old.get("env") or {}, new.get("env") or {}
    if isinstance(old_env, dict):
        changed = sorted(name for name in set(old_env) | set(new_env) if old_env.get(name) != new_env.get(name))
        if changed:
            found.append("env " + ", ".join(changed))
    return "; ".join(found) or "other fields"


def _indent_of(text: str | None) -> int | str:
    match = _INDENT.search(text or "")
    if match is None:
        return 2
    whitespace = match.group(1)
    return "\t" if "\t" in whitespace else len(whitespace)


def _is_jsonc(text: str) -> bool:
    """Whether the text is JSON once comments and trailing commas are removed."""
    out: list[str] = []
    index, length, in_string = 0, len(text), False
    while index < length:
        char = text[index]
        if in_string:
            out.append(char)
            if char == "\\" and index + 1 < length:
                out.append(text[index + 1])
                index += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            out.append(char)
        elif text.startswith("//", index):
            end = text.find("\n", index)
            index = length if end < 0 else end
            continue
        elif text.startswith("/*", index):
            end = text.find("*/", index + 2)
            index = length if end < 0 else end + 2
            continue
        else:
            out.append(char)
        index += 1
    stripped = re.sub(r",(\s*[}\]])", r"\1", "".join(out))
    try:
        json.loads(stripped)
    except ValueError:
        return False
    return True


def apply(change: Change) -> Path | None:
    """Write the change: a timestamped backup first, then the new content in one rename. Returns the backup."""
    backup: Path | None = None
    path = change.path
    if change.before is not None:
        backup = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(path, backup)
    write_atomically(path, change.after)
    return backup


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename; a new file is created readable by the user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            shutil.copymode(path, temporary)  # keep the file's own permissions
        else:
            os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# An env var that holds a secret, as JSON (`"NAME": "value"`) or TOML (`NAME = "value"`) writes it.
_SECRET_LINE = re.compile(r'(?P<head>["\']?(?P<name>[A-Za-z0-9_]*(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|'
                          r'AUTH|HEADERS|URL|PROXY)[A-Za-z0-9_]*)["\']?\s*[:=]\s*(?P<quote>["\']))'
                          r'(?P<value>(?:(?!(?P=quote))[^\\]|\\.)*)(?P=quote)', re.IGNORECASE)
# A token anywhere in a string (an `args` item, `--token=…`, `Authorization: Bearer …`, a URL's query): a run of
# 16+ letters and digits mixed. Words, paths, versions and dashed ids are not token-shaped.
_TOKEN_RUN = re.compile(r"(?<![A-Za-z0-9_])(?=[A-Za-z_]*[0-9])(?=[0-9_]*[A-Za-z])[A-Za-z0-9_]{16,}(?![A-Za-z0-9_])")


def unified_diff(change: Change, server: ServerEntry) -> str:
    """What the change does, as a unified diff, with every secret-looking value masked on both sides
    (the entry's own, and any other entry's in the file)."""

    def masked(text: str | None) -> list[str]:
        if not text:
            return []
        for name in server.secrets:
            value = server.env.get(name)
            if value and value != placeholder(name):
                text = text.replace(value, "***").replace(json.dumps(value)[1:-1], "***")
        lines = text.splitlines(keepends=True)
        return [_TOKEN_RUN.sub("***", _SECRET_LINE.sub(_mask_value, line)) for line in lines]

    lines = difflib.unified_diff(masked(change.before), masked(change.after),
                                 fromfile=str(change.path) if change.before is not None else "/dev/null",
                                 tofile=str(change.path))
    return "".join(lines)
