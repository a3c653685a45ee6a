"""Long bundle commands draw a progress bar over the archive's bytes when stderr is a terminal."""

import pytest

from aiproxy.entrypoints.logdb import main


@pytest.mark.parametrize("command", [("verify",), ("import", "--dest", "{tmp}/db")])
def test_verify_and_import_draw_a_progress_bar(bundle, tmp_path, terminal_stderr, command):
    args = [part.format(tmp=tmp_path) for part in command]
    stderr = terminal_stderr()
    assert main(["bundle", args[0], str(bundle), *args[1:]]) == 0
    assert f"bundle {args[0]} [" in stderr.getvalue() and "100.0%" in stderr.getvalue()
