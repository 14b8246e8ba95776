"""`raysweep submit`: the `ray job submit` call that runs a search (or a training) on a cluster.

It builds exactly the command the README documents (working directory, runtime env,
`jobs/search.py` entrypoint), checks on this machine first what would otherwise fail on the
cluster (the spec, the auth token, where results and runs would land), then runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .redact import MASK, redact, redact_text, strip_credentials, write_private
from .errors import SpecError

_RAY = str(Path(sys.executable).with_name("ray"))
TOKEN_FILE = Path.home() / ".ray" / "auth_token"
RUNTIME_ENV = "cluster/runtime_env.yaml"
# Uploaded with --working-dir only when they are not excluded: virtualenvs (GBs of torch),
# local results and stores. Used when the working directory has no cluster/runtime_env.yaml.
EXCLUDES = [".venv/", "venv/", ".git/", "mlruns/", "mlartifacts/", "raysweep_results/", "mlflow.db"]


@dataclass
class Submission:
    """What `raysweep submit` sends: `ray job submit` arguments and the job's own command line."""

    address: str
    working_dir: Path
    job: str  # "search" | "train"
    job_args: list[str]  # the spec path (relative to working_dir) and its flags
    runtime_env: Path | None = None
    submission_id: str | None = None
    wait: bool = True
    warnings: list[str] = field(default_factory=list)
    # Credentials taken out of the job's URIs, for its runtime env's env_vars (`secret_env`).
    secret_env: dict[str, str] = field(default_factory=dict)

    def entrypoint(self) -> list[str]:
        script = self.working_dir / "jobs" / f"{self.job}.py"
        if script.is_file():  # a raysweep checkout: the README's entrypoint, verbatim
            return ["python", f"jobs/{self.job}.py", *self.job_args]
        return ["python", "-m", "raysweep.cli", self.job, *self.job_args]

    def runtime_env_dict(self, secrets_shown: bool = False) -> dict:
        """The runtime env: the file's, or the installed package's; with `secret_env`'s
        variables added (as `***` unless `secrets_shown`)."""
        if self.runtime_env is not None:
            env = yaml.safe_load(self.runtime_env.read_text()) or {}
        else:
            # Not a checkout: ship the installed raysweep package itself to every node.
            import raysweep

            env = {"py_modules": [str(Path(raysweep.__file__).parent)], "excludes": EXCLUDES,
                   "env_vars": {"RAY_AIR_NEW_OUTPUT": "0"}}
        if self.secret_env:
            shown = self.secret_env if secrets_shown else {k: MASK for k in self.secret_env}
            env["env_vars"] = {**(env.get("env_vars") or {}), **shown}
        return env

    def runtime_env_args(self, runtime_env_file: str | None = None) -> list[str]:
        if runtime_env_file is not None:
            return ["--runtime-env", runtime_env_file]
        if self.runtime_env is not None and not self.secret_env:
            return ["--runtime-env", str(self.runtime_env)]
        return ["--runtime-env-json", json.dumps(self.runtime_env_dict())]

    @contextlib.contextmanager
    def runtime_env_file(self) -> Iterator[str | None]:
        """With `secret_env`: the runtime env, credentials included, in a file only this user
        can read (0600), for the time of the `ray job submit` call; else None."""
        if not self.secret_env:
            yield None
            return
        with tempfile.TemporaryDirectory(prefix="raysweep-submit-") as tmp:
            path = os.path.join(tmp, "runtime_env.yaml")
            write_private(path, yaml.safe_dump(self.runtime_env_dict(secrets_shown=True), sort_keys=False))
            yield path

    def command(self, runtime_env_file: str | None = None) -> list[str]:
        """The `ray job submit` command line. It never holds a credential: with `secret_env`
        it names `runtime_env_file` (see `runtime_env_file()`), or shows the runtime env
        with the credentials as `***` (--dry-run)."""
        cmd = [_RAY, "job", "submit", "--address", self.address, "--working-dir", str(self.working_dir),
               *self.runtime_env_args(runtime_env_file)]
        if self.submission_id:
            cmd += ["--submission-id", self.submission_id]
        if not self.wait:
            cmd.append("--no-wait")
        return [*cmd, "--", *self.entrypoint()]


def client_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The submitter's environment with token auth on; a `SpecError` if no token can be had.

    Ray clusters run with token auth (Ray 2.59+); `ray job submit` sends the token only with
    `RAY_AUTH_MODE=token`. It takes the token from `RAY_AUTH_TOKEN`, else the file at
    `RAY_AUTH_TOKEN_PATH`, else `~/.ray/auth_token`.
    """
    env = dict(os.environ if environ is None else environ)
    env.setdefault("RAY_AUTH_MODE", "token")
    if env["RAY_AUTH_MODE"].lower() != "token" or env.get("RAY_AUTH_TOKEN"):
        return env
    path = env.get("RAY_AUTH_TOKEN_PATH")
    if path:
        if not Path(path).expanduser().is_file():
            raise SpecError(f"RAY_AUTH_TOKEN_PATH: no token file at {path}")
        return env
    if not TOKEN_FILE.is_file():
        raise SpecError(
            f"no Ray auth token: set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or copy the cluster's token to "
            f"{TOKEN_FILE} (`ray get-auth-token` on the head); RAY_AUTH_MODE=disabled only for a cluster without auth"
        )
    return env


def token_source(env: dict[str, str]) -> str:
    """Where Ray takes its auth token from in `env`: "RAY_AUTH_TOKEN", or the token file's path."""
    return "RAY_AUTH_TOKEN" if env.get("RAY_AUTH_TOKEN") else env.get("RAY_AUTH_TOKEN_PATH") or str(TOKEN_FILE)


def _flag(args: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in a raysweep command line."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def plan(spec_path: str, job_args: list[str], *, address: str | None, working_dir: str, job: str,
         tracking_uri: str | None, runtime_env: str | None, submission_id: str | None, wait: bool,
         environ: dict[str, str] | None = None) -> Submission:
    """Check a submission on this machine and build it; a one-line `SpecError` if it can't go."""
    env = os.environ if environ is None else environ
    address = address or env.get("RAY_API_SERVER_ADDRESS") or env.get("RAY_ADDRESS")
    if not address:
        raise SpecError("--address: the cluster's job API is needed, e.g. --address http://HEAD:8265 (or RAY_ADDRESS)")
    root = Path(working_dir).resolve()
    if not root.is_dir():
        raise SpecError(f"--working-dir: no such directory: {working_dir}")
    spec = Path(spec_path).resolve()
    if not spec.is_relative_to(root):
        raise SpecError(f"{spec_path}: the spec must lie inside --working-dir {root} (that directory is what the job gets)")
    sub = Submission(address=address, working_dir=root, job=job, job_args=[str(spec.relative_to(root)), *job_args],
                     submission_id=submission_id, wait=wait)
    env_file = Path(runtime_env) if runtime_env else root / RUNTIME_ENV
    if runtime_env and not env_file.is_file():
        raise SpecError(f"--runtime-env: no such file: {runtime_env}")
    sub.runtime_env = env_file if env_file.is_file() else None

    # The job runs on the head with the cluster's environment, not this one: a tracking URI
    # set here only reaches it as a flag.
    if tracking_uri is None and _flag(job_args, "--tracking-uri") is None and env.get("MLFLOW_TRACKING_URI"):
        tracking_uri = env["MLFLOW_TRACKING_URI"]
    if tracking_uri is not None:
        sub.job_args += ["--tracking-uri", tracking_uri]
    _move_credentials(sub)
    uri = tracking_uri or _flag(job_args, "--tracking-uri") or ""
    if not uri.startswith(("http://", "https://", "databricks")):
        sub.warnings.append(
            "runs go to the job's own MLflow store on the head node unless the spec names a server: "
            "give --tracking-uri http://MLFLOW:5000 to compare them in a team's MLflow"
        )
    if _flag(job_args, "--storage") is None:
        sub.warnings.append(
            "results and checkpoints go to ./raysweep_results in the job's working directory on the head: "
            "a cluster of several nodes needs --storage on shared storage (an NFS path or s3://bucket/path)"
        )
    return sub


# Credentials in the job's URIs never go on its command line: `ray job list`, the dashboard,
# the job's logs and `ps` on the head all show it. They go to the job as environment variables
# of its runtime env, in the form the libraries that use them read by themselves, and the URI
# on the command line keeps everything else:
#
# - an MLflow server's `https://user:password@host`: MLFLOW_TRACKING_USERNAME and
#   MLFLOW_TRACKING_PASSWORD, MLflow's own basic-auth settings. Chosen over passing the whole
#   URI as MLFLOW_TRACKING_URI: the job's `--tracking-uri` (and so its summary, links and
#   logged settings) stays a plain URI with no secret in it, the spec's tracking.uri keeps its
#   precedence over the environment, and a cluster that already sets these variables needs
#   nothing from the submitter.
# - an S3 storage's `?access_key=...&secret_key=...&session_token=...` (pyarrow's options):
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, which pyarrow reads when the
#   URI names none (Ray Train's workers inherit the job's runtime env too).
#
# The runtime env is readable, in the dashboard and through the job API, by whoever holds the
# cluster's Ray token, who can run code in the job and so read its environment anyway; it
# travels in a 0600 temporary file (`--runtime-env FILE`), not on the local `ray job submit`
# command line. Credentials of any other kind (a database password in a SQL tracking URI, a
# token in a query string) have no such variable: they are refused here, to be set on the
# cluster instead.
_MLFLOW_USER_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
_S3_ENV = {"access_key": "AWS_ACCESS_KEY_ID", "secret_key": "AWS_SECRET_ACCESS_KEY",
           "session_token": "AWS_SESSION_TOKEN"}


def _move_credentials(sub: Submission) -> None:
    """Take credentials out of the job's `--tracking-uri` and `--storage` into `sub.secret_env`;
    a `SpecError` for any that cannot be passed that way, or that sits in another argument."""
    args = sub.job_args
    for i, arg in enumerate(args):
        name, sep, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if not sep:  # `--flag VALUE`: the value is the next argument
            name, value = (args[i - 1], arg) if i and args[i - 1].startswith("--") else ("", arg)
        if redact_text(value) == value:  # no URL with credentials in it (`--set tracking.uri=URL` included)
            continue
        if name == "--tracking-uri":
            clean = _tracking_credentials(value, sub.secret_env)
        elif name == "--storage":
            clean = _storage_credentials(value, sub.secret_env)
        else:
            raise SpecError(f"{name or 'the job'}: {redact_text(value)} holds credentials, which would show on the job's "
                            "command line; set them on the cluster instead")
        args[i] = f"{name}={clean}" if sep else clean


def _tracking_credentials(uri: str, secret_env: dict[str, str]) -> str:
    bare, user, password, params = strip_credentials(uri)
    if not uri.startswith(("http://", "https://")) or params or not user or not password:
        # MLflow sends basic auth only with both a user and a password.
        raise SpecError(f"--tracking-uri {redact(uri)}: only an MLflow server's user:password can be passed to the "
                        "job (as MLFLOW_TRACKING_USERNAME/PASSWORD); set these credentials on the cluster instead")
    secret_env.update(zip(_MLFLOW_USER_ENV, (user, password)))
    return bare


def _storage_credentials(uri: str, secret_env: dict[str, str]) -> str:
    bare, user, _, params = strip_credentials(uri)
    unknown = sorted(set(params) - set(_S3_ENV))
    if not uri.startswith("s3://") or user is not None or unknown:
        raise SpecError(f"--storage {redact(uri)}: only S3's access_key, secret_key and session_token can be passed "
                        "to the job (as AWS_* variables); set these credentials on the cluster instead")
    secret_env.update({_S3_ENV[k]: v for k, v in params.items()})
    return bare


_CHECK = """
import sys
from ray.exceptions import AuthenticationError
from ray.job_submission import JobSubmissionClient
try:
    JobSubmissionClient(sys.argv[1]).get_version()
except AuthenticationError as exc:
    sys.exit("auth: " + str(exc).splitlines()[0])
except ConnectionError:
    sys.exit("unreachable")
"""


def check_cluster(address: str, env: dict[str, str]) -> None:
    """A `SpecError` in one line if the job API at `address` can't be reached or refuses the token.

    `ray job submit` reports both as a traceback, after uploading the working directory. The
    check runs in a child with the submitter's environment: Ray reads its auth settings once
    per process, and this one has imported Ray already.
    """
    proc = subprocess.run([sys.executable, "-c", _CHECK, address], env=env, capture_output=True, text=True,
                          timeout=120)
    if proc.returncode == 0:
        return
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    if last.startswith("auth: "):
        source = token_source(env)
        if env.get("RAY_AUTH_MODE", "").lower() != "token":
            source = f"RAY_AUTH_MODE={env.get('RAY_AUTH_MODE')}: no token sent"
        reason = last[len("auth: "):].rstrip(".")
        raise SpecError(f"--address {address}: the cluster refused this machine's Ray auth token ({source}): {reason}")
    if last == "unreachable":
        raise SpecError(f"--address: no Ray job API answers at {address} (the head's dashboard port, 8265 by default)")
    raise SpecError(f"--address {address}: cannot check the Ray job API: {last}")


def run(sub: Submission, env: dict[str, str], echo=print) -> int:
    """Run the `ray job submit` call; its exit status (1 when the job ends FAILED)."""
    # Ray's CLI lets RAY_ADDRESS in the environment win over --address: make ours win.
    env = {**env, "RAY_API_SERVER_ADDRESS": sub.address}
    check_cluster(sub.address, env)
    for warning in sub.warnings:
        print(f"raysweep: warning: {warning}", file=sys.stderr)
    try:
        with sub.runtime_env_file() as runtime_env_file:
            cmd = sub.command(runtime_env_file)
            echo(f"$ {shlex.join(cmd)}")
            return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:  # Ray stops following the logs; the job goes on
        print(f"raysweep: stopped following; the job goes on (ray job logs --address {sub.address} -f ...)",
              file=sys.stderr)
        return 130
