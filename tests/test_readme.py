"""README.md and the command line cannot disagree: the README's command reference is the
parser's own --help, checked here, and every option the README names exists.

After changing an option's help, refresh the README with `python tests/test_readme.py`.
"""

import contextlib
import io
import os
import re
import sys
from pathlib import Path

import pytest

from benchmark.cli import COMMANDS, build_parser

README = Path(__file__).resolve().parent.parent / "README.md"
WIDTH = "100"  # columns argparse wraps the help at, so that the text is the same everywhere
BLOCK = re.compile(r"<!-- help: (?P<command>[\w-]+) -->\n```text\n(?P<text>.*?)\n```", re.S)


def help_text(command: str | None) -> str:
    """What `python run_benchmark.py [COMMAND] --help` prints."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            build_parser().parse_args([command, "--help"] if command else ["--help"])
    finally:
        os.environ.pop("COLUMNS") if previous is None else os.environ.update(COLUMNS=previous)
    return out.getvalue().rstrip()


def readme_blocks(text: str) -> dict[str, str]:
    return {match["command"]: match["text"] for match in BLOCK.finditer(text)}


def refreshed(text: str) -> str:
    """The README with every help block replaced by the current --help."""
    def replace(match):
        command = None if match["command"] == "main" else match["command"]
        return f"<!-- help: {match['command']} -->\n```text\n{help_text(command)}\n```"
    return BLOCK.sub(replace, text)


def test_the_readme_shows_each_commands_help_as_the_parser_prints_it():
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    assert list(blocks) == ["main", *COMMANDS], "one help block per command, in the parser's order"
    for command, text in blocks.items():
        assert text == help_text(None if command == "main" else command), \
            f"README's help of {command} is stale: run `python tests/test_readme.py`"


def test_every_option_the_readme_names_exists():
    parser_flags = set()
    for command in COMMANDS:
        parser_flags |= set(re.findall(r"--[a-z][a-z-]+", help_text(command)))
    text = README.read_text(encoding="utf-8")
    named = set(re.findall(r"run_benchmark\.py[^\n`]*?(--[a-z][a-z-]+)", text))
    named |= set(re.findall(r"^- `(--[a-z][a-z-]+)", text, re.M))  # the list of useful options
    assert named and named <= parser_flags, f"README names options the parser does not have: {named - parser_flags}"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_text_is_stable_across_terminal_widths(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    assert help_text(command) == help_text(command)  # COLUMNS is set inside, whatever the terminal


if __name__ == "__main__":
    README.write_text(refreshed(README.read_text(encoding="utf-8")), encoding="utf-8")
    sys.exit(0)
