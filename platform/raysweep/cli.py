"""`raysweep search | train | submit | report | sync | validate | ui`.

Input errors (a bad spec, override or task) print one line and exit 2, before Ray starts.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from .heap import heavy_imports
from .jobenv import RAY_JOB_ENV, keep_working_dir, working_dir
from .redact import redact, redact_data, redact_text, spec_yaml, write_private
from .signals import STOPS, received
from .streams import outliving_readers
from .errors import SpecError
from .spec import Spec, load_spec, parse_yaml
from .storage import check as check_storage
from .tracking.schema import create_sqlite_store
from .tracking.uri import UI_PORT, check_tracking_uri, resolve_tracking_uri, server_env

EXIT_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like a spec error
        self.exit(EXIT_INPUT, f"raysweep: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:  # argparse would name this function in its message
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {value}")
    return value


def _samples(text: str) -> str:
    """`N` or `+N` (N more trials, with --resume), kept as text."""
    digits = text.removeprefix("+")
    # ASCII only: str.isdigit() also takes '３', '٣' and '²', which int() reads or chokes on.
    if not (digits.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(f"invalid value: {text!r} (a number of trials, or +N with --resume)")
    return text


def _more_samples(args) -> int | None:
    if args.samples is None or not args.samples.startswith("+"):
        return None
    if not args.resume:
        raise SpecError(f"--samples {args.samples}: adding trials to a search needs --resume")
    if int(args.samples) < 1:
        raise SpecError(f"--samples {args.samples}: add at least one trial")
    return int(args.samples)


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="search space YAML (see search_spaces/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a spec field, e.g. --set search.num_samples=8 (repeatable)")


def _run_args(p: argparse.ArgumentParser, tracking: str, summary: str, verbose: str) -> None:
    """The flags `search` and `train` share: where results go, and how much is printed."""
    p.add_argument("--tracking-uri", help=tracking)
    p.add_argument("--storage", help="Ray results and checkpoints: a directory or s3:// URI (./raysweep_results)")
    p.add_argument("--summary-json", metavar="PATH", help=summary)
    p.add_argument("--verbose", action="store_true", help=verbose)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="raysweep", description="Hyperparameter search for PyTorch on Ray, tracked in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("search", help="run a search: Optuna sampling, ASHA early stopping, MLflow tracking")
    _spec_args(s)
    s.add_argument("--samples", type=_samples, metavar="N|+N",
                   help="number of trials (search.num_samples); +N with --resume: N more trials")
    s.add_argument("--resume", action="store_true",
                   help="continue the search of this name and --storage whose driver stopped; with --samples +N, extend it")
    s.add_argument("--name", help="search name: MLflow experiment and parent run (spec's name)")
    _run_args(s, "MLflow tracking URI (default: spec, $MLFLOW_TRACKING_URI, sqlite:///mlflow.db)",
              "write the search summary as JSON", "Ray Tune's full trial tables instead of the progress line")

    t = sub.add_parser("train", help="one training run at a fixed configuration (e.g. a search's winner)")
    t.add_argument("spec", help="search space YAML (see search_spaces/)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a hyperparameter (--set lr=0.003; unset ones take the middle of their range) "
                        "or a spec field (--set max_epochs=50); repeatable")
    t.add_argument("--workers", type=int, metavar="N", help="data-parallel workers (resources.workers_per_trial)")
    t.add_argument("--gpus-per-worker", type=float, metavar="G", help="GPUs per worker (resources.gpus_per_worker)")
    t.add_argument("--from-search", nargs="?", const="", metavar="NAME_OR_PARENT_RUN_ID",
                   help="start from the best configuration of a search in MLflow: its experiment's name (default: "
                        "the spec's) or parent run id; --set still overrides any of it")
    _run_args(t, "MLflow tracking URI (as for search)", "write the run's summary as JSON",
              "Ray's own output instead of a line per epoch")

    r = sub.add_parser("report", help="a search's leaderboard, counts and cost, read from MLflow (finished or running)")
    r.add_argument("search", metavar="NAME_OR_PARENT_RUN_ID", help="experiment name (its latest search) or parent run id")
    r.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, sqlite:///mlflow.db)")
    r.add_argument("--top", type=_positive_int, default=10, metavar="K", help="trials shown (10)")
    r.add_argument("--json", action="store_true", help="print the report as JSON instead")

    j = sub.add_parser(
        "submit", help="run a search (or --train) on a Ray cluster through `ray job submit`, following its logs",
        description="Checks the spec here, then runs `ray job submit --working-dir DIR --runtime-env "
                    "cluster/runtime_env.yaml -- python jobs/search.py SPEC [flags]`. Any other flag is one of "
                    "`raysweep search` (or `raysweep train` with --train) and goes to the job.",
    )
    j.add_argument("spec", help="search space YAML, inside the working directory")
    j.add_argument("--address", help="the cluster's job API, e.g. http://HEAD:8265 (default: $RAY_ADDRESS)")
    j.add_argument("--train", action="store_true", help="submit one training run (jobs/train.py) instead of a search")
    j.add_argument("--working-dir", default=".", metavar="DIR", help="directory shipped to the job (.)")
    j.add_argument("--runtime-env", metavar="YAML", help="runtime env (default: DIR/cluster/runtime_env.yaml if present)")
    j.add_argument("--tracking-uri", help="MLflow server the job logs to (default: $MLFLOW_TRACKING_URI here)")
    j.add_argument("--submission-id", metavar="ID", help="the job's id (default: Ray's raysubmit_...)")
    j.add_argument("--no-wait", action="store_true", help="print the submission id and return; don't follow the logs")
    j.add_argument("--dry-run", action="store_true", help="print the `ray job submit` command instead of running it")

    y = sub.add_parser("sync", help="send what a search spooled on disk while its MLflow server was unreachable")
    y.add_argument("name", metavar="NAME", help="the search's name")
    y.add_argument("--storage", help="the search's --storage: a directory or s3:// URI (./raysweep_results)")
    y.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one the search logged to)")

    v = sub.add_parser("validate", help="check a spec and print it resolved; starts nothing")
    _spec_args(v)

    u = sub.add_parser("ui", help="open the MLflow UI on the store searches log to (127.0.0.1)")
    u.add_argument("--tracking-uri", help="store to show (default: as for search)")
    u.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    u.add_argument("--port", type=_port, default=UI_PORT)
    return parser


def _load(args) -> Spec:
    overrides = list(args.overrides)
    samples = getattr(args, "samples", None)
    if samples is not None and not samples.startswith("+"):
        overrides.append(f"search.num_samples={samples}")
    if getattr(args, "name", None) is not None:  # `--name ''` is an error, not the spec's name
        # Quoted: a name is text, not YAML (`--name 2024` is no number, `--name yes` no boolean).
        overrides.append(f"name={json.dumps(args.name)}")
    return load_spec(args.spec, overrides)


def _preflight(spec: Spec, args, train_params: dict | None = None) -> None:
    """What `search` and `train` would otherwise find out only once Ray runs (or after MLflow's
    minutes of retries): the task, the tracking store and where the summary goes."""
    from .files import check_data
    from .tasks import check_task_params, check_train_params, task_gaps

    check_task_params(spec)
    for line in task_gaps(spec):  # not an error: the run is still worth having
        print(f"raysweep: note: {line}", file=sys.stderr)
    if train_params is not None:  # `--set dropout=1.5`: the values it trains with, in the task's ranges
        check_train_params(spec, train_params)
    if spec.data is not None:  # before Ray: a bad path is one line, not a failed worker group
        check_data(spec.data)
    if spec.tracking.enabled:
        check_tracking_uri(args.tracking_uri, spec.tracking.uri)
    if args.summary_json:
        _check_output_file("--summary-json", Path(args.summary_json).resolve())
    local_storage = Path(args.storage) if args.storage and "://" not in args.storage else None
    if local_storage is not None and local_storage.exists() and not local_storage.is_dir():
        raise SpecError(f"--storage: {args.storage} is a file, not a directory")
    if args.storage:
        check_storage(args.storage)


def _check_output_file(flag: str, path: Path) -> None:
    """A file written after the run: a bad path would lose a finished run's summary."""
    if path.is_dir():
        raise SpecError(f"{flag}: cannot write {path}: it is a directory")
    if path.parent.exists() and not path.parent.is_dir():
        raise SpecError(f"{flag}: cannot write {path}: {path.parent} is a file, not a directory")
    if not path.parent.is_dir():
        raise SpecError(f"{flag}: cannot write {path}: directory {path.parent} does not exist")
    problem = _cannot_write(path)
    if problem:
        raise SpecError(f"{flag}: cannot write {path}: {problem}")


def _cannot_write(path: Path) -> str | None:
    """Why `path` cannot be written, or None. Tried, not asked of os.access: as root, that says
    yes to a read-only file, and to a new file under /proc; so is a read-only file system."""
    existed = path.exists()
    if existed and not path.is_file():  # /dev/stdout, a FIFO (opening one may block until read)
        return None if os.access(path, os.W_OK) else "permission denied"
    try:  # as the summary is written (redact.write_private), but appending: nothing is lost
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    except OSError as exc:
        return (exc.strerror or exc.__class__.__name__).lower()
    if not existed:
        path.unlink(missing_ok=True)
    return None


def _run(what: str, args, console, call):
    """Run a search or training; write its summary and show its test metrics.

    Returns the result, or the exit code when it failed (1) or Ctrl-C stopped it (130; SIGTERM: 143; SIGHUP: 129).
    """
    from .errors import Interrupted, RunFailed

    try:
        result = call()
    except RunFailed as exc:
        print(f"raysweep: {what} failed: {redact_text(str(exc), args.tracking_uri)}", file=sys.stderr)  # an MLflow error quotes its URL
        _write_summary(args, getattr(exc, "result", None))  # what a failed search did finish
        return 1
    except Interrupted as exc:
        _write_summary(args, exc.result)
        print(f"raysweep: {what} {exc}; {_continue_hint(what, args)}", file=sys.stderr)
        return 128 + exc.signum  # 130 after a Ctrl-C, 143 after a SIGTERM, 129 after a SIGHUP, as shells report them
    _write_summary(args, result)
    if result.test_metrics:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in result.test_metrics.items())
        console.print(f"{'best trial' if what == 'search' else 'model'} on the test split: {shown}")
    return result


def _continue_hint(what: str, args) -> str:
    if what != "search":
        return "nothing to resume: run it again to train from the start"
    samples = args.samples if args.samples and not args.samples.startswith("+") else None
    flags = [("--name", args.name), ("--storage", args.storage), ("--samples", samples),
             *(("--set", o) for o in args.overrides)]
    extra = [part for flag, value in flags if value for part in (flag, value)]
    # The driver of a Ray job (`raysweep submit`, `ray job stop`): resumed as a job too, not by a
    # `raysweep search` in the user's shell, which would start a Ray of its own there.
    in_job = RAY_JOB_ENV in os.environ
    # The tracking URI (and the cluster's address) are not repeated: the URI may hold credentials.
    same = [*(["--address"] if in_job else []), *(["--tracking-uri"] if args.tracking_uri else [])]
    same_flags = f" with the same {' and '.join(same)}" if same else ""
    command = ["raysweep", "submit" if in_job else "search", args.spec, "--resume", *extra]
    # redact_text: a --storage URI or a --set tracking.uri=... may hold credentials too.
    return "continue it with: " + redact_text(shlex.join(command)) + same_flags


def _write_summary(args, result) -> None:
    if args.summary_json and result is not None:
        # Credentials in any URI it holds (tracking_uri, an error quoting one) redacted; 0600.
        summary = redact_data(result.to_dict(), args.tracking_uri, getattr(result, "tracking_uri", None))
        write_private(args.summary_json, json.dumps(summary, indent=2, default=str) + "\n")


def cmd_validate(args) -> int:
    spec = _load(args)
    from .files import check_data
    from .tasks import check_task_params

    check_task_params(spec)
    if spec.data is not None:
        check_data(spec.data)
    sys.stdout.write(spec_yaml(spec))  # tracking.uri and data: URIs with their credentials redacted
    return 0


def cmd_search(args) -> int:
    spec = _load(args)
    more = _more_samples(args)
    _preflight(spec, args)
    # Imported here so that `validate` and input errors don't pay for Ray and MLflow imports.
    from .console import make_console

    with heavy_imports():
        from .search import run_search
    console = make_console()
    result = _run(
        "search", args, console,
        lambda: run_search(spec, storage=args.storage, tracking_uri=args.tracking_uri, verbose=args.verbose,
                           console=console, resume=args.resume, more_samples=more, shutdown_ray=True),
    )
    if isinstance(result, int):
        return result
    if result.ui_url:
        console.print(f"MLflow runs: {result.ui_url}{_ui_hint(result.tracking_uri)}", highlight=False, soft_wrap=True)
    return 0


def _ui_hint(uri: str) -> str:
    """How to open a local store's runs: `raysweep ui`, with the store where it is not the one
    `raysweep ui` serves by default from here (a --tracking-uri, the spec's, $MLFLOW_TRACKING_URI)."""
    if uri.startswith(("http://", "https://")):
        return ""
    flag = "" if uri == resolve_tracking_uri(None) else f" --tracking-uri {shlex.quote(uri)}"
    return f"  (start the UI with: raysweep ui{flag})"


def _train_spec(args, lookup: bool = True) -> tuple[Spec, dict]:
    """The spec and the hyperparameters of `raysweep train`.

    `--set lr=0.003` names a hyperparameter; dotted keys and spec fields change the spec. With
    `--from-search`, the search's best configuration comes first (read from MLflow unless
    `lookup` is off: `submit` checks flags here, and its job reads the cluster's MLflow).
    """
    values, overrides = {}, []
    for assignment in args.overrides:
        key, sep, text = assignment.partition("=")
        if sep and "." not in key and key.strip() not in Spec.model_fields:
            values[key.strip()] = parse_yaml(text, source=f"--set {key.strip()}")
        else:
            overrides.append(assignment)
    if args.workers is not None:
        overrides.append(f"resources.workers_per_trial={args.workers}")
    if args.gpus_per_worker is not None:
        overrides.append(f"resources.gpus_per_worker={args.gpus_per_worker}")
    from .train import train_params

    spec = load_spec(args.spec, overrides)
    if lookup and getattr(args, "from_search", None) is not None:
        from .report import best_configuration

        args.from_search_run, best, notes = best_configuration(spec, args.from_search, args.tracking_uri, tuple(values))
        for line in notes:
            print(f"raysweep: note: {line}", file=sys.stderr)
        for name in sorted(set(spec.space) - set(best) - set(values)):  # the space grew since
            print(f"raysweep: note: {name} is not in the search's best configuration: it takes the middle "
                  "of its range (or give it with --set)", file=sys.stderr)
        values = {**{k: v for k, v in best.items() if k in spec.space}, **values}
    return spec, train_params(spec, values)


def cmd_train(args) -> int:
    spec, params = _train_spec(args)
    from .console import make_console
    with heavy_imports():
        from .train import run_training

    _preflight(spec, args, params)
    console = make_console()
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
    source = getattr(args, "from_search_run", None)
    if source:
        console.print(f"the best configuration of search run {source} (--set on top)", highlight=False)
    console.print(f"training {spec.task} for {spec.max_epochs} epochs on "
                  f"{spec.resources.workers_per_trial} worker(s): {shown}", highlight=False)
    result = _run(
        "training", args, console,
        lambda: run_training(spec, params, storage=args.storage, tracking_uri=args.tracking_uri,
                             verbose=args.verbose, console=console, shutdown_ray=True,
                             from_search=getattr(args, "from_search_run", None)),
    )
    if isinstance(result, int):
        return result
    if result.model_uri:
        console.print(f"model: {result.model_uri}  (mlflow.pytorch.load_model)", highlight=False)
    return 0


def cmd_submit(args, job_args: list[str]) -> int:
    from .submit import client_env, plan, run

    job = "train" if args.train else "search"
    # The job's flags are checked here, as `raysweep search|train` would, before anything is sent.
    job_ns = build_parser().parse_args([job, args.spec, *job_args])
    if args.train:
        _train_spec(job_ns, lookup=False)
    else:
        _load(job_ns)
    submission = plan(args.spec, job_args, address=args.address, working_dir=args.working_dir, job=job,
                      tracking_uri=args.tracking_uri, runtime_env=args.runtime_env,
                      submission_id=args.submission_id, wait=not args.no_wait)
    if args.dry_run:
        print(shlex.join(submission.command()))
        return 0
    return run(submission, client_env())


def cmd_report(args) -> int:
    from mlflow import MlflowClient

    from .console import make_console
    from .report import build_report, print_report

    uri = check_tracking_uri(args.tracking_uri, existing=True)
    report = build_report(MlflowClient(uri), args.search)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_report(report, make_console(), top=args.top)
    return 0


def cmd_sync(args) -> int:
    from .tracking.sync import sync

    return sync(args.name, args.storage, args.tracking_uri)


def _check_listen(host: str, port: int) -> None:
    """That the UI can listen on host:port, before it says where it is: MLflow's server logs
    'Address already in use' and exits 0, after raysweep printed the link (to whatever else
    answers on that port). SO_REUSEADDR as uvicorn sets it: a port in TIME_WAIT is free."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except socket.gaierror as exc:
        raise SpecError(f"--host: cannot listen on {host!r}: {exc.strerror.lower()}") from None
    except OSError as exc:
        busy = f" (another MLflow UI? pick a free one with --port {port + 1})" if exc.errno == errno.EADDRINUSE else ""
        raise SpecError(f"--port: cannot listen on {host}:{port}: {os.strerror(exc.errno).lower()}{busy}") from None


def cmd_ui(args) -> int:
    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):
        print(f"{redact(uri)} is already a tracking server: open it in a browser", file=sys.stderr)
        return EXIT_INPUT
    _check_listen(args.host, args.port)
    print(f"MLflow UI on {redact(uri)} at http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    create_sqlite_store(uri)  # a new store's schema without MLflow's migrations (tracking/schema.py)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--host", args.host, "--port", str(args.port)]
    # In a process group of its own, stopped as one (`_serve`): `mlflow ui` runs uvicorn and its
    # workers as children, which a SIGTERM to this process alone left serving, the port taken.
    return _serve(subprocess.Popen(cmd, env={**server_env(), "MLFLOW_TRACKING_URI": uri}, start_new_session=True))


def _serve(server: subprocess.Popen) -> int:
    """Wait for the MLflow UI's process; on Ctrl-C, SIGTERM or SIGHUP (its terminal closed: the
    server, in a session of its own, would have served on) stop its whole group (with a Ctrl-C,
    as the terminal would have) and exit 0."""
    def terminated(signum, frame):
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, terminated) for signum in STOPS}
    try:
        return server.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "submit":  # only `submit` passes flags on (to its job)
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # User tasks ("my_pkg.tasks:train") import from the working directory, as with `python -m`.
    # Ray hands the driver's sys.path to local workers, so trials find them too.
    cwd = working_dir()  # under `ray job submit` the directory may already have been recreated
    keep_working_dir()  # ... and will be again as trials start: a Ray job's driver follows it
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    handler = {
        "search": cmd_search, "train": cmd_train, "report": cmd_report, "validate": cmd_validate, "ui": cmd_ui,
        "submit": lambda a: cmd_submit(a, extra),
        "sync": cmd_sync,
    }[args.command]
    with outliving_readers():  # `| head`, a pager quit, a closed terminal: the run goes on (streams.py)
        return _handle(handler, args)


def _handle(handler, args) -> int:
    try:
        return handler(args)
    except SpecError as exc:
        # One line even when it quotes a user's multi-line exception (a task that fails to import).
        # No credential of a URI it quotes (a tracking or storage URI given in full).
        print(f"raysweep: error: {' '.join(redact_text(str(exc), getattr(args, 'tracking_uri', None)).split())}",
              file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:  # before the run began, or a second Ctrl-C: no summary
        signum = received()  # a SIGTERM or SIGHUP taken as a Ctrl-C (interrupt.py): 143, 129, as shells report them
        print("raysweep: interrupted" + ("" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"),
              file=sys.stderr)
        return 128 + signum
    finally:
        gc.freeze()  # the process ends now: its final collection would walk everything once more


if __name__ == "__main__":
    sys.exit(main())
