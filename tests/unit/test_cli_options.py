"""The dispatcher's view of the flags matches the parsers the commands really build."""

from __future__ import annotations

import argparse

from bridge.cli import build_parser
from bridge.commands.options import SERVERS_VALUE_FLAGS
from bridge.settings import flag_name, setting_names


def _value_flags(parser: argparse.ArgumentParser) -> set[str]:
    flags: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _value_flags(sub)
        elif action.option_strings and action.nargs != 0:
            flags |= set(action.option_strings)
    return flags


def test_the_servers_value_flags_the_dispatcher_skips_are_exactly_the_servers_parsers():
    real = _value_flags(build_parser("servers"))
    generic = {"--env-file", *(flag_name(name) for name in setting_names())}
    config_options = {"--name", "--config-path", "--launcher"}
    assert real - generic - config_options == set(SERVERS_VALUE_FLAGS)
