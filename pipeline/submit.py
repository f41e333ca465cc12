"""Submitting mgtc jobs to a Ray cluster through the Ray Jobs API.

A submission is built locally from small parts, each testable without a cluster:

    runtime env   `cluster/runtime_env.yaml`: working_dir (the project code travels with
                  every job; the cluster image holds only the dependencies), excludes,
                  env_vars (endpoints only, never secrets)
    entrypoint    `python -m jobs.<module> <job args>`
    id            `mgtc-<kind>-<config>-<yyyymmdd-hhmmss>-<4 hex>`
    metadata      kind, config name, git commit (strings, as Ray requires)

`plan_submission` assembles and checks them (secrets refused, packed working dir under
the upload limit); `Cluster` talks to the head (reachability, token auth, submit, follow
logs, stop) and turns Ray's exceptions into `SubmitError`s that say what to fix.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import yaml

from pipeline.vocab import git_commit, git_dirty

log = logging.getLogger(__name__)

JOB_MODULES = {
    "precompute": "jobs.precompute",
    "prepare": "jobs.prepare",
    "train": "jobs.train",
    "eval": "jobs.evaluate",
    "sweep": "jobs.sweep",
    "predict": "jobs.predict",
}
DEFAULT_RUNTIME_ENV = Path("cluster") / "runtime_env.yaml"

# A stopped job exits like a shell command interrupted by the user.
EXIT_STOPPED = 130
# Ray's default: a plain `ray start --head` serves the Jobs API on 8265.
DEFAULT_DASHBOARD_PORT = 8265


class SubmitError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""


class ClusterUnreachable(SubmitError):
    """Nothing answers at the address, or what answers is not a Ray dashboard."""


class AuthFailed(SubmitError):
    """The head refused the request: no token, or the wrong one."""


class UnknownJob(SubmitError):
    """No job with that submission id on the cluster."""


class WorkingDirTooLarge(SubmitError):
    """The packed working dir would exceed what one Jobs API upload accepts."""


class SecretRefused(SubmitError):
    """Something that looks like a credential was about to leave this machine."""


# ---------------------------------------------------------------------------------------
# Secrets: env_vars, metadata and the entrypoint are stored by Ray and shown to anyone who
# can open the dashboard (`ray job list` prints the runtime env), so they must hold none.
# ---------------------------------------------------------------------------------------

_SECRET_NAMES = {
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN",
    "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD", "PGPASSWORD", "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "GITHUB_TOKEN",
}
_SECRET_WORDS = {"secret", "password", "passwd", "passphrase", "credential", "credentials"}
_KEY_QUALIFIERS = {"api", "access", "secret", "private", "session", "signing", "account"}
_SECRET_VALUES = (
    ("an AWS access key id", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a password inside a URL", re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I)),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("an access token", re.compile(r"\b(ghp_|gho_|github_pat_|glpat-|xox[abp]-|hf_)[A-Za-z0-9_-]{16,}")),
)


def secret_reason(name: str, value: str) -> str | None:
    """Why `name=value` looks like a credential, or None.

    Names are split into words on `_ . -`, so domain words such as `num_tokens` or
    `token_ratio` pass while `RAY_AUTH_TOKEN` or `db.password` do not.
    """
    words = [w for w in re.split(r"[_.\-]+", name.lower().lstrip("-")) if w]
    if name.upper().lstrip("-") in _SECRET_NAMES or _SECRET_WORDS.intersection(words):
        return "its name says it is a credential"
    if words and (words[-1] in ("token", "apikey") or (
            words[-1] == "key" and len(words) > 1 and words[-2] in _KEY_QUALIFIERS)):
        return "its name says it is a credential"
    for what, pattern in _SECRET_VALUES:
        if pattern.search(value):
            return f"its value contains {what}"
    return None


def refuse_secrets(items: Iterable[tuple[str, str]], where: str) -> None:
    """Raise SecretRefused naming the first credential-like (name, value); never echo the value."""
    for name, value in items:
        reason = secret_reason(name, str(value))
        if reason:
            raise SecretRefused(
                f"refusing to send {name!r} in the job's {where}: {reason}. Ray stores "
                f"{where} in plain text and shows it on the dashboard. Give nodes their "
                "credentials through the instance role / service account (S3) or a "
                "Kubernetes Secret, and keep only endpoints in cluster/runtime_env.yaml.")


def _args_as_items(job_args: Sequence[str]) -> list[tuple[str, str]]:
    """Job args as (name, value) pairs for the secret check: `--opt=v` and `--set a.b=v`
    give their names, `--opt` its name; a bare value is named by its position, so only
    the value patterns apply to it (a path called my_secret.txt is not a secret)."""
    items = []
    for i, arg in enumerate(job_args, start=1):
        name, sep, value = arg.partition("=")
        if sep:
            items.append((name, value))
        elif arg.startswith("-"):
            items.append((arg, ""))
        else:
            items.append((f"job argument {i}", arg))
    return items


# ---------------------------------------------------------------------------------------
# Runtime env and the size of the working dir that travels with every job.
# ---------------------------------------------------------------------------------------

def load_runtime_env(path: Path, base_dir: Path, extra_env: Mapping[str, str] | None = None) -> dict:
    """The runtime env from `path`, working_dir made absolute against `base_dir`.

    `base_dir` is the directory the command runs in, as for `ray job submit --runtime-env`,
    so the same file works with both tools. `extra_env` (from `--env`) overrides env_vars.
    """
    if not path.is_file():
        raise SubmitError(f"runtime env file {path} not found: run from the project root "
                          "(where pyproject.toml is) or pass --runtime-env FILE")
    env = yaml.safe_load(path.read_text()) or {}
    if not isinstance(env, dict):
        raise SubmitError(f"{path}: expected a mapping of runtime env fields, got {type(env).__name__}")
    env_vars = dict(env.get("env_vars") or {})
    env_vars.update(extra_env or {})
    for name, value in env_vars.items():
        if not isinstance(value, str):
            raise SubmitError(f"{path}: env_vars.{name} must be a string (quote it in YAML)")
    refuse_secrets(env_vars.items(), "env_vars")
    env["env_vars"] = env_vars
    if "working_dir" in env:
        working_dir = (base_dir / str(env["working_dir"])).resolve()
        if not working_dir.is_dir():
            raise SubmitError(f"{path}: working_dir resolves to {working_dir}, which is not a directory")
        env["working_dir"] = str(working_dir)
    return env


def upload_limit() -> int:
    """Bytes one Jobs API working_dir upload may have.

    The dashboard's HTTP server refuses request bodies over DASHBOARD_CLIENT_MAX_SIZE
    (100 MiB, answer 413), below the 512 MiB GCS limit that `ray.init(runtime_env=...)`
    hits; read from the installed Ray so an upgrade moves both.
    """
    from ray._private import ray_constants
    from ray._private.runtime_env import packaging

    return min(ray_constants.DASHBOARD_CLIENT_MAX_SIZE, packaging.GCS_STORAGE_MAX_SIZE)


def packed_files(working_dir: Path, excludes: Sequence[str]) -> list[tuple[str, int]]:
    """(relative path, bytes) of every file Ray would pack for `working_dir`.

    Walks with Ray's own traversal (its default excludes, `excludes`, .gitignore unless
    RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1, .rayignore) so the estimate matches the upload.
    """
    from ray._private import ray_constants
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    root = Path(working_dir).absolute()
    # Ray adds its own default excludes (.git, .venv, ...) in front of the user's.
    excludes = [*ray_constants.get_runtime_env_default_excludes(), *excludes]
    include_gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
    files: list[tuple[str, int]] = []

    def visit(path: Path) -> None:
        if path.is_file():
            files.append((str(path.relative_to(root)), path.stat().st_size))

    # Our logger, not Ray's: Ray's says "Ignoring upload ... .gitignore" at INFO for every
    # ignore file it meets, which Ray repeats anyway when it packs.
    _dir_travel(root, [_get_excludes(root, list(excludes))], visit,
                include_gitignore=include_gitignore, logger=log)
    return files


def packed_size(files: Sequence[tuple[str, int]]) -> int:
    """Bytes of the zip Ray builds from `files`: stored, not deflated, plus zip headers."""
    local_header, central_header, end_record = 30, 46, 22
    return end_record + sum(size + local_header + central_header + 2 * len(name.encode())
                            for name, size in files)


def _mib(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:.1f} MiB"


def check_upload_size(working_dir: Path, excludes: Sequence[str], limit: int | None = None) -> int:
    """Packed bytes of the working dir; WorkingDirTooLarge naming the biggest offenders."""
    limit = upload_limit() if limit is None else limit
    files = packed_files(working_dir, excludes)
    size = packed_size(files)
    if size <= limit:
        return size
    by_entry: dict[str, int] = {}
    for name, num_bytes in files:
        top, sep, _ = name.partition(os.sep)
        key = top + ("/" if sep else "")
        by_entry[key] = by_entry.get(key, 0) + num_bytes
    entries = sorted(by_entry.items(), key=lambda kv: -kv[1])[:5]
    biggest = sorted(files, key=lambda f: -f[1])[:5]
    raise WorkingDirTooLarge(
        f"working_dir {working_dir} packs to {_mib(size)}, over the {_mib(limit)} one Ray "
        "Jobs upload accepts.\n"
        f"  biggest entries: {', '.join(f'{n} ({_mib(b)})' for n, b in entries)}\n"
        f"  biggest files:   {', '.join(f'{n} ({_mib(b)})' for n, b in biggest)}\n"
        "Add them to `excludes` in cluster/runtime_env.yaml (or to .rayignore), or put data "
        "on S3 and pass its URI to the job.")


# ---------------------------------------------------------------------------------------
# Naming and describing a submission.
# ---------------------------------------------------------------------------------------

def _slug(text: str, max_len: int = 32) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-")
    return slug or "default"


def config_name(job_args: Sequence[str]) -> str:
    """The run's name for ids and metadata: the `--config` file's stem, else the first
    positional argument's stem (precompute's manifest), else "default"."""
    for i, arg in enumerate(job_args):
        if arg == "--config" and i + 1 < len(job_args):
            return Path(job_args[i + 1]).stem
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1]).stem
    if job_args and not job_args[0].startswith("-"):
        return Path(job_args[0].rstrip("/")).stem or "default"
    return "default"


def submission_id(kind: str, name: str, now: datetime | None = None, suffix: str | None = None) -> str:
    """`mgtc-<kind>-<name>-<yyyymmdd-hhmmss>-<4 hex>`: sortable by time, readable in
    `mgtc jobs list`, unique enough for one user clicking twice in the same second."""
    now = now or datetime.now(timezone.utc)
    suffix = suffix or secrets.token_hex(2)
    return f"mgtc-{_slug(kind)}-{_slug(name)}-{now:%Y%m%d-%H%M%S}-{suffix}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # containers without a passwd entry for the uid
        return "unknown"


def entrypoint(kind: str, job_args: Sequence[str]) -> str:
    """The shell command the head runs: the job module with its arguments, quoted."""
    if kind not in JOB_MODULES:
        raise SubmitError(f"unknown job kind {kind!r}; expected one of {', '.join(JOB_MODULES)}")
    return shlex.join(["python", "-m", JOB_MODULES[kind], *job_args])


@dataclass(frozen=True)
class Submission:
    """Everything `submit_job` receives, resolved and checked."""

    submission_id: str
    entrypoint: str
    runtime_env: dict
    metadata: dict[str, str]
    packed_bytes: int = 0
    entrypoint_resources: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """JSON for `--print-submission`: safe to print, secrets were refused on the way in."""
        return json.dumps({
            "submission_id": self.submission_id, "entrypoint": self.entrypoint,
            "runtime_env": self.runtime_env, "metadata": self.metadata,
            "packed_working_dir": _mib(self.packed_bytes), **self.entrypoint_resources,
        }, indent=2)


def plan_submission(kind: str, job_args: Sequence[str], *, runtime_env_path: Path, base_dir: Path,
                    extra_env: Mapping[str, str] | None = None, name: str | None = None,
                    sub_id: str | None = None, entrypoint_resources: Mapping[str, float] | None = None,
                    now: datetime | None = None) -> Submission:
    """Build and check a submission without contacting the cluster.

    Refuses credentials in env_vars, metadata and job args, and a working dir over the
    upload limit. The job sees its metadata (git_commit included: the uploaded working dir
    has no .git) and Ray's `job_submission_id` in RAY_JOB_CONFIG_JSON_ENV_VAR.
    """
    command = entrypoint(kind, job_args)
    refuse_secrets(_args_as_items(job_args), "entrypoint")
    env = load_runtime_env(runtime_env_path, base_dir, extra_env)
    working_dir = Path(env.get("working_dir", base_dir))
    packed = check_upload_size(working_dir, env.get("excludes", [])) if "working_dir" in env else 0
    name = name or config_name(job_args)
    sub_id = sub_id or submission_id(kind, name, now)
    commit, dirty = git_commit(working_dir, short=True), git_dirty(working_dir)
    metadata = {"mgtc_kind": kind, "mgtc_config": name, "git_commit": commit,
                "git_dirty": str(dirty).lower(), "user": _user()}
    refuse_secrets(metadata.items(), "metadata")
    return Submission(submission_id=sub_id, entrypoint=command, runtime_env=env,
                      metadata=metadata, packed_bytes=packed,
                      entrypoint_resources=dict(entrypoint_resources or {}))


def check_job_args(working_dir: Path, kind: str, job_args: Sequence[str]) -> tuple[bool, str]:
    """Parse the job args with the job's own `build_parser()` from the code being shipped.

    Runs in a child process so that the working dir's modules are imported, not this
    installation's. Returns (ok, message): not ok when the module is missing or its parser
    rejects the args (argparse exits 2); a module that cannot be imported here (a laptop
    without decord) is reported as not checked, which is not an error.
    """
    module = JOB_MODULES[kind]
    if not (working_dir / Path(*module.split("."))).with_suffix(".py").is_file():
        return False, f"{module} does not exist in the working dir {working_dir}"
    # Any import failure means "cannot check on this machine", whatever its type.
    script = ("import importlib, sys\n"
              f"sys.path.insert(0, {str(working_dir)!r})\n"
              "try:\n"
              f"    parser = importlib.import_module({module!r}).build_parser()\n"
              "except Exception as err:\n"
              "    print(f'arguments not checked locally: {type(err).__name__}: {err}')\n"
              "    sys.exit(0)\n"
              f"parser.prog = 'mgtc submit {kind}'\n"
              "parser.parse_args(sys.argv[1:])\n")
    proc = subprocess.run([sys.executable, "-c", script, *job_args], cwd=working_dir,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode == 0:
        return True, proc.stdout.strip()
    return False, (proc.stderr or proc.stdout).strip()


# ---------------------------------------------------------------------------------------
# Talking to the head.
# ---------------------------------------------------------------------------------------

def normalize_address(address: str | None) -> str:
    """`http://host:port` of the Jobs API from --address, RAY_API_SERVER_ADDRESS or
    RAY_ADDRESS (as the `ray job` CLI reads them); a bare host:port gets http://."""
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise SubmitError("no cluster address: pass --address http://<head>:8265 (through an "
                          "SSH tunnel or `kubectl port-forward`, e.g. http://127.0.0.1:8265)")
    if address.startswith("ray://") or address == "auto":
        raise SubmitError(f"{address!r} is a Ray Client / GCS address; the Jobs API lives on the "
                          "dashboard port: --address http://<head>:8265")
    if "://" not in address:
        address = f"http://{address}"
    return address.rstrip("/")


def resolve_token() -> tuple[str | None, str]:
    """(token, where it came from), in Ray 2.60's order: RAY_AUTH_TOKEN, the file named by
    RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token. No token when RAY_AUTH_MODE=disabled.

    Read here and sent as a header instead of relying on Ray's loader, which caches the
    mode and token per process (a long-lived process or a test session would keep a
    stale one, and an unset RAY_AUTH_MODE means "send nothing" to Ray's client).
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None, "RAY_AUTH_MODE=disabled"
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        path = Path(os.environ["RAY_AUTH_TOKEN_PATH"]).expanduser()
        try:
            token = path.read_text().strip()
        except OSError as err:
            raise AuthFailed(f"RAY_AUTH_TOKEN_PATH={path} cannot be read: {err.strerror}") from None
        if not token:
            raise AuthFailed(f"RAY_AUTH_TOKEN_PATH={path} is empty")
        return token, f"RAY_AUTH_TOKEN_PATH={path}"
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file() and default.read_text().strip():
        return default.read_text().strip(), str(default)
    return None, "no token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token are unset)"


_TOKEN_HELP = ("Get the head's token: on a launcher cluster `ray exec cluster/aws.yaml "
               "'ray get-auth-token'` (it is the ~/.ray/auth_token shipped by `ray up`); on "
               "KubeRay `kubectl get secret mgtc-ray-auth -o jsonpath='{.data.auth_token}' | "
               "base64 -d`; then export RAY_AUTH_TOKEN=... (or RAY_AUTH_TOKEN_PATH=file).")


def _probe(address: str, timeout: float) -> None:
    """Fail fast with a clear message when nothing listens (requests would wait minutes
    on a black-holed address)."""
    parts = urlsplit(address)
    port = parts.port or (443 if parts.scheme == "https" else DEFAULT_DASHBOARD_PORT)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout).close()
    except OSError as err:
        raise ClusterUnreachable(
            f"cannot reach the Ray dashboard at {address} ({err.strerror or err}). Is the head "
            "running and the port forwarded? (`ray dashboard cluster/aws.yaml`, or `kubectl "
            "port-forward svc/mgtc-head-svc 8265:8265`)") from None


class Cluster:
    """The Jobs API of one Ray cluster, with mgtc's error messages."""

    def __init__(self, address: str | None, *, timeout: float = 5.0):
        from ray.job_submission import JobSubmissionClient

        self.address = normalize_address(address)
        _probe(self.address, timeout)
        token, self.token_source = resolve_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with self._translated():
            self.client = JobSubmissionClient(self.address, headers=headers)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Turn the Ray client's exceptions into SubmitErrors that say what to do."""
        import requests
        from ray.exceptions import AuthenticationError

        try:
            yield
        except AuthenticationError as err:
            # Ray words a 403 (token sent, wrong) "Authentication failed", a 401 "required".
            if err.message.startswith("Authentication failed"):
                raise AuthFailed(f"the Ray head at {self.address} rejected the token from "
                                 f"{self.token_source}. {_TOKEN_HELP}") from None
            raise AuthFailed(f"the Ray head at {self.address} requires a token and none was "
                             f"sent ({self.token_source}). {_TOKEN_HELP}") from None
        except (ConnectionError, requests.RequestException) as err:
            raise ClusterUnreachable(f"lost the connection to the Ray dashboard at "
                                     f"{self.address}: {err}") from None
        except RuntimeError as err:
            raise _from_runtime_error(self.address, str(err)) from None

    def submit(self, sub: Submission) -> str:
        """Upload the working dir and start the job; returns its submission id."""
        with self._translated():
            return self.client.submit_job(
                entrypoint=sub.entrypoint, runtime_env=sub.runtime_env, metadata=sub.metadata,
                submission_id=sub.submission_id, **sub.entrypoint_resources)

    def info(self, sub_id: str):
        """JobDetails of `sub_id` (status, metadata, driver_exit_code, message, times)."""
        with self._translated():
            return self.client.get_job_info(sub_id)

    def logs(self, sub_id: str) -> str:
        with self._translated():
            return self.client.get_job_logs(sub_id)

    def list(self) -> list:
        with self._translated():
            return self.client.list_jobs()

    def stop(self, sub_id: str) -> bool:
        """Ask the head to stop the job; True when it was still running."""
        self.info(sub_id)  # a clear UnknownJob instead of a bare 404
        with self._translated():
            return self.client.stop_job(sub_id)

    def wait(self, sub_id: str, *, poll_s: float = 1.0, timeout_s: float | None = None):
        """Poll until the job is terminal; returns its JobDetails."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            info = self.info(sub_id)
            if info.status.is_terminal():
                return info
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {sub_id} still {info.status} after {timeout_s}s")
            time.sleep(poll_s)

    def follow(self, sub_id: str, out: IO[str] | None = None):
        """Stream the job's logs to `out` (stdout) until it ends; returns its final JobDetails."""
        import aiohttp

        out = out or sys.stdout
        self.info(sub_id)

        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(sub_id):
                out.write(chunk)
                out.flush()

        try:
            asyncio.run(tail())
        except (RuntimeError, aiohttp.ClientError) as err:  # the stream dropped, not the job
            out.write(f"\n[mgtc] log stream interrupted ({err}); waiting for the job to end\n")
        return self.wait(sub_id)


def _from_runtime_error(address: str, text: str) -> SubmitError:
    """The SubmitError for one of the RuntimeErrors the Jobs client raises on HTTP errors."""
    if "status code 404" in text and "does not exist" in text:
        return UnknownJob(f"no job with that submission id on {address}: {_last_words(text)} "
                          "`mgtc jobs list` shows the ids.")
    if "Version check returned 404" in text:
        return ClusterUnreachable(f"{address} answers but is not a Ray dashboard (wrong port? "
                                  "the Jobs API is on the dashboard port, 8265 by default)")
    if "status code 413" in text:
        return WorkingDirTooLarge(f"the dashboard at {address} refused the working dir upload "
                                  f"as too large: {text}")
    return SubmitError(f"the Ray dashboard at {address} refused the request: {text}")


def _last_words(text: str) -> str:
    """Ray's 'Request failed with status code 404: Job x does not exist..' -> the reason."""
    return text.split(":", 1)[-1].strip().rstrip(".") + "."


def exit_code(info: Any) -> int:
    """Process exit code mirroring a terminal job: 0 SUCCEEDED, the driver's own code (or
    1) FAILED, EXIT_STOPPED for STOPPED."""
    status = str(info.status)
    if status == "SUCCEEDED":
        return 0
    if status == "STOPPED":
        return EXIT_STOPPED
    code = getattr(info, "driver_exit_code", None)
    return code if isinstance(code, int) and 0 < code < 256 else 1


def format_time_ms(ms: int | None) -> str:
    """Ray's epoch milliseconds as local 'YYYY-mm-dd HH:MM:SS', '-' when unset."""
    return "-" if not ms else datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
