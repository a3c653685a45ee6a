"""Long bundle commands draw a progress bar over the archive's bytes when stderr is a terminal."""

import pytest

from aiproxy.entrypoints.logdb import main


@pytest.mark.parametrize("command", [("verify",), ("import", "--dest", "{tmp}/db")])
def test_verify_and_import_draw_a_progress_bar(bundle, tmp_path, terminal_stderr, command):
    args = [part.format(tmp=tmp_path) for part in command]
    stderr = terminal_stderr()
    assert main(["bundle", args[0], str(bundle), *args[1:]]) == 0
    assert f"bundle {args[0]} [" in stderr.getvalue() and "100.0%" in stderr.getvalue()


def test_create_with_raw_logs_reaches_full_once_at_the_end(source_store, tmp_path, terminal_stderr):
    """The bar's total left the raw logs out: it showed 100% once the partitions were archived
    and was redrawn at 100% for every block of the (often larger) raw logs still to come."""
    raw = tmp_path / "raw"
    (raw / "requests").mkdir(parents=True)
    (raw / "requests" / "requests-20250905-1.jsonl").write_bytes(b"{}\n" * 400_000)  # 1.2 MB, many tar blocks
    stderr = terminal_stderr()
    assert main(["bundle", "create", "--db", str(source_store.base), "--since", "2025-09-01", "--to", "2025-09-30",
                 "--out", str(tmp_path / "out.tgz"), "--include-raw", "--raw", str(raw)]) == 0
    drawn = [frame.rsplit("]", 1)[-1].strip() for frame in stderr.getvalue().split("\r") if frame.strip()]
    assert drawn.count("100.0%") == 1 and drawn[-1] == "100.0%"


def test_ctrl_c_mid_create_ends_the_bar_before_its_line(source_store, tmp_path, terminal_stderr, monkeypatch):
    """`bundle create` (and transfer, pull) ended the bar only when they succeeded: Ctrl-C or an error
    printed its line on the bar's, `bundle create [#####   ]  39.6%logdb: interrupted; …`."""
    import aiproxy.logstore.cli.bundle_cmd as bundle_cmd

    def interrupted(*args, progress, **kwargs):
        progress(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(bundle_cmd, "create_bundle", interrupted)
    stderr = terminal_stderr()
    assert main(["bundle", "create", "--db", str(source_store.base), "--since", "2025-09-01", "--to", "2025-09-30",
                 "--out", str(tmp_path / "out.tgz")]) == 130
    assert "bundle create [" in stderr.getvalue() and "\nlogdb: interrupted" in stderr.getvalue()
