"""Every subcommand's --help describes every flag."""

from __future__ import annotations

import argparse

from fraudfl.cli import build_parser

Named = list[tuple[str, argparse.ArgumentParser]]


def _parsers(parser: argparse.ArgumentParser, name: str) -> Named:
    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                found += _parsers(sub, f"{name} {sub_name}")
    return found


def test_every_flag_has_help() -> None:
    undocumented = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, parser in _parsers(build_parser(), "fraudfl")
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert undocumented == []
