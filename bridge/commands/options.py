"""Command-line options shared between commands (pure data: importing this costs nothing).

`config`'s options are also `servers connect`'s; `SERVERS_VALUE_FLAGS` lets the dispatcher skip their values
when it looks for the command word (a test checks it against the real `servers` parser).
"""

from __future__ import annotations

from typing import Any

CONFIG_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--name",), {"default": "alloy", "metavar": "NAME", "help": "the entry's name (default: alloy)"}),
    (("--include-secrets",), {"action": "store_true",
                              "help": "print secret values instead of placeholders"}),
    (("--install",), {"action": "store_true",
                      "help": "merge the entry into the client's config file (secrets included)"}),
    (("--no-secrets",), {"action": "store_true",
                         "help": "with --install: write placeholders (VS Code: prompts) for secrets"}),
    (("--force",), {"action": "store_true", "help": "with --install: replace an entry of the same name"}),
    (("--dry-run",), {"action": "store_true",
                      "help": "with --install: print the diff of what would change, write nothing"}),
    (("--config-path",), {"metavar": "PATH", "help": "with --install: the config file to merge into"}),
    (("--launcher",), {"choices": ("auto", "uvx", "path"), "default": "auto",
                       "help": "how the entry starts the bridge: uvx, or this installation's path "
                               "(default: auto)"}),
)

RESTRICTION_NOUNS = ("connector", "action", "user")
SERVERS_VALUE_FLAGS = frozenset({
    "--description", "--instructions", "--token-days", "--restrictions-file",
    *(f"--{verb}-{noun}" for verb in ("allow", "block") for noun in RESTRICTION_NOUNS),
})
