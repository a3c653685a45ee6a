"""Request log retention covers the files of every process, not only the current one's."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta

from loguru import logger

from aiproxy.config import Settings
from aiproxy.logsetup import REQUEST_LOG_DIR, configure_logging, prune_request_logs


def _aged(path, days: float):
    path.write_text("{}\n")
    stamp = time.time() - days * 86400
    os.utime(path, (stamp, stamp))
    return path


def test_start_up_prunes_request_logs_of_earlier_processes(tmp_path):
    requests = tmp_path / REQUEST_LOG_DIR
    requests.mkdir()
    old_other_pid = _aged(requests / "requests-20200101-99999.jsonl", 40)
    recent_other_pid = _aged(requests / "requests-20260101-99998.jsonl", 2)
    unrelated = _aged(requests / "notes.txt", 40)
    settings = Settings(log_dir=str(tmp_path), enable_file_logging=False, request_log_retention=timedelta(days=30))
    root_handlers, root_level = logging.root.handlers[:], logging.root.level
    try:
        configure_logging(settings, stderr=False)
    finally:
        logger.remove()
        logging.root.handlers[:], logging.root.level = root_handlers, root_level
    assert not old_other_pid.exists()
    assert recent_other_pid.exists() and unrelated.exists()


def test_a_retention_under_a_day_never_deletes_a_file_of_today(tmp_path):
    """Another worker's current file, idle longer than a short retention, is still being written:
    deleting it would lose everything it writes until the next day."""
    requests = tmp_path / REQUEST_LOG_DIR
    requests.mkdir()
    idle_worker = _aged(requests / f"requests-{datetime.now(UTC):%Y%m%d}-99997.jsonl", 0.5)
    yesterday = _aged(requests / f"requests-{datetime.now(UTC) - timedelta(days=1):%Y%m%d}-99997.jsonl", 0.5)
    prune_request_logs(requests, timedelta(hours=6))
    assert idle_worker.exists() and not yesterday.exists()


def test_a_request_log_that_cannot_be_deleted_does_not_stop_the_others_being_pruned(tmp_path, monkeypatch):
    """Was: the first file whose unlink failed (not FileNotFoundError) ended the pruning there, and
    at start-up made the whole log directory look unwritable."""
    stuck = _aged(tmp_path / "requests-20200101-1.jsonl", 40)
    others = [_aged(tmp_path / f"requests-20200102-{pid}.jsonl", 40) for pid in range(2, 6)]
    real_unlink = type(stuck).unlink

    def unlink(path, *args, **kwargs):
        if path.name == stuck.name:
            raise PermissionError(1, "Operation not permitted", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(type(stuck), "unlink", unlink)
    prune_request_logs(tmp_path, timedelta(days=30))
    assert stuck.exists() and not any(path.exists() for path in others)
