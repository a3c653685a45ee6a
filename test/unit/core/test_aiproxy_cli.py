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


def test_a_mistyped_command_is_named_as_one(capsys):
    """Was: `aiproxy healthchek` ran as `serve healthchek`: "unrecognized arguments: healthchek", with no
    word of the commands there are."""
    with pytest.raises(SystemExit) as info:
        parse(["healthchek"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'healthchek'" in err and "healthcheck" in err.split("choose from", 1)[1]


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_top_level_help_and_version_stay(flag, capsys):
    with pytest.raises(SystemExit) as info:
        parse([flag])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "aiproxy" in out and "--port" not in out


@pytest.mark.parametrize("entry", [["-m", "aiproxy.entrypoints.aiproxy"], ["cmd/aiproxy"]])
def test_every_way_to_run_it_runs_it(entry):
    """`python -m aiproxy.entrypoints.aiproxy serve` did nothing and exited 0 (no `__main__` guard),
    as `python -m aiproxy.entrypoints.logdb`, which docs/logstore.md documents, once did."""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, *entry, "--version"], capture_output=True, text=True, timeout=30,
                          cwd=Path(__file__).resolve().parents[3])
    assert (done.returncode, done.stdout.split()[0]) == (0, "aiproxy"), done


def test_a_generated_key_takes_the_place_of_the_empty_one_in_dotenv(tmp_path, monkeypatch):
    """Was: appended at the end, away from the template's comment about it, and `export API_KEYS=`
    lines were left behind."""
    from aiproxy.config import load_settings
    from aiproxy.entrypoints.aiproxy import ensure_client_key
    from aiproxy.testing.gateway import SETTINGS_FILE

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SETTINGS_FILE", str(SETTINGS_FILE))
    monkeypatch.setenv("API_KEYS", "")
    (tmp_path / ".env").write_text("# Client API keys\nAPI_KEYS=\n# Admin keys\n# more settings\nexport API_KEYS=\n")
    settings = ensure_client_key(load_settings())
    lines = (tmp_path / ".env").read_text().splitlines()
    assert lines == ["# Client API keys", f"API_KEYS={settings.api_keys[0]}", "# Admin keys", "# more settings"]


def test_an_empty_api_keys_in_the_environment_uses_the_key_kept_in_dotenv(tmp_path, monkeypatch, capsys):
    """Was: the environment's empty API_KEYS wins over .env, so every start generated a new key and
    rewrote .env, and the clients' key stopped working at each restart."""
    from aiproxy.config import load_settings
    from aiproxy.entrypoints.aiproxy import ensure_client_key
    from aiproxy.testing.gateway import SETTINGS_FILE

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SETTINGS_FILE", str(SETTINGS_FILE))
    monkeypatch.setenv("API_KEYS", "")
    dotenv = "# Client API keys\nAPI_KEYS='sk-aiproxy-kept'\n"
    (tmp_path / ".env").write_text(dotenv)
    assert ensure_client_key(load_settings()).api_keys == ("sk-aiproxy-kept",)
    assert (tmp_path / ".env").read_text() == dotenv
    assert "using the key kept in" in capsys.readouterr().err


def test_an_unexpected_error_in_a_cell_is_a_json_log_line_and_exit_1(tmp_path, monkeypatch, capsys):
    """Was: Python's plain-text traceback on stderr, which the README promises is JSON lines, and
    nothing in app.log."""
    import logging
    import signal

    import orjson
    from loguru import logger

    import aiproxy.cell
    from aiproxy.config import Settings
    from aiproxy.entrypoints.aiproxy import _run_cell
    from aiproxy.stopsignals import CELL_SIGNALS

    async def failing(settings, **_):
        raise RuntimeError("a defect")

    monkeypatch.setattr(aiproxy.cell, "serve_cell", failing)
    root_handlers, root_level = logging.root.handlers[:], logging.root.level
    # _run_cell ignores the stop signals as it ends: left so, every gateway the later tests start would too
    handlers = {sig: signal.getsignal(sig) for sig in CELL_SIGNALS}
    try:
        assert _run_cell(Settings(log_dir=str(tmp_path))) == 1
    finally:
        logger.remove()
        logging.root.handlers[:], logging.root.level = root_handlers, root_level
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    for log in (capsys.readouterr().err, (tmp_path / "app.log").read_text()):
        [record] = [orjson.loads(line) for line in log.splitlines() if line.strip()]
        assert record["level"] == "CRITICAL" and record["msg"] == "the cell stopped on an unexpected error"
        assert "RuntimeError: a defect" in str(record)
