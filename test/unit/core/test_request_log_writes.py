"""The request log file on a bad day: a partial line left by a full disk or a killed process never
swallows the next record, a failed write is one JSON line in the app log (never the record), and
a LOG_DIR that cannot be written stops start-up with a ConfigError naming it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from loguru import logger

from aiproxy.config import ConfigError, Settings
from aiproxy.logsetup import REQUEST_LOG_DIR, configure_logging, write_request_record
from aiproxy.testing.logrecords import chat_record

REPO = Path(__file__).resolve().parents[3]


def _today_file(log_dir: Path, pid: int | None = None) -> Path:
    day = datetime.now(UTC).strftime("%Y%m%d")
    return log_dir / REQUEST_LOG_DIR / f"requests-{day}-{pid or os.getpid()}.jsonl"


def _record(text: str) -> str:
    return orjson.dumps(chat_record([{"role": "user", "content": text}], "answer", ts=datetime.now(UTC))).decode()


@contextmanager
def _logging(settings: Settings, *, stderr: bool = False):
    root_handlers, root_level = logging.root.handlers[:], logging.root.level
    try:
        configure_logging(settings, stderr=stderr)
        yield
    finally:
        logger.remove()
        logging.root.handlers[:], logging.root.level = root_handlers, root_level


def test_a_fragment_left_by_an_earlier_process_with_the_same_pid_stays_its_own_line(tmp_path):
    # The gateway is PID 1 in its container: after a restart it appends to the file the killed
    # process left with half a line at its end.
    path = _today_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"schema":"aiproxy.request.v1","request_id":"killed-mid-write","ts":"2026-')
    record = _record("after the restart")
    with _logging(Settings(log_dir=str(tmp_path), enable_file_logging=False)):
        write_request_record(record.encode())
        logger.complete()
    lines = path.read_bytes().split(b"\n")
    assert lines == [b'{"schema":"aiproxy.request.v1","request_id":"killed-mid-write","ts":"2026-', record.encode(), b""]


def test_records_after_the_file_was_deleted_go_to_a_new_file_of_that_name(tmp_path):
    # They went on into the deleted file, lost until the next UTC day's file.
    path = _today_file(tmp_path)
    before, after = _record("before rm"), _record("after rm")
    with _logging(Settings(log_dir=str(tmp_path), enable_file_logging=False)):
        write_request_record(before.encode())
        logger.complete()
        path.unlink()
        write_request_record(after.encode())
        logger.complete()
    assert path.read_bytes() == after.encode() + b"\n"


def test_request_logs_are_readable_by_their_owner_only(tmp_path):
    """They hold every prompt and answer: under the usual umask (022) they were created 0644, so
    every local user could read them. The app log (no bodies, secrets redacted) keeps the umask's."""
    previous = os.umask(0o022)
    try:
        with _logging(Settings(log_dir=str(tmp_path))):
            write_request_record(_record("a prompt").encode())
            logger.complete()
    finally:
        os.umask(previous)
    assert _today_file(tmp_path).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / REQUEST_LOG_DIR).stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "app.log").stat().st_mode & 0o777 == 0o644


def test_a_file_that_ends_with_a_newline_gets_no_empty_line(tmp_path):
    path = _today_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"earlier": 1}\n')
    with _logging(Settings(log_dir=str(tmp_path), enable_file_logging=False)):
        write_request_record(b'{"later": 2}')
        logger.complete()
    assert path.read_bytes() == b'{"earlier": 1}\n{"later": 2}\n'


# A child process whose files may not grow past a limit (RLIMIT_FSIZE: writes beyond it fail with
# EFBIG, as a full disk fails them with ENOSPC): the first record is cut off mid-line, the next
# ones fail outright, then the limit goes away and one more record is written.
_FULL_DISK = textwrap.dedent("""
    import json, resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    from loguru import logger
    from aiproxy.config import Settings
    from aiproxy.logsetup import configure_logging, write_request_record
    log_dir, limit, app_log, lines = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
    records = json.loads(open(lines).read())
    configure_logging(Settings(log_dir=log_dir, enable_file_logging=app_log))
    logger.info("started")
    logger.complete()
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    for record in records[:-1]:
        write_request_record(record.encode())
    logger.complete()
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    write_request_record(records[-1].encode())
""")


def _run_full_disk(tmp_path: Path, records: list[str], limit: int, *, app_log: bool) -> subprocess.CompletedProcess:
    lines = tmp_path / "lines.json"
    lines.write_text(json.dumps(records))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "internal"), str(REPO / "pkg")])}
    return subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(tmp_path / "logs"), str(limit), "1" if app_log else "0", str(lines)],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]  # fails on any line that is not JSON


def test_a_record_cut_off_by_a_full_disk_never_swallows_the_next_one(tmp_path):
    secret = "BODY-THAT-MUST-NOT-REACH-STDERR"
    records = [_record(f"{secret} {i} " + "x" * 20000) for i in range(10)] + [_record("after the disk was freed")]
    done = _run_full_disk(tmp_path, records, limit=5000, app_log=False)
    assert done.returncode == 0, done.stderr[-2000:]
    files = list((tmp_path / "logs" / REQUEST_LOG_DIR).glob("*.jsonl"))
    assert len(files) == 1
    lines = files[0].read_bytes().split(b"\n")
    assert len(lines) == 3 and lines[2] == b""
    assert lines[0] and records[0].encode().startswith(lines[0])  # the cut-off fragment, a line of its own
    assert lines[1] == records[-1].encode()  # the record after it, intact

    assert secret not in done.stderr and "Logging error" not in done.stderr
    failures = [e for e in _json_lines(done.stderr) if "request log" in e["msg"]]
    # Reported at once, then at most once per interval: the rest is counted in a line at exit.
    # (Records written together, in one os.write, fail together: the first line may count several.)
    assert failures[0]["level"] == "ERROR"
    assert failures[0]["msg"] == "request log write failed: [Errno 27] File too large"
    assert failures[0]["file"] == str(files[0]) and failures[0]["dropped"] >= 1
    assert len(failures) == 2 and failures[0]["dropped"] + failures[1]["dropped"] == 10
    assert failures[1]["msg"] == "request log writes resumed"


def test_an_app_log_on_the_same_full_disk_neither_recurses_nor_prints_records(tmp_path):
    app_log = tmp_path / "logs" / "app.log"
    app_log.parent.mkdir(parents=True)
    app_log.write_text('{"msg": "earlier run"}\n' * 400)  # already past the limit: every app.log write fails
    secret = "BODY-THAT-MUST-NOT-REACH-STDERR"
    records = [_record(f"{secret} {i} " + "x" * 20000) for i in range(5)] + [_record("after")]
    done = _run_full_disk(tmp_path, records, limit=5000, app_log=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert secret not in done.stderr and "Logging error" not in done.stderr
    entries = _json_lines(done.stderr)
    assert [e["msg"] for e in entries if e["msg"].startswith("request log")] == [
        "request log write failed: [Errno 27] File too large", "request log writes resumed"]
    app_failures = [e for e in entries if e["msg"].startswith("app log")]
    assert app_failures[0]["msg"] == "app log write failed: [Errno 27] File too large"
    assert app_failures[0]["file"] == str(app_log)
    assert len(entries) <= 6, entries  # no line about a line about a failure
    assert app_log.read_bytes().endswith(b"\n")


def test_a_log_dir_under_a_regular_file_is_a_config_error(tmp_path):
    (tmp_path / "somefile").write_text("not a directory")
    log_dir = tmp_path / "somefile" / "logs"
    with pytest.raises(ConfigError) as caught, _logging(Settings(log_dir=str(log_dir))):
        pass
    message = str(caught.value)
    assert "\n" not in message
    assert f"LOG_DIR={log_dir}" in message and "Not a directory" in message and "writable" in message


def test_a_request_log_file_that_cannot_be_opened_is_a_config_error(tmp_path):
    _today_file(tmp_path).mkdir(parents=True)  # the file's name is taken by a directory
    with pytest.raises(ConfigError) as caught, _logging(Settings(log_dir=str(tmp_path), enable_file_logging=False)):
        pass
    message = str(caught.value)
    assert f"LOG_DIR={tmp_path}" in message and "Is a directory" in message and "\n" not in message


def test_failures_are_told_at_once_then_once_per_interval_with_the_records_dropped():
    from aiproxy.logfiles import REPORT_EVERY_S, WriteFailures

    now = [1000.0]
    told = []
    failures = WriteFailures("request log", lambda level, msg, **fields: told.append((level, msg, fields)),
                              clock=lambda: now[0])
    full = OSError(28, "No space left on device")
    failures.failed("/logs/r.jsonl", full)
    for _ in range(99):
        now[0] += 0.1
        failures.failed("/logs/r.jsonl", full)
    assert told == [("ERROR", "request log write failed: [Errno 28] No space left on device",
                     {"file": "/logs/r.jsonl", "dropped": 1})]
    now[0] = 1000.0 + REPORT_EVERY_S
    failures.failed("/logs/r.jsonl", full)
    assert told[1][2] == {"file": "/logs/r.jsonl", "dropped": 100}
    failures.succeeded()  # within the interval: told later
    failures.succeeded()
    assert len(told) == 2
    failures.stop()
    assert told[2] == ("WARNING", "request log writes resumed", {"file": "/logs/r.jsonl", "dropped": 0})
    failures.stop()
    assert len(told) == 3


def test_an_error_that_is_not_an_os_error_is_told_by_its_type_only():
    from aiproxy.logfiles import WriteFailures

    told = []
    failures = WriteFailures("request log", lambda level, msg, **fields: told.append(msg))
    failures.failed("/logs/r.jsonl", ValueError("a message quoting the record: SECRET"))
    assert told == ["request log write failed: ValueError"]


def test_app_log_rotates_by_size_and_reopens_a_file_another_worker_rotated(tmp_path, monkeypatch):
    import aiproxy.logfiles as logfiles

    monkeypatch.setattr(logfiles, "APP_LOG_ROTATION_BYTES", 2000)
    stale = tmp_path / "app.2020-01-01_00-00-00_000000.log"
    stale.write_text("{}\n")
    os.utime(stale, (0, 0))
    with _logging(Settings(log_dir=str(tmp_path), request_log_enabled=False)):
        for i in range(30):
            logger.info("line {} {}", i, "y" * 100)
        logger.complete()
        rotated = sorted(tmp_path.glob("app.*.log"))
        assert rotated and not stale.exists()  # past the retention (30 days): deleted at rotation
        assert (tmp_path / "app.log").stat().st_size <= 2000
        (tmp_path / "app.log").rename(tmp_path / "app.by-another-worker.log")
        logger.info("after the rename")
        logger.complete()
    assert b"after the rename" in (tmp_path / "app.log").read_bytes()
    lines = [json.loads(line) for path in tmp_path.glob("app*.log") for line in path.read_bytes().splitlines()]
    assert sorted(int(e["msg"].split()[1]) for e in lines if e["msg"].startswith("line")) == list(range(30))


def test_a_full_disk_at_start_up_is_no_config_error(tmp_path, monkeypatch):
    import errno

    import aiproxy.logfiles as logfiles

    path = _today_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"cut off')
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(logfiles.os, "write", full)
    with _logging(Settings(log_dir=str(tmp_path), enable_file_logging=False)):
        monkeypatch.setattr(logfiles.os, "write", real_write)  # space again before the first record
        write_request_record(b'{"first": 1}')
        logger.complete()
    assert path.read_bytes() == b'{"cut off\n{"first": 1}\n'


def test_a_log_dir_config_error_can_be_logged_on_stderr(tmp_path, capfd):
    # The entrypoint logs a ConfigError from start-up: the stderr sink is in place when it is raised.
    (tmp_path / "somefile").write_text("not a directory")
    root_handlers, root_level = logging.root.handlers[:], logging.root.level
    try:
        with pytest.raises(ConfigError) as caught:
            configure_logging(Settings(log_dir=str(tmp_path / "somefile" / "logs")))
        logger.error(str(caught.value))
    finally:
        logger.remove()
        logging.root.handlers[:], logging.root.level = root_handlers, root_level
    assert [json.loads(line)["msg"] for line in capfd.readouterr().err.splitlines()] == [str(caught.value)]


def test_a_recovery_inside_the_interval_is_told_at_the_first_write_after_it():
    """Was: the first good write inside the interval deferred the 'resumed' line, and no later
    write told it: an outage that dropped 1,000 records showed as dropped=1 until the process stopped."""
    from aiproxy.logfiles import REPORT_EVERY_S, WriteFailures

    now = [0.0]
    told = []
    failures = WriteFailures("request log", lambda level, msg, **fields: told.append((msg, fields["dropped"])),
                              clock=lambda: now[0])
    for _ in range(1000):
        failures.failed("/logs/r.jsonl", OSError(28, "No space left on device"))
        now[0] += 0.005
    failures.succeeded()  # the disk was freed 5 s into the interval
    now[0] = REPORT_EVERY_S + 1
    failures.succeeded()
    assert told == [("request log write failed: [Errno 28] No space left on device", 1),
                    ("request log writes resumed", 999)]


_ROTATING_WORKER = textwrap.dedent('''
    import sys
    from datetime import timedelta
    from pathlib import Path
    import aiproxy.logfiles as logfiles
    logfiles.APP_LOG_ROTATION_BYTES = 20_000
    worker, lines = int(sys.argv[2]), int(sys.argv[3])
    sink = logfiles.AppLogFile(Path(sys.argv[1]) / "app.log", timedelta(days=1))
    told = []
    sink.failures._report = lambda level, message, **fields: told.append(message)
    sink.open(sink.file)
    for i in range(lines):
        sink.write(f'{{"w": {worker}, "i": {i}, "pad": "{"x" * 100}"}}\\n')
    sink.stop()
    assert not told, told
''')


def test_workers_rotating_app_log_together_lose_no_line(tmp_path):
    """Was: two workers over the limit at once both renamed: the second renamed the fresh file
    (a one-line rotated file) or failed with FileNotFoundError and dropped its line."""
    workers, lines = 4, 1500
    running = [subprocess.Popen([sys.executable, "-c", _ROTATING_WORKER, str(tmp_path), str(w), str(lines)])
               for w in range(workers)]
    assert [process.wait(60) for process in running] == [0] * workers
    # Blank lines may occur (see LineFile): a worker opening the file can see another's line half
    # written and end it with a newline of its own. Lost or joined lines may not.
    seen = [json.loads(line) for path in tmp_path.glob("app*.log") for line in path.read_bytes().splitlines() if line]
    assert sorted((entry["w"], entry["i"]) for entry in seen) == [(w, i) for w in range(workers) for i in range(lines)]


def test_a_record_is_handed_off_and_written_by_another_thread(tmp_path, monkeypatch):
    """Seed §11 Performance: every request wrote 4-5 pretty-printed copies with blocking file I/O
    on the event loop. Here the caller only queues one line: while the disk write is stuck, the
    call has already returned, and the line is written by the writer thread."""
    import threading
    import time

    from aiproxy import logfiles

    release, writing, writers = threading.Event(), threading.Event(), []
    real_write = logfiles.RequestLogFile.write

    def stuck_write(self, message):
        writers.append(threading.get_ident())
        writing.set()
        release.wait(5)
        real_write(self, message)

    monkeypatch.setattr(logfiles.RequestLogFile, "write", stuck_write)
    record = _record("queued, not written here")
    path = _today_file(tmp_path)
    with _logging(Settings(log_dir=str(tmp_path), enable_file_logging=False)):
        started = time.monotonic()
        write_request_record(record.encode())
        returned_after = time.monotonic() - started
        assert writing.wait(5)
        assert path.read_bytes() == b""  # the write is still stuck, the caller went on
        release.set()
        logger.complete()
    assert returned_after < 1 and writers and threading.get_ident() not in writers
    assert path.read_bytes() == record.encode() + b"\n"  # one compact JSON line


def test_a_large_record_is_written_without_copies_and_not_kept(tmp_path):
    """A record passed loguru as its message: decoded to str, formatted into a new str, copied into
    loguru's Message and encoded again in the writer thread, ~3 copies alive at once (4 bytes a
    character when the text held an emoji), and the last one stayed in the writer thread until the
    next record. Now the serialised bytes go to the file as they are and are let go once written."""
    import time
    import tracemalloc

    size = 8 * 1024 * 1024
    line = b'{"response": "' + "\U0001f600".encode() + b"x" * size + b'"}\n'
    path = _today_file(tmp_path)
    with _logging(Settings(log_dir=str(tmp_path), enable_file_logging=False)):
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            write_request_record(line)
            deadline = time.monotonic() + 10
            while path.stat().st_size < len(line) and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)  # the writer thread is back waiting for the next record
            held, peak = (value - base for value in tracemalloc.get_traced_memory())
        finally:
            tracemalloc.stop()
        assert path.read_bytes() == line
        del line
        assert peak < size / 4, f"{peak / size:.1f} copies of the record made on its way to the file"
        assert held < size / 4, "the writer thread still holds the record after writing it"


def test_records_logged_together_reach_the_file_in_one_write_each_burst(tmp_path, monkeypatch):
    """The writer thread was woken for every record and wrote each alone, the GIL changing hands
    several times a record: ~0.15 ms of the event loop's CPU per request under load. Records
    logged while it writes or lingers are now gathered and written together, in order, whole."""
    import threading

    from aiproxy import logfiles

    writes, real_write, main = [], os.write, threading.get_ident()

    def counting_write(fd, data):
        if threading.get_ident() != main:
            writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(logfiles.os, "write", counting_write)
    records = [_record(f"burst {i}") for i in range(200)]
    with _logging(Settings(log_dir=str(tmp_path), enable_file_logging=False)):
        for record in records:
            write_request_record(record.encode())
        logger.complete()
        assert _today_file(tmp_path).read_text().splitlines() == records  # all there at complete()
    assert len(writes) < 20, f"{len(writes)} writes for {len(records)} records"
    assert all(chunk.endswith(b"\n") for chunk in writes)


def test_a_lone_record_reaches_the_file_without_waiting_for_more(tmp_path):
    import time

    record = _record("alone")
    path = _today_file(tmp_path)
    with _logging(Settings(log_dir=str(tmp_path), enable_file_logging=False)):
        write_request_record(record.encode())
        deadline = time.monotonic() + 2
        while path.read_bytes() != record.encode() + b"\n" and time.monotonic() < deadline:
            time.sleep(0.005)
        assert path.read_bytes() == record.encode() + b"\n"


def test_a_full_disk_cutting_a_gathered_batch_reports_only_the_records_not_written(tmp_path, monkeypatch):
    """Records gathered into one os.write that a full disk cuts in its middle: the records before
    the cut are in the file, yet every record of the batch was reported dropped."""
    import errno
    from datetime import timedelta
    from types import SimpleNamespace

    from aiproxy import logfiles

    reports = []
    monkeypatch.setattr(logfiles, "_report_in_app_log", lambda level, message, **fields: reports.append(fields))
    sink = logfiles.RequestLogFile(tmp_path / REQUEST_LOG_DIR, timedelta(days=1))
    sink.open(sink.file_of(datetime.now(UTC)))
    records = [(_record(f"batch {i}") + "\n").encode() for i in range(10)]
    room = len(records[0]) + len(records[1]) + 100  # two whole records and part of the third fit
    real_write = os.write

    def full_disk(fd, data):
        nonlocal room
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(data[:room]))
        room -= written
        return written

    monkeypatch.setattr(logfiles.os, "write", full_disk)
    sink.gather()
    for line in records:
        sink.write(SimpleNamespace(record={"extra": {"_line": line}, "time": datetime.now(UTC)}))
    sink.write_gathered()
    sink.stop()
    assert _today_file(tmp_path).read_bytes().startswith(records[0] + records[1])
    assert sum(report["dropped"] for report in reports) == 8
