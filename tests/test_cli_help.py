"""Every option of every subcommand is documented, help texts name only options that exist, and
``hyperlt --version`` prints the installed version."""

from __future__ import annotations

import argparse
import re

import pytest

from hyperlt import cli, version


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
  action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # pylint: disable=protected-access
  return dict(action.choices)


PARSER = cli.build_parser()
SUBCOMMANDS = _subparsers(PARSER)


def test_every_subcommand_is_listed_with_help():
  assert set(SUBCOMMANDS) == set(cli._COMMANDS)  # pylint: disable=protected-access
  action = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction))  # pylint: disable=protected-access
  listed = {choice.dest: choice.help for choice in action._choices_actions}  # pylint: disable=protected-access
  assert set(listed) == set(SUBCOMMANDS)
  assert all(text and text.strip() for text in listed.values()), listed


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_option_has_help(name):
  undocumented = [a.option_strings or [a.dest] for a in SUBCOMMANDS[name]._actions  # pylint: disable=protected-access
                  if not (a.help and a.help.strip()) or a.help == argparse.SUPPRESS]
  assert not undocumented, f"hyperlt {name}: options without help: {undocumented}"
  assert "--workdir" in SUBCOMMANDS[name]._option_string_actions  # pylint: disable=protected-access


def test_help_texts_name_only_options_that_exist():
  """A help text that says "sweep --preference" must not point at an option sweep lacks."""
  mentioned = []
  for parser in [PARSER, *SUBCOMMANDS.values()]:
    for action in parser._actions:  # pylint: disable=protected-access
      mentioned += re.findall(rf"\b({'|'.join(SUBCOMMANDS)}) (--[a-z-]+)", action.help or "")
  assert mentioned, "expected at least one cross-reference to check"
  missing = [f"{name} {option}" for name, option in mentioned
             if option not in SUBCOMMANDS[name]._option_string_actions]  # pylint: disable=protected-access
  assert not missing, missing


def test_version_prints_the_installed_version(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["--version"])
  assert exit_info.value.code == 0
  assert capsys.readouterr().out.strip() == f"hyperlt {version.installed()}"
  assert re.fullmatch(r"\d+\.\d+\.\d+\S*", version.installed())
