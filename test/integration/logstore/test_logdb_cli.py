"""The `logdb` CLI as a user runs it: `python cmd/logdb …` in a subprocess, local and --remote."""

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from aiproxy.config import Settings
from aiproxy.entrypoints.logdb import build_parser
from aiproxy.rpc.log_service import add_log_service
from aiproxy.testing.logrecords import chat_record, conversation, index_as_earlier_versions_did, write_jsonl

REPO = Path(__file__).resolve().parents[3]
T0 = datetime(2025, 9, 10, 22, 0, tzinfo=UTC)


@pytest.fixture
def workdir(tmp_path):
    turns = [("why does the build fail", "missing dependency"), ("which one?", "libfoo"), ("thanks", "bye")]
    write_jsonl(tmp_path / "logs" / "requests" / "requests-20250910-1.jsonl", conversation(turns, start=T0, gap_s=3600))
    return tmp_path


def logdb(workdir, *args, **env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOGDB_")}
    environ.update({"LOGDB_DIR": str(workdir / "logs" / "db"), "LOGDB_SERVER_ID": "srv-cli", **env})
    return subprocess.run(
        [sys.executable, str(REPO / "cmd" / "logdb"), *args], cwd=workdir, env=environ, capture_output=True, text=True, timeout=120
    )


def test_ingest_search_show_dialogs_stats(workdir):
    done = logdb(workdir, "ingest", "--from", "logs")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ingest_elapsed_s=")
    summary = json.loads(done.stdout.splitlines()[-1])
    assert (summary["files_scanned"], summary["rows_inserted"], summary["rows_skipped"]) == (1, 3, 0)

    found = json.loads(logdb(workdir, "search", "libfoo", "--json").stdout)
    assert len(found["results"]) == 2 and found["results"][0]["snippet"]
    request_id = found["results"][0]["request_id"]
    shown = json.loads(logdb(workdir, "show", request_id, "--json").stdout)
    assert shown["summary"]["request_id"] == request_id and shown["request"]["messages"]

    listed = json.loads(logdb(workdir, "dialogs", "list", "--json").stdout)
    assert [d["requests"] for d in listed["dialogs"]] == [3]
    turns = json.loads(logdb(workdir, "show", "--dialog", listed["dialogs"][0]["dialog_id"], "--json").stdout)["turns"]
    assert len(turns) == 3
    text = logdb(workdir, "show", "--dialog", listed["dialogs"][0]["dialog_id"]).stdout.splitlines()
    assert text[0].startswith(listed["dialogs"][0]["dialog_id"]) and "3 turns" in text[0]
    assert text[4:7] == [f"{turns[1]['summary']['ts']}  {turns[1]['summary']['request_id']}  openai/gpt-4o  200",
                         "    user: which one?", "    assistant: libfoo"]
    transcript = logdb(workdir, "show", request_id).stdout.splitlines()
    assert transcript[0].startswith(shown["summary"]["ts"]) and transcript[1:5] == [
        "    user: why does the build fail", "    assistant: missing dependency", "    user: which one?",
        "    assistant: libfoo"]

    assigned = logdb(workdir, "dialogs", "assign", "--window", "10m")
    assert assigned.returncode == 0 and assigned.stdout.count("updated=0") == 2  # threads cross midnight anyway
    stats = json.loads(logdb(workdir, "stats", "--json").stdout)
    assert (stats["requests"], stats["dialogs"], stats["partitions"], stats["server_id"]) == (3, 1, 2, "srv-cli")

    drop = logdb(workdir, "fts", "drop", "--since", "2025-09-10", "--to", "2025-09-11")
    assert drop.stdout.count("fts dropped") == 2
    build = logdb(workdir, "fts", "build")
    assert "indexed=" in build.stdout
    assert logdb(workdir, "init", "--date", "2025-09-12").stdout.strip().endswith("ok")
    merged = logdb(workdir, "merge", "--from", "logs/db", "--to", str(workdir / "merged.sqlite3"))
    assert merged.returncode == 0 and merged.stdout.strip() == "sources=3 total_requests=3 integrity=ok"


def test_search_and_dialogs_match_a_model_in_any_case(workdir):
    """Was: `--model GPT-4o` matched nothing (case-sensitive) while the gateway routes any case of an alias."""
    assert logdb(workdir, "ingest", "--from", "logs").returncode == 0
    found = json.loads(logdb(workdir, "search", "--model", "GPT-4o", "--json").stdout)
    assert len(found["results"]) == 3
    assert len(json.loads(logdb(workdir, "search", "libfoo", "--model", "OpenAI/GPT-4O", "--json").stdout)["results"]) == 2
    assert len(json.loads(logdb(workdir, "dialogs", "list", "--model", "GPT-4O", "--json").stdout)["dialogs"]) == 1


def test_python_dash_m_runs_the_cli(workdir):
    """The seed ran `python -m ai_proxy.logdb.cli …`; here `python -m aiproxy.entrypoints.logdb …`."""
    environ = {**os.environ, "LOGDB_DIR": str(workdir / "logs" / "db")}
    done = subprocess.run([sys.executable, "-m", "aiproxy.entrypoints.logdb", "init", "--date", "2025-09-12"],
                          cwd=workdir, env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "ok", done


def test_explicit_commands_run_even_when_logdb_is_disabled(workdir):
    done = logdb(workdir, "ingest", "--from", "logs", LOGDB_ENABLED="false", LOGDB_FTS_ENABLED="false")
    assert done.returncode == 0 and json.loads(done.stdout.splitlines()[-1])["rows_inserted"] == 3


def test_exit_codes(workdir):
    logdb(workdir, "ingest", "--from", "logs")
    bad = logdb(workdir, "search", "NEAR(")
    assert bad.returncode == 2 and "invalid search query" in bad.stderr and "Traceback" not in bad.stderr
    missing = logdb(workdir, "show", "req-nope")
    assert missing.returncode == 1 and "not in the log store" in missing.stderr
    date = logdb(workdir, "ingest", "--since", "10/09/2025")
    assert date.returncode == 2 and "YYYY-MM-DD" in date.stderr
    assert logdb(workdir).returncode == 2


@pytest.mark.parametrize("args", [
    ("bundle", "create", "--since", "2025-09-01", "--to", "2025-09-30", "--db", "stores/nope", "--out", "b.tgz"),
    ("ingest", "--from", "/nonexistent"),
    ("merge", "--from", "/nope", "--to", "x.sqlite3"),
    ("search", "--out", "typo", "paris"),
    ("stats", "--db", "typo"),
    ("dialogs", "list", "--out", "typo"),
    ("fts", "build", "--out", "typo"),
])
def test_a_missing_path_is_a_usage_error_not_an_empty_success(workdir, args):
    done = logdb(workdir, *args)
    assert done.returncode == 2 and "no such" in done.stderr and "Traceback" not in done.stderr, done
    assert sorted(p.name for p in workdir.iterdir()) == ["logs"]  # no empty bundle, store or merge file


@pytest.mark.parametrize("args", [
    ("search", "--db", "a-file", "paris"),  # was "no matches", exit 0: an empty store in a file
    ("stats", "--db", "a-file"),
    ("ingest", "--from", "logs", "--out", "a-file"),  # was a traceback (FileExistsError)
    ("bundle", "import", "b.tgz", "--dest", "a-file"),
])
def test_a_file_given_as_the_store_directory_is_a_usage_error(workdir, args):
    (workdir / "a-file").write_text("notes\n")
    (workdir / "b.tgz").write_bytes(b"")
    done = logdb(workdir, *args)
    assert done.returncode == 2 and "a-file: not a log store directory" in done.stderr, done
    assert "Traceback" not in done.stderr and (workdir / "a-file").read_text() == "notes\n"


def test_a_store_directory_that_cannot_be_created_is_one_line(workdir):
    (workdir / "a-file").write_text("")
    done = logdb(workdir, "ingest", "--from", "logs", "--out", "a-file/db")
    assert done.returncode == 1 and done.stderr.startswith("logdb: ") and "Not a directory" in done.stderr, done
    assert "Traceback" not in done.stderr


def test_a_search_over_a_dropped_index_says_so(workdir):
    logdb(workdir, "ingest", "--from", "logs")
    assert logdb(workdir, "fts", "drop").returncode == 0
    done = logdb(workdir, "search", "libfoo")
    assert done.returncode == 1 and "have no full-text index" in done.stderr and "logdb fts build" in done.stderr
    logdb(workdir, "fts", "build")
    assert logdb(workdir, "search", "libfoo").returncode == 0
    assert logdb(workdir, "search", "zeppelin").returncode == 0  # indexed, no matches: a plain answer


def test_init_as_the_seed_readme_starts_leaves_searches_quiet(workdir):
    """The seed README begins with `init` (today's partition): that empty partition is indexed like
    every other, so a search does not report it as unindexed or exit 1 for it."""
    assert logdb(workdir, "init").returncode == 0
    logdb(workdir, "ingest", "--from", "logs")
    done = logdb(workdir, "search", "zeppelin")
    assert done.returncode == 0 and done.stderr == "", done
    assert logdb(workdir, "search", "libfoo").stderr == ""


def test_fts_drop_reports_a_partition_it_cannot_change_and_drops_the_others(workdir):
    """seed-spec §8: `<path> fts dropped` or `<path> drop_error=<e>` per partition, exit 1 on any error."""
    logdb(workdir, "ingest", "--from", "logs")
    broken = workdir / "logs" / "db" / "2025" / "09" / "ai_proxy_20250901.sqlite3"
    broken.write_bytes(b"not a database, a file copied over a partition\n" * 100)
    done = logdb(workdir, "fts", "drop")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done
    lines = done.stdout.splitlines()
    assert lines[0] == f"{broken} drop_error=file is not a database"
    assert [line.split(" ", 1)[1] for line in lines[1:]] == ["fts dropped", "fts dropped"]
    parts = json.loads(logdb(workdir, "fts", "drop", "--json").stdout)["partitions"]
    assert [(p["dropped"], p.get("error")) for p in parts] == [(False, "file is not a database"), (False, None), (False, None)]


@pytest.mark.parametrize("json_flag", [(), ("--json",)])
def test_a_reader_that_goes_away_ends_logdb_quietly(workdir, json_flag):
    logdb(workdir, "ingest", "--from", "logs")
    environ = {**os.environ, "LOGDB_DIR": str(workdir / "logs" / "db")}
    reader_gone = subprocess.Popen([sys.executable, str(REPO / "cmd" / "logdb"), "search", "libfoo", *json_flag],
                                   cwd=workdir, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader_gone.stdout.close()  # `| head` that has already exited
    _, err = reader_gone.communicate(timeout=60)
    assert reader_gone.returncode == 141 and err == b""  # 128 + SIGPIPE, no traceback


@pytest.mark.parametrize("command", [("ingest",), ("bundle", "verify", "x.tgz"), ("fts", "build")])
def test_an_unknown_option_shows_the_usage_of_its_command(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*command, "--bogus"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "unrecognized arguments: --bogus" in err
    assert err.startswith(f"usage: logdb {' '.join(c for c in command if c != 'x.tgz')} ")


@pytest.mark.parametrize("args", [("search", "--limit", "-5"), ("search", "--limit", "0"),
                                  ("dialogs", "list", "--limit", "501"), ("search", "--limit", "many")])
def test_a_page_size_out_of_range_is_a_usage_error(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(args)
    assert exit_.value.code == 2 and "is not a number from 1 to 500" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (("search", "--status", "99999999999"), "out of range: use an HTTP status code from 0 to 2147483647"),
    (("search", "--status", "-1"), "out of range"),
    (("search", "--status", "five"), "is not an HTTP status code"),
    (("dialogs", "assign", "--window", "99999999999999999999h"), "longer than the longest window, 3650 days"),
])
def test_a_number_out_of_range_is_a_usage_error_not_a_traceback(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_minus_word_in_a_search_is_query_text(capsys):
    args = build_parser().parse_args(["search", "alpha", "--model", "m", "-banana", "beta", "--json", "-5"])
    assert (args.query, args.model, args.json) == (["alpha", "-banana", "beta", "-5"], "m", True)
    assert build_parser().parse_args(["search", "--dialog", "dlg-1", "alpha", "-x"]).query == ["alpha", "-x"]
    for unknown in (["search", "alpha", "--bogus"], ["search", "alpha", "-banana", "--status=5x"]):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(unknown)
        assert exit_.value.code == 2


def test_search_excludes_a_minus_word(workdir):
    logdb(workdir, "ingest", "--from", "logs")
    assert len(json.loads(logdb(workdir, "search", "missing", "--json").stdout)["results"]) == 3
    for args in (("missing", "-dependency", "--json"), ("missing", "--json", "-dependency")):
        done = logdb(workdir, "search", *args)
        assert done.returncode == 0 and json.loads(done.stdout)["results"] == [], done.stderr



@pytest.mark.parametrize("args", [
    ("search", "caf\udce9"),  # `café` typed in a Latin-1 terminal: its é is byte E9, not UTF-8
    ("search", "alpha", "--json", "-caf\udce9"), ("search", "x", "--model", "gpt\udcff"),
    ("search", "x", "--provider", "\udcff"), ("search", "x", "--key-hash", "\udcff"), ("search", "--dialog", "\udcff"),
    ("search", "x", "--cursor", "\udcff"), ("dialogs", "list", "--model", "\udcff"), ("show", "req-\udcff"),
])
def test_an_argument_that_is_not_utf8_is_a_usage_error_not_a_traceback(workdir, args):
    """Python reads such bytes as lone surrogates, which no request can carry: `logdb search caf$'\\xe9'` was
    a UnicodeEncodeError traceback, exit 1."""
    logdb(workdir, "ingest", "--from", "logs")
    done = logdb(workdir, *args)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "is not UTF-8" in done.stderr.splitlines()[-1], done.stderr

def _commands(parser, prefix=()):
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for name, sub in action.choices.items():
            yield (*prefix, name), sub
            yield from _commands(sub, (*prefix, name))


def test_every_command_has_help():
    commands = dict(_commands(build_parser()))
    assert {("init",), ("ingest",), ("fts", "build"), ("fts", "rebuild"), ("fts", "drop"), ("dialogs", "assign"),
            ("dialogs", "clear"), ("search",), ("show",), ("stats",), ("merge",)} <= set(commands)
    # All at once: one after another, 20 interpreter starts took 15 s on a busy 2-core machine.
    helps = {path: subprocess.Popen([sys.executable, str(REPO / "cmd" / "logdb"), *path, "--help"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for path in commands}
    for path, process in helps.items():
        stdout, _ = process.communicate(timeout=120)
        assert process.returncode == 0 and stdout.startswith("usage: logdb"), path


def test_remote_asks_a_log_service(workdir):
    settings = Settings(log_dir=str(workdir / "logs"), logdb={"dir": str(workdir / "server-db"), "server_id": "srv-remote"})

    async def scenario():
        server = grpc.aio.server()
        add_log_service(server, settings)
        remote = ("--remote", f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
        await server.start()
        try:
            ingested = await asyncio.to_thread(logdb, workdir, "ingest", *remote)
            assert ingested.returncode == 0 and json.loads(ingested.stdout)["rows_inserted"] == 3
            found = json.loads((await asyncio.to_thread(logdb, workdir, "search", "libfoo", "--json", *remote)).stdout)
            assert len(found["results"]) == 2
            stats = await asyncio.to_thread(logdb, workdir, "stats", "--json", *remote, AIPROXY_API_KEY="k")
            assert json.loads(stats.stdout)["server_id"] == "srv-remote"
            bad = await asyncio.to_thread(logdb, workdir, "search", "a AND", *remote)
            assert bad.returncode == 2 and "INVALID_ARGUMENT" in bad.stderr
            assert not (workdir / "logs" / "db").exists()  # nothing was read or written locally
        finally:
            await server.stop(None)

    asyncio.run(scenario())


def test_remote_over_tls(workdir):
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file = workdir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    settings = Settings(log_dir=str(workdir / "logs"), logdb={"dir": str(workdir / "server-db"), "server_id": "srv-tls"})

    async def scenario():
        server = grpc.aio.server()
        add_log_service(server, settings)
        credentials = grpc.ssl_server_credentials([(cert.private_key_pem.bytes(), cert.cert_chain_pems[0].bytes())])
        remote = ("--remote", f"127.0.0.1:{server.add_secure_port('127.0.0.1:0', credentials)}")
        await server.start()
        try:
            done = await asyncio.to_thread(logdb, workdir, "stats", "--json", *remote, "--ca-file", str(ca_file))
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["server_id"] == "srv-tls"
            plain = await asyncio.to_thread(logdb, workdir, "stats", *remote)
            assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr
            # gRPC's own words ('Socket closed') do not say that the listener speaks TLS
            assert "grpcs://, --tls or --ca-file" in plain.stderr
        finally:
            await server.stop(None)

    asyncio.run(scenario())


def test_remote_reads_records_and_dialogs_larger_than_grpc_defaults(tmp_path):
    """A 4.5 MB turn (over gRPC's default 4 MiB receive limit) and a 9 MB dialog (pages of up to
    3 MiB past their first turn): `show` and `show --dialog` read them from a gateway whole."""
    turns = [(f"turn {n}\n" + chr(ord("a") + n) * 1_500_000, f"ok {n}") for n in range(3)]
    records = conversation(turns, start=T0, gap_s=60)
    write_jsonl(tmp_path / "logs" / "requests" / "requests-20250910-1.jsonl", records)
    settings = Settings(log_dir=str(tmp_path / "logs"), logdb={"dir": str(tmp_path / "server-db"), "server_id": "srv-big"})
    limit = settings.grpc_message_bytes

    async def scenario():
        server = grpc.aio.server(options=[("grpc.max_send_message_length", limit)])  # as rpc/server.py
        add_log_service(server, settings)
        remote = ("--remote", f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
        await server.start()
        try:
            assert (await asyncio.to_thread(logdb, tmp_path, "ingest", *remote)).returncode == 0
            last = records[-1]["request_id"]
            shown = await asyncio.to_thread(logdb, tmp_path, "show", last, "--json", *remote)
            assert shown.returncode == 0, shown.stderr[-500:]
            assert len(json.loads(shown.stdout)["request"]["messages"]) == 5
            dialog_id = json.loads(shown.stdout)["summary"]["dialog_id"]
            whole = await asyncio.to_thread(logdb, tmp_path, "show", "--dialog", dialog_id, "--json", *remote)
            assert whole.returncode == 0, whole.stderr[-500:]
            dialog = json.loads(whole.stdout)
            assert [t["summary"]["request_id"] for t in dialog["turns"]] == [r["request_id"] for r in records]
            assert dialog["next_cursor"] == "" and dialog["summary"]["requests"] == 3
            text = await asyncio.to_thread(logdb, tmp_path, "show", "--dialog", dialog_id, *remote)
            assert text.returncode == 0 and "3 turns" in text.stdout.splitlines()[0]
        finally:
            await server.stop(None)

    asyncio.run(scenario())


# POSIX TZ strings (no tz database needed): UTC+14 and UTC-12. At any hour one of them is on
# another date than UTC.
AHEAD, BEHIND = "AAA-14", "BBB+12"


def test_dates_and_timestamps_are_utc_whatever_the_host_timezone(workdir):
    """Seed §11.16: `init` took the local date while partitions use UTC dates, and first_seen_ts /
    last_scan_ts came from `datetime.utcnow().timestamp()`, off by the host's UTC offset."""
    started, first_day = time.time(), datetime.now(UTC).date()
    for tz in (AHEAD, BEHIND):
        assert logdb(workdir, "init", TZ=tz).returncode == 0
    assert logdb(workdir, "ingest", "--from", "logs", TZ=AHEAD).returncode == 0
    ended, last_day = time.time(), datetime.now(UTC).date()
    db = workdir / "logs" / "db"
    days = {p.name for p in db.rglob("ai_proxy_*.sqlite3")}
    # The records (22:00, 23:00 and 00:00 UTC) span two UTC days; init added today's (UTC) file only.
    assert {"ai_proxy_20250910.sqlite3", "ai_proxy_20250911.sqlite3"} <= days
    inits = days - {"ai_proxy_20250910.sqlite3", "ai_proxy_20250911.sqlite3"}
    assert inits and inits <= {f"ai_proxy_{d:%Y%m%d}.sqlite3" for d in (first_day, last_day)}, days
    with sqlite3.connect(db / "control.sqlite3") as conn:
        stamps = [r[0] for r in conn.execute("SELECT first_seen_ts FROM servers")]
        stamps += [r[0] for r in conn.execute("SELECT last_scan_ts FROM ingest_sources")]
    assert len(stamps) >= 2 and all(int(started) - 1 <= ts <= ended + 1 for ts in stamps), (started, stamps)


@pytest.mark.parametrize("command", [("search", "build"), ("stats",), ("dialogs", "list"), ("fts", "build"),
                                     ("dialogs", "assign"), ("dialogs", "clear"), ("ingest", "--from", "logs")])
def test_an_inverted_range_is_a_usage_error(workdir, command):
    """--since after --to answered "no matches" (exit 0), as if the store held nothing in range."""
    logdb(workdir, "ingest", "--from", "logs")
    done = logdb(workdir, *command, "--since", "2025-09-11", "--to", "2025-09-10")
    assert done.returncode == 2 and done.stderr == "logdb: --since 2025-09-11 is after --to 2025-09-10: swap them\n"
    assert done.stdout == ""


@pytest.mark.parametrize(("args", "flag"), [(("ingest", "--from", "mylogs"), "--from"),
                                            (("search", "x", "--db", "d"), "--out/--db"), (("stats", "--out", "d"), "--out/--db")])
def test_local_paths_with_remote_are_a_usage_error_not_ignored(workdir, args, flag):
    """`logdb ingest --from mylogs --remote gw:50051` ingested the server's own LOG_DIR and said nothing
    of mylogs; a --db beside --remote was dropped the same way."""
    done = logdb(workdir, *args, "--remote", "127.0.0.1:1")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"logdb: {flag} names a local path, which --remote does not use")


def test_control_characters_from_the_logs_are_shown_escaped_not_sent_to_the_terminal(tmp_path):
    """A client's prompt (or a model name) holding ESC sequences reached the operator's terminal raw
    through `show`, `search` and `dialogs list`: it could recolour, clear, retitle the terminal or
    fake lines with a carriage return."""
    evil = "see \x1b[2J\x1b]0;pwned\x07 here\rfake line \x9b31m"
    record = chat_record([{"role": "user", "content": evil}], "fine", ts=T0, request_id="esc-1")
    record["model_original"] = "m\x1b[5m"
    write_jsonl(tmp_path / "logs" / "requests" / "requests-20250910-1.jsonl", [record])
    logdb(tmp_path, "ingest", "--from", "logs")
    for args in (("show", "esc-1"), ("search", "see"), ("show", "--dialog", record_dialog(tmp_path)), ("dialogs", "list")):
        done = logdb(tmp_path, *args)
        assert done.returncode == 0, done.stderr
        assert not any(ch in done.stdout for ch in "\x1b\x07\r\x9b"), (args, done.stdout)
    assert "see \\x1b[2J\\x1b]0;pwned\\x07 here" in logdb(tmp_path, "show", "esc-1").stdout
    assert "\\rfake line \\x9b31m" in logdb(tmp_path, "search", "see").stdout
    as_json = logdb(tmp_path, "show", "esc-1", "--json").stdout
    assert "\x9b" not in as_json and json.loads(as_json)["request"]["messages"][0]["content"] == evil


def record_dialog(workdir) -> str:
    return json.loads(logdb(workdir, "dialogs", "list", "--json").stdout)["dialogs"][0]["dialog_id"]


def test_transcripts_keep_repeated_messages(tmp_path):
    """`show` printed the index's fragments, one per distinct text: a user who said "continue" twice
    lost the second one, and the dialog's third turn showed the previous answer as what was asked."""
    turns = [("tell me a story", "Once upon a time"), ("continue", "there was a fox"), ("continue", "who ran away")]
    records = conversation(turns, start=T0, gap_s=60)
    write_jsonl(tmp_path / "logs" / "requests" / "requests-20250910-1.jsonl", records)
    logdb(tmp_path, "ingest", "--from", "logs")
    dialog = logdb(tmp_path, "show", "--dialog", record_dialog(tmp_path)).stdout.splitlines()
    assert dialog[7:10] == [f"{records[2]['ts']}  {records[2]['request_id']}  openai/gpt-4o  200",
                            "    user: continue", "    assistant: who ran away"]
    shown = logdb(tmp_path, "show", records[2]["request_id"]).stdout.splitlines()
    assert [line.split(":")[0].strip() for line in shown[1:]] == ["user", "assistant", "user", "assistant", "user",
                                                                 "assistant"]
    assert shown[5:] == ["    user: continue", "    assistant: who ran away"]


def test_dialogs_list_takes_the_filters_rest_and_grpc_take(tmp_path):
    """Was: `dialogs list` had no --provider or --status, though ListDialogs (REST, gRPC) filters by them."""
    write_jsonl(tmp_path / "logs" / "requests" / "requests-20250910-1.jsonl",
                conversation([("hi", "hello")], start=T0, key="key-a", provider="openrouter")
                + conversation([("bonjour", "salut")], start=T0, key="key-b", provider="gemini", status_code=429))
    assert logdb(tmp_path, "ingest", "--from", "logs").returncode == 0

    def listed(*filters):
        done = logdb(tmp_path, "dialogs", "list", "--json", *filters)
        assert done.returncode == 0, done.stderr
        return [d["requests"] for d in json.loads(done.stdout)["dialogs"]]

    assert listed() == [1, 1]
    assert listed("--provider", "gemini") == [1] and listed("--provider", "mock") == []
    assert listed("--status", "429") == [1] and listed("--status", "500") == []


def test_logdb_reads_the_gateways_settings_or_says_why_it_cannot(workdir):
    """Was: when the gateway's settings did not load, logdb quietly read LOGDB_DIR from the environment
    alone: a settings file's `logdb_dir`, or `.env`'s LOGDB_DIR when SETTINGS_FILE named no file, was
    skipped, and an `ingest` wrote a new store where the gateway never looks. Now the settings are read
    as the gateway reads them (settings file < .env < environment), and when they cannot be, logdb
    stops with the gateway's line (exit 2)."""
    settings = workdir / "settings.toml"
    settings.write_text((REPO / "configs" / "settings.toml").read_text()
                        .replace('logdb_dir = "logs/db"', f'logdb_dir = "{workdir / "custom-db"}"'))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOGDB_")}
    run = lambda *args, **env: subprocess.run(  # noqa: E731
        [sys.executable, str(REPO / "cmd" / "logdb"), *args], cwd=workdir, env={**environ, **env},
        capture_output=True, text=True, timeout=60)
    done = run("ingest", "--from", "logs", SETTINGS_FILE=str(settings))
    assert done.returncode == 0, done.stderr
    assert (workdir / "custom-db" / "control.sqlite3").exists()

    broken = run("ingest", "--from", "logs", SETTINGS_FILE=str(settings), LOG_LEVEL="verbose")
    assert broken.returncode == 2 and "LOG_LEVEL" in broken.stderr, broken.stderr
    (workdir / ".env").write_text(f"LOGDB_DIR={workdir / 'env-db'}\n")
    missing = run("stats", SETTINGS_FILE=str(workdir / "no-such.toml"))
    assert missing.returncode == 2 and "no-such.toml" in missing.stderr, missing.stderr
    assert not (workdir / "logs" / "db").exists()


def test_ctrl_c_mid_ingest_is_one_line_exit_130_and_a_rerun_completes(workdir, monkeypatch, capsys):
    """Ctrl-C during `logdb ingest` (minutes on a large log) ended in a KeyboardInterrupt traceback
    through SQLite's executemany; the bundle commands alone said `logdb: interrupted` and exited 130."""
    import aiproxy.logstore.cli.ingest_cmd as ingest_cmd
    from aiproxy.entrypoints.logdb import main

    real_ingest = ingest_cmd.ingest

    def interrupted(store, source, **kwargs):
        real_ingest(store, source, since=T0.date(), to=T0.date(), files=kwargs["files"])  # the first day only
        raise KeyboardInterrupt

    monkeypatch.setenv("LOGDB_SERVER_ID", "srv-cli")
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(ingest_cmd, "ingest", interrupted)
    db = str(workdir / "logs" / "db")
    assert main(["ingest", "--from", "logs", "--db", db]) == 130
    assert capsys.readouterr().err == "logdb: interrupted; run the same command again to finish\n"
    monkeypatch.undo()
    done = logdb(workdir, "ingest", "--from", "logs")
    assert done.returncode == 0 and json.loads(done.stdout.splitlines()[-1])["rows_inserted"] == 1, done.stdout


@pytest.mark.parametrize(("question", "word"), [
    ("我们今天讨论数据库的性能问题", "数据库"),
    ("เราคุยเรื่องฐานข้อมูล", "ฐานข้อมูล"),  # indexed whole by every earlier version
], ids=["chinese", "thai"])
def test_unspaced_text_an_earlier_version_indexed_is_named_and_found_after_fts_rebuild(tmp_path, question, word):
    question += " during the timeout"
    write_jsonl(tmp_path / "logs" / "requests" / "r.jsonl", [chat_record([{"role": "user", "content": question}], "ok", ts=T0)])
    assert logdb(tmp_path, "ingest", "--from", "logs").returncode == 0
    index_as_earlier_versions_did(tmp_path / "logs" / "db")

    old = logdb(tmp_path, "search", word, "--json")
    assert old.returncode == 1 and json.loads(old.stdout)["results"] == []
    assert "1 of 1 partitions in range hold Chinese, Japanese, Korean, Thai, Lao, Khmer or Burmese text indexed by an earlier version" in old.stderr
    assert "run `logdb fts rebuild`" in old.stderr
    latin = logdb(tmp_path, "search", "timeout", "--json")  # the old index still answers the rest
    assert latin.returncode == 0 and len(json.loads(latin.stdout)["results"]) == 1 and not latin.stderr

    assert "indexed=2" in logdb(tmp_path, "fts", "rebuild").stdout
    new = logdb(tmp_path, "search", word, "--json")
    assert new.returncode == 0 and not new.stderr
    assert [r["snippet"] for r in json.loads(new.stdout)["results"]] == [question.replace(word, f"[{word}]")]


UNSPACED_QUESTIONS = [
    "วันนี้เราคุยเรื่องฐานข้อมูลและประสิทธิภาพ",  # Thai: we talk about databases and performance today
    "ພວກເຮົາເວົ້າກ່ຽວກັບຖານຂໍ້ມູນ",  # Lao: we talk about the database
    "យើងនិយាយអំពីមូលដ្ឋានទិន្នន័យ",  # Khmer: we talk about the database
    "ကျွန်ုပ်တို့ဒေတာဘေ့စ်အကြောင်းဆွေးနွေးကြသည်",  # Burmese: we discuss the database
]


@pytest.mark.parametrize(("query", "snippet"), [
    ("ฐานข้อมูล", "วันนี้เราคุยเรื่อง[ฐานข้อมูล]และประสิทธิภาพ"),
    ("ประสิทธิ", "วันนี้เราคุยเรื่องฐานข้อมูลและ[ประสิทธิ]ภาพ"),  # ends on a vowel sign: kept inside the highlight
    ("ຖານຂໍ້ມູນ", "ພວກເຮົາເວົ້າກ່ຽວກັບ[ຖານຂໍ້ມູນ]"),
    ("ទិន្នន័យ", "យើងនិយាយអំពីមូលដ្ឋាន[ទិន្នន័យ]"),
    ("ဒေတာဘေ့စ်", "ကျွန်ုပ်တို့[ဒေတာဘေ့စ်]အကြောင်းဆွေးနွေးကြသည်"),
], ids=["thai", "thai-ending-on-a-vowel-sign", "lao", "khmer", "burmese"])
def test_thai_lao_khmer_and_burmese_words_are_found_inside_sentences(tmp_path, query, snippet):
    """These scripts put no spaces between words: a word inside a sentence is found, and its
    snippet shows the sentence as written, with each vowel sign and tone mark on its letter."""
    records = [chat_record([{"role": "user", "content": q}], "ok", ts=T0, request_id=f"r{i}")
               for i, q in enumerate(UNSPACED_QUESTIONS)]
    write_jsonl(tmp_path / "logs" / "requests" / "r.jsonl", records)
    assert logdb(tmp_path, "ingest", "--from", "logs").returncode == 0
    found = logdb(tmp_path, "search", query, "--json")
    assert found.returncode == 0 and not found.stderr, found.stderr
    assert [r["snippet"] for r in json.loads(found.stdout)["results"]] == [snippet]
