"""A shared MLflow tracking server: `mlflow server` with the settings this project needs.

    backend    SQLite (one file; one server process writes it, workers talk HTTP) or
               PostgreSQL for several servers / heavy sweeps
    artifacts  proxied by the server (`--artifacts-destination s3://bucket/prefix`): only
               the server holds S3 credentials (its instance role, service account or the
               AWS chain); clients upload through HTTP and need no S3 access at all
    network    bound to 127.0.0.1 unless told otherwise; a wider bind needs the Host
               headers clients will send (`--allowed-hosts`), because MLflow answers 403
               to any other Host (DNS-rebinding protection) and replaces its defaults with
               the list given. Loopback names stay allowed so SSH tunnels and
               `kubectl port-forward` keep working.

`build_command` and `server_env` are pure; `start` runs the process, `wait_healthy`
polls `/health`.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

LOOPBACK_HOSTS = ("localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*", "[::1]", "[[]::1]:*")
_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


class TrackingServerError(Exception):
    """A setting that would make the server unsafe or unusable; the message says which."""


@dataclass(frozen=True)
class ServerConfig:
    """What `mlflow server` needs; see the module docstring for each choice."""

    backend_store_uri: str
    artifacts_destination: str
    host: str = "127.0.0.1"
    port: int = 5000
    allowed_hosts: tuple[str, ...] = ()
    workers: int | None = None
    s3_endpoint_url: str | None = None

    @property
    def url(self) -> str:
        """Where a client on this machine reaches the server."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


def default_config(root: Path) -> ServerConfig:
    """The embedded default: SQLite and artifacts under `root` (the project's runs dir)."""
    root = root.resolve()
    return ServerConfig(backend_store_uri=f"sqlite:///{root / 'mlflow.db'}",
                        artifacts_destination=str(root / "artifacts"))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _has_password(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.password is not None


def redact(uri: str) -> str:
    """`uri` with any password replaced by ***, for messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _resolve_backend(uri: str, base: Path) -> str:
    scheme = uri.split(":", 1)[0].split("+", 1)[0] if ":" in uri else ""
    if scheme not in _SQL_SCHEMES:
        raise TrackingServerError(
            f"backend store {redact(uri)!r}: use sqlite:///<path> or postgresql://... "
            "(MLflow 3 refuses the file store unless MLFLOW_ALLOW_FILE_STORE=true)")
    if _has_password(uri):
        raise TrackingServerError(
            f"backend store {redact(uri)!r} carries a password, which would show in process "
            "listings and logs: put it in PGPASSWORD or ~/.pgpass (read by the driver) instead")
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///") or uri == "sqlite:///":
            raise TrackingServerError(f"backend store {uri!r}: a shared server needs a file, "
                                      "sqlite:///<path>")
        path = Path(uri[len("sqlite:///"):])
        path = path if path.is_absolute() else (base / path).resolve()
        return f"sqlite:///{path}"
    return uri


def _resolve_artifacts(dest: str, base: Path) -> str:
    if "://" in dest:
        if _has_password(dest):
            raise TrackingServerError(f"artifacts destination {redact(dest)!r} carries a password")
        return dest
    return str(Path(dest) if Path(dest).is_absolute() else (base / dest).resolve())


def resolve(config: ServerConfig, base: Path | None = None) -> ServerConfig:
    """Absolute local paths, checked URIs, and a bind that is safe or explicit."""
    base = base or Path.cwd()
    if not 0 < config.port < 65536:
        raise TrackingServerError(f"port {config.port} is not a TCP port")
    if not is_loopback(config.host) and not config.allowed_hosts:
        raise TrackingServerError(
            f"--host {config.host} makes the server reachable from other machines: name the "
            "Host headers its clients will use with --allowed-hosts (e.g. "
            f"mlflow.internal,mlflow.internal:{config.port}), and keep the port closed to the "
            "internet (browse through an SSH tunnel or kubectl port-forward)")
    return replace(config,
                   backend_store_uri=_resolve_backend(config.backend_store_uri, base),
                   artifacts_destination=_resolve_artifacts(config.artifacts_destination, base))


def allowed_hosts(config: ServerConfig) -> list[str]:
    """The explicit Host-header list: loopback names (tunnels), then the configured ones."""
    hosts = list(LOOPBACK_HOSTS)
    hosts += [h for h in config.allowed_hosts if h not in hosts]
    return hosts


def build_command(config: ServerConfig) -> list[str]:
    """argv of `mlflow server` for a resolved config (no secrets: none are accepted)."""
    cmd = [sys.executable, "-m", "mlflow", "server",
           "--backend-store-uri", config.backend_store_uri,
           "--artifacts-destination", config.artifacts_destination,
           "--serve-artifacts",
           "--host", config.host, "--port", str(config.port),
           "--allowed-hosts", ",".join(allowed_hosts(config))]
    if config.workers:
        cmd += ["--workers", str(config.workers)]
    return cmd


def server_env(config: ServerConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: the caller's (AWS credential chain included, which only
    the server needs), MLflow's telemetry off and its job runner off (GenAI evaluation
    jobs: three huey consumer processes polling all the time; tracking training runs does
    not use them) unless the caller set them, plus MLFLOW_S3_ENDPOINT_URL for an
    S3-compatible store."""
    env = dict(os.environ if base is None else base)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # MLflow's documented opt-out of usage data
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if config.s3_endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = config.s3_endpoint_url
    return env


def make_local_dirs(config: ServerConfig) -> None:
    """Create the SQLite file's directory and a local artifacts directory."""
    if config.backend_store_uri.startswith("sqlite:///"):
        Path(config.backend_store_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if "://" not in config.artifacts_destination:
        Path(config.artifacts_destination).mkdir(parents=True, exist_ok=True)


def start(config: ServerConfig, log: IO[str] | None = None) -> subprocess.Popen:
    """Start `mlflow server` for a resolved config; output to `log` (default: inherited)."""
    make_local_dirs(config)
    return subprocess.Popen(build_command(config), env=server_env(config),
                            stdout=log, stderr=subprocess.STDOUT if log else None)


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout_s: float = 90.0) -> None:
    """Poll `<url>/health` until it answers OK; fail early if the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise TrackingServerError(f"mlflow server exited with code {proc.returncode} before "
                                      "becoming healthy; see its log")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise TrackingServerError(f"mlflow server at {url} not healthy after {timeout_s:.0f}s")
