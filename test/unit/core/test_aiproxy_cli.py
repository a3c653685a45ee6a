"""`aiproxy` command line: serve is the default command, with or without its options."""

from __future__ import annotations

import pytest

from aiproxy.entrypoints.aiproxy import _parser, with_default_command


def parse(argv: list[str]):
    return _parser().parse_args(with_default_command(argv))


def test_no_command_is_serve():
    assert parse([]).command == "serve"


@pytest.mark.parametrize("argv", [["--workers", "2"], ["serve", "--workers", "2"]])
def test_serve_options_without_the_command_are_serves(argv):
    # It was argparse's "invalid choice: '2' (choose from 'serve')".
    args = parse(argv)
    assert (args.command, args.workers) == ("serve", 2)


def test_an_unknown_option_is_reported_by_serve(capsys):
    with pytest.raises(SystemExit) as info:
        parse(["--bogus"])
    assert info.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_top_level_help_and_version_stay(flag, capsys):
    with pytest.raises(SystemExit) as info:
        parse([flag])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "aiproxy" in out and "--port" not in out
