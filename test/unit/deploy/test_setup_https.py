"""deployments/scripts/setup-https.sh against a temporary project directory (never the network:
the public IP is always given with --ip)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "deployments" / "scripts" / "setup-https.sh"
APR1 = re.compile(r"^admin:\$apr1\$([./0-9A-Za-z]{1,8})\$[./0-9A-Za-z]{22}$")


def run(project: Path, *args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "PUBLIC_IP"}
    full_env.update(env or {})
    return subprocess.run(
        ["bash", str(SCRIPT), "--dir", str(project), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
    )


def test_first_run_writes_env_from_template(parse_env, project_dir: Path):
    result = run(project_dir, "--ip", "203.0.113.7", "--email", "ops@my-mail.org")
    assert result.returncode == 0, result.stderr
    env_file = project_dir / ".env"
    env = parse_env(env_file)
    assert env["DOMAIN"] == "aiproxy.203.0.113.7.nip.io"
    assert env["ACME_EMAIL"] == "ops@my-mail.org"
    assert re.fullmatch(r"sk-aiproxy-[0-9a-f]{48}", env["API_KEYS"])
    assert APR1.match(env["TRAEFIK_DASHBOARD_AUTH"]), env["TRAEFIK_DASHBOARD_AUTH"]
    # The hash has $ signs: it must be single-quoted so docker compose and dotenv keep it literal.
    assert re.search(r"^TRAEFIK_DASHBOARD_AUTH='admin:\$apr1\$", env_file.read_text(), re.M)
    # Everything else is the template, line for line (comments included).
    template = (project_dir / "configs" / ".env.example").read_text().splitlines()
    written = env_file.read_text().splitlines()
    changed = {"DOMAIN", "ACME_EMAIL", "API_KEYS", "TRAEFIK_DASHBOARD_AUTH"}
    if os.geteuid() != 0:
        changed |= {"APP_UID", "APP_GID"}
    assert len(written) == len(template)
    for old, new in zip(template, written, strict=True):
        key = re.sub(r"^#\s*", "", old).split("=", 1)[0]
        if key not in changed:
            assert old == new
    # Secrets file, and the printed credentials match what was stored.
    assert (env_file.stat().st_mode & 0o777) == 0o600
    assert env["API_KEYS"] in result.stdout
    password = re.search(r"Dashboard login: admin / (\S+)", result.stdout).group(1)
    salt = APR1.match(env["TRAEFIK_DASHBOARD_AUTH"]).group(1)
    if shutil.which("openssl"):
        expected = subprocess.run(
            ["openssl", "passwd", "-apr1", "-salt", salt, password],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert env["TRAEFIK_DASHBOARD_AUTH"] == "admin:" + expected
    # Directories the compose file mounts.
    assert (project_dir / "logs").is_dir()
    letsencrypt = project_dir / "deployments" / "letsencrypt"
    assert letsencrypt.is_dir() and (letsencrypt.stat().st_mode & 0o777) == 0o700
    if os.geteuid() == 0:
        assert (project_dir / "logs").stat().st_uid == 10001  # the image's non-root user
    else:
        assert env["APP_UID"] == str(os.getuid())


def test_second_run_does_not_clobber(project_dir: Path):
    assert run(project_dir, "--ip", "203.0.113.7", "--email", "ops@my-mail.org").returncode == 0
    env_file = project_dir / ".env"
    # The operator adds their own values and edits some lines.
    text = env_file.read_text().replace("OPENROUTER_API_KEY=", "OPENROUTER_API_KEY=sk-or-test-not-real")
    text = text.replace("# RATE_LIMIT_AVERAGE=10", "RATE_LIMIT_AVERAGE=3")
    env_file.write_text(text)
    before = env_file.read_text()

    result = run(project_dir)  # no options: nothing to change, no IP lookup needed
    assert result.returncode == 0, result.stderr
    assert env_file.read_text() == before
    assert "keeping DOMAIN=aiproxy.203.0.113.7.nip.io" in result.stdout
    assert "New client API key" not in result.stdout
    assert "Dashboard login" not in result.stdout


def test_existing_env_values_are_kept_and_only_missing_ones_filled(parse_env, project_dir: Path):
    (project_dir / ".env").write_text(
        "# my settings\nAPI_KEYS=sk-existing-one,sk-existing-two\nDOMAIN=ai.my-company.net\nCUSTOM=1\n"
    )
    result = run(project_dir, "--email", "ops@my-company.net")
    assert result.returncode == 0, result.stderr
    env = parse_env(project_dir / ".env")
    assert env["API_KEYS"] == "sk-existing-one,sk-existing-two"
    assert env["DOMAIN"] == "ai.my-company.net"
    assert env["CUSTOM"] == "1"
    assert env["ACME_EMAIL"] == "ops@my-company.net"
    assert APR1.match(env["TRAEFIK_DASHBOARD_AUTH"])
    assert (project_dir / ".env").read_text().startswith("# my settings\nAPI_KEYS=sk-existing-one")


def test_explicit_options_replace_domain_and_dashboard_password(parse_env, project_dir: Path):
    assert run(project_dir, "--ip", "203.0.113.7", "--email", "ops@my-mail.org").returncode == 0
    first = parse_env(project_dir / ".env")
    result = run(
        project_dir,
        "--service",
        "sslip.io",
        "--name",
        "gw",
        "--ip",
        "198.51.100.20",
        "--dashboard-password",
        "correct horse battery",
    )
    assert result.returncode == 0, result.stderr
    env = parse_env(project_dir / ".env")
    assert env["DOMAIN"] == "gw.198.51.100.20.sslip.io"
    assert env["API_KEYS"] == first["API_KEYS"]
    assert env["TRAEFIK_DASHBOARD_AUTH"] != first["TRAEFIK_DASHBOARD_AUTH"]
    assert "correct horse battery" not in (project_dir / ".env").read_text()


def test_dashboard_password_from_standard_input_stays_out_of_the_command_line(parse_env, project_dir: Path):
    assert run(project_dir, "--ip", "203.0.113.7", "--email", "ops@my-mail.org").returncode == 0
    result = run(project_dir, "--dashboard-password", "-", stdin="from stdin $x\n")
    assert result.returncode == 0, result.stderr
    auth = parse_env(project_dir / ".env")["TRAEFIK_DASHBOARD_AUTH"]
    salt = APR1.match(auth).group(1)
    expected = subprocess.run(["openssl", "passwd", "-apr1", "-salt", salt, "-stdin"], input="from stdin $x\n",
                              capture_output=True, text=True, check=True).stdout.strip()
    assert auth.split(":", 1)[1] == expected
    empty = run(project_dir, "--dashboard-password", "-", stdin="")
    assert empty.returncode != 0 and "no password on standard input" in empty.stderr


def test_custom_domain_and_staging(parse_env, project_dir: Path):
    result = run(project_dir, "--domain", "AI.My-Company.net", "--email", "ops@my-company.net", "--staging")
    assert result.returncode == 0, result.stderr
    env = parse_env(project_dir / ".env")
    assert env["DOMAIN"] == "ai.my-company.net"
    assert "staging" in env["ACME_CA_SERVER"]


@pytest.mark.parametrize("tool", ["openssl", "python"])
def test_password_hash_works_without_apache_utils(parse_env, project_dir: Path, tool: str):
    """The hash is htpasswd's apr1 whichever tool made it: openssl, or the pure-python fallback."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to cross-check the hash")
    result = run(
        project_dir,
        "--ip",
        "203.0.113.7",
        "--email",
        "ops@my-mail.org",
        "--dashboard-password",
        "s3cret-Pa$$word",
        env={"SETUP_HTPASSWD_TOOL": tool},
    )
    assert result.returncode == 0, result.stderr
    auth = parse_env(project_dir / ".env")["TRAEFIK_DASHBOARD_AUTH"]
    salt = APR1.match(auth).group(1)
    expected = subprocess.run(
        ["openssl", "passwd", "-apr1", "-salt", salt, "s3cret-Pa$$word"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert auth == "admin:" + expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ip", "203.0.113.7"], "--email"),  # the template's e-mail is a placeholder
        (["--ip", "203.0.113.999", "--email", "ops@my-mail.org"], "not an IPv4 address"),
        (["--service", "custom", "--email", "ops@my-mail.org"], "needs --domain"),
        (["--service", "ngrok", "--email", "ops@my-mail.org"], "--service must be"),
        (["--domain", "bad_domain!", "--email", "ops@my-mail.org"], "not a valid domain"),
        (["--ip", "203.0.113.7", "--email", "not-an-email"], "not a valid e-mail"),
    ],
)
def test_bad_input_fails_clearly(project_dir: Path, args: list[str], message: str):
    result = run(project_dir, *args)
    assert result.returncode != 0
    assert message in result.stderr


def test_public_ip_from_environment(parse_env, project_dir: Path):
    result = run(project_dir, "--email", "ops@my-mail.org", env={"PUBLIC_IP": "192.0.2.44"})
    assert result.returncode == 0, result.stderr
    assert parse_env(project_dir / ".env")["DOMAIN"] == "aiproxy.192.0.2.44.nip.io"


def test_written_env_reads_the_same_in_dotenv_and_bash(parse_env, project_dir: Path):
    """The gateway (dynaconf's dotenv) and the scripts (bash) must see the hash with its $ signs intact."""
    dotenv = pytest.importorskip("dynaconf.vendor.dotenv")
    assert run(project_dir, "--ip", "203.0.113.7", "--email", "ops@my-mail.org").returncode == 0
    env_file = project_dir / ".env"
    expected = parse_env(env_file)
    loaded = dotenv.dotenv_values(env_file)
    for key in ("DOMAIN", "API_KEYS", "TRAEFIK_DASHBOARD_AUTH", "ACME_EMAIL"):
        assert loaded[key] == expected[key]
    sourced = subprocess.run(
        ["bash", "-c", 'set -a; . "$1"; printf "%s" "$TRAEFIK_DASHBOARD_AUTH"', "_", str(env_file)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert sourced == expected["TRAEFIK_DASHBOARD_AUTH"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_as_root_logs_belong_to_the_configured_app_user(project_dir: Path):
    """The container runs as APP_UID:APP_GID (docker-compose.yml): logs/ must be theirs, not 10001's."""
    (project_dir / ".env").write_text("DOMAIN=ai.my-company.net\nACME_EMAIL=ops@my-company.net\nAPP_UID=12345\nAPP_GID=12346\n")
    assert run(project_dir).returncode == 0
    logs = (project_dir / "logs").stat()
    assert (logs.st_uid, logs.st_gid) == (12345, 12346)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_sudo_keeps_the_owner_of_an_existing_env(project_dir: Path):
    """`sudo setup-https.sh` on the deploy user's .env: that user (make up, deploy-production.sh) must still
    be able to read it afterwards."""
    env_file = project_dir / ".env"
    env_file.write_text("DOMAIN=ai.my-company.net\nACME_EMAIL=ops@my-company.net\n")
    os.chown(env_file, 12345, 12346)
    assert run(project_dir, "--dashboard-password", "new-one").returncode == 0
    stat = env_file.stat()
    assert (stat.st_uid, stat.st_gid, stat.st_mode & 0o777) == (12345, 12346, 0o600)
    assert "TRAEFIK_DASHBOARD_AUTH=" in env_file.read_text()
