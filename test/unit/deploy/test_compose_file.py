"""deployments/docker-compose.yml, read with PyYAML: the security settings the earlier version lacked
(public dashboard, no rate limit, root container) and the routing the guide promises."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

DEPLOYMENTS = Path(__file__).resolve().parents[3] / "deployments"
ENV_EXAMPLE = Path(__file__).resolve().parents[3] / "configs" / ".env.example"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOYMENTS / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def traefik(compose) -> dict:
    return compose["services"]["traefik"]


@pytest.fixture(scope="module")
def app(compose) -> dict:
    return compose["services"]["aiproxy"]


def labels_of(service: dict) -> dict[str, str]:
    raw = service.get("labels", {})
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    return dict(item.split("=", 1) for item in raw)


@pytest.fixture(scope="module")
def labels(traefik, app) -> dict[str, str]:
    """Traefik reads the labels of every container as one configuration."""
    merged = labels_of(traefik)
    for key, value in labels_of(app).items():
        assert key == "traefik.enable" or key not in merged, f"label {key} defined twice"
        merged[key] = value
    return merged


def flags(traefik: dict) -> dict[str, str]:
    out = {}
    for arg in traefik["command"]:
        key, _, value = arg.removeprefix("--").partition("=")
        out[key.lower()] = value
    return out


def default(value: str) -> str:
    """The value docker compose uses when the variable is unset: ${NAME:-default} -> default."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def middlewares(labels: dict[str, str], router: str) -> list[str]:
    return labels.get(f"traefik.http.routers.{router}.middlewares", "").split(",")


def test_traefik_v3_image(traefik):
    image = default(traefik["image"])
    assert re.fullmatch(r"traefik:v3\.\d+(\.\d+)?", image), image


def test_no_insecure_api_and_no_published_dashboard_port(traefik):
    f = flags(traefik)
    assert f.get("api.insecure", "false") == "false"
    assert f["api.dashboard"] == "true"
    for port in traefik.get("ports", []):
        spec = default(str(port))
        container_port = spec.rsplit(":", 1)[-1].split("/")[0]
        assert container_port in {"80", "443"} or spec.startswith("127.0.0.1:"), f"published: {port}"
    assert {default(str(p)).rsplit(":", 1)[-1] for p in traefik["ports"]} == {"80", "443"}


def test_http_redirects_to_https_at_the_entry_point(traefik):
    f = flags(traefik)
    assert f["entrypoints.web.address"] == ":80"
    assert f["entrypoints.websecure.address"] == ":443"
    assert f["entrypoints.web.http.redirections.entrypoint.to"] == "websecure"
    assert f["entrypoints.web.http.redirections.entrypoint.scheme"] == "https"
    assert f.get("entrypoints.web.http.redirections.entrypoint.permanent") == "true"


def test_read_timeout_outlasts_the_slowest_completion(traefik):
    """Traefik v3 cuts HTTP/1.1 requests, responses included, at readTimeout (default 60s); the gateway
    waits up to 300s for an upstream, so the entry point must allow more."""
    value = default(flags(traefik)["entrypoints.websecure.transport.respondingtimeouts.readtimeout"])
    match = re.fullmatch(r"(\d+)(s|m)", value)
    assert match, value
    seconds = int(match.group(1)) * (60 if match.group(2) == "m" else 1)
    assert seconds == 0 or seconds > 300


def test_lets_encrypt_http01(traefik):
    f = flags(traefik)
    assert f["certificatesresolvers.letsencrypt.acme.httpchallenge"] == "true"
    assert f["certificatesresolvers.letsencrypt.acme.httpchallenge.entrypoint"] == "web"
    assert f["certificatesresolvers.letsencrypt.acme.storage"].startswith("/letsencrypt/")
    assert "${ACME_EMAIL" in f["certificatesresolvers.letsencrypt.acme.email"]
    assert any(v.endswith(":/letsencrypt") for v in traefik["volumes"]), "acme.json must persist"
    assert f["providers.docker.exposedbydefault"] == "false"


def test_dashboard_behind_basic_auth(labels):
    assert labels["traefik.http.routers.dashboard.service"] == "api@internal"
    assert labels["traefik.http.routers.dashboard.rule"].startswith("Host(`traefik.${DOMAIN")
    assert labels["traefik.http.routers.dashboard.entrypoints"] == "websecure"
    auth = [
        m
        for m in middlewares(labels, "dashboard")
        if f"traefik.http.middlewares.{m}.basicauth.users" in labels
    ]
    assert auth, "the dashboard router has no basicauth middleware"
    users = labels[f"traefik.http.middlewares.{auth[0]}.basicauth.users"]
    # Required (:?), never a default that would leave it open or ship a known password.
    assert users.startswith("${TRAEFIK_DASHBOARD_AUTH:?"), users


def test_security_headers(labels):
    name = "security-headers"
    prefix = f"traefik.http.middlewares.{name}.headers."
    assert int(default(labels[prefix + "stsseconds"])) >= 31536000
    assert labels[prefix + "contenttypenosniff"] == "true"
    assert labels[prefix + "framedeny"] == "true"
    assert name in middlewares(labels, "aiproxy")
    assert name in middlewares(labels, "dashboard")


def test_rate_limit_on_by_default_and_tunable(labels):
    prefix = "traefik.http.middlewares.rate-limit.ratelimit."
    for knob, env in (("average", "RATE_LIMIT_AVERAGE"), ("burst", "RATE_LIMIT_BURST")):
        value = labels[prefix + knob]
        assert value.startswith("${" + env + ":-"), f"{knob} must be tunable with {env}"
        assert int(default(value)) > 0, f"{knob} must be on by default"
    for router in ("aiproxy", "aiproxy-grpc", "dashboard"):
        assert "rate-limit" in middlewares(labels, router), router


def test_rest_router(labels):
    assert labels["traefik.http.routers.aiproxy.rule"].startswith("Host(`${DOMAIN")
    assert labels["traefik.http.routers.aiproxy.entrypoints"] == "websecure"
    assert labels["traefik.http.routers.aiproxy.tls.certresolver"] == "letsencrypt"
    assert labels["traefik.http.services.aiproxy.loadbalancer.server.port"] == "8123"


def test_grpc_routed_over_h2c_on_its_own_host(labels):
    router = "traefik.http.routers.aiproxy-grpc"
    assert labels[router + ".rule"] == "Host(`grpc.${DOMAIN}`)"
    assert labels[router + ".entrypoints"] == "websecure"
    assert labels[router + ".tls.certresolver"] == "letsencrypt"
    service = labels[router + ".service"]
    assert labels[f"traefik.http.services.{service}.loadbalancer.server.scheme"] == "h2c"
    assert labels[f"traefik.http.services.{service}.loadbalancer.server.port"] == "50051"


def test_app_runs_unprivileged(app):
    uid, _, gid = default(app["user"]).partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    assert app["read_only"] is True
    assert "/tmp" in app["tmpfs"]
    assert app["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in app["security_opt"]
    assert "privileged" not in app


def test_app_has_no_docker_socket_and_no_published_ports(app, traefik):
    assert not any("docker.sock" in v for v in app.get("volumes", []))
    assert "ports" not in app, "only Traefik may publish ports"
    socket = [v for v in traefik["volumes"] if "docker.sock" in v]
    assert socket and all(v.endswith(":ro") for v in socket), "Traefik reads the Docker socket read-only"


def test_logs_and_configs_are_volumes(app):
    targets = {v.split(":")[1]: v for v in app["volumes"]}
    assert "/app/logs" in targets
    assert "/app/configs" in targets and targets["/app/configs"].endswith(":ro")


def test_app_built_from_the_dockerfile_and_plain_inside_the_network(app):
    assert app["build"]["dockerfile"] == "deployments/Dockerfile"
    assert app["build"]["context"] == ".."
    env = app["environment"]
    assert env["HOST"] == "0.0.0.0" and env["GRPC_HOST"] == "0.0.0.0"
    # Traefik terminates TLS: native TLS settings from .env must not leak into the container.
    assert env["TLS_CERT_FILE"] == "" and env["TLS_KEY_FILE"] == ""


def test_every_variable_is_documented_in_env_example():
    text = (DEPLOYMENTS / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    assert used - documented == set()
