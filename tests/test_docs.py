"""The docs: generated blocks current, relative links resolving, shown commands parsing.

Starts neither Ray nor MLflow: the generator reads spec.py's models and benchmarks/results/,
and commands go through raysweep's argument parser only (parsed, never run).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# Repository paths the docs name in their text, e.g. `search_spaces/digits_mlp.yaml`.
REPO_PATH = re.compile(r"(?<![\w./-])((?:search_spaces|examples|cluster|jobs|benchmarks|tests|docs)/[\w./-]*\w)")


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def prose(text: str) -> str:
    """`text` without fenced code blocks and inline code spans (where links are not links)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation gone, '-' for spaces."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", path.read_text()), re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def test_generated_blocks_are_current():
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = generate.main(["--check"])
    assert code == 0, out.getvalue()


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_relative_links_resolve(doc):
    broken = []
    for target in LINK.findall(prose(doc.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {rel(dest)}")
    assert not broken, f"{rel(doc)}: " + "; ".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_repository_paths_named_exist(doc):
    missing = sorted({p for p in REPO_PATH.findall(doc.read_text()) if not (ROOT / p).exists()})
    assert not missing, f"{rel(doc)} names paths that do not exist: {', '.join(missing)}"


def _raysweep_argv(command: list[str]) -> list[str] | None:
    """The arguments of `raysweep ...`, or of `python jobs/search.py ...` (`raysweep search`,
    also inside `ray job submit ... -- python jobs/search.py ...`); None for other commands."""
    if command and Path(command[0]).name == "raysweep":
        return command[1:]
    for i, token in enumerate(command):
        for script in ("search", "train"):
            if token == f"jobs/{script}.py" and i > 0 and Path(command[i - 1]).name.startswith("python"):
                return [script, *command[i + 1:]]
    return None


def raysweep_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every `raysweep ...` command in the docs' ```bash blocks."""
    found = []
    for doc in DOCS:
        for lang, body in FENCE.findall(doc.read_text()):
            if lang != "bash":
                continue
            for line in body.replace("\\\n", " ").splitlines():
                lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
                lexer.whitespace_split = True
                command: list[str] = []
                for token in [*lexer, ";"]:
                    if token and set(token) <= set("&|;()<>"):  # a control operator ends a command
                        while command and re.fullmatch(r"\w+=.*", command[0]):  # VAR=value cmd
                            command.pop(0)
                        argv = _raysweep_argv(command)
                        if argv is not None:
                            found.append((f"{rel(doc)}: {' '.join(line.split())}", argv))
                        command = []
                    else:
                        command.append(token)
    return found


COMMANDS = raysweep_commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 10, COMMANDS  # the extraction itself works


@pytest.mark.parametrize("argv", [argv for _, argv in COMMANDS], ids=[where for where, _ in COMMANDS])
def test_command_parses(argv):
    from raysweep.cli import build_parser

    parser = build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args, extra = parser.parse_known_args(argv)
            if args.command == "submit":  # its other flags go to the job's search or train
                parser.parse_args(["train" if args.train else "search", args.spec, *extra])
            elif extra:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:
        pytest.fail(f"raysweep {shlex.join(argv)}: exit {exc.code}: {err.getvalue().strip()}")


def test_own_task_guide_shows_the_shipped_example():
    guide = (ROOT / "docs" / "guides" / "own-task.md").read_text()
    example = (ROOT / "examples" / "wine_task.py").read_text()
    blocks = [body for lang, body in FENCE.findall(guide) if lang == "python"]
    assert example in blocks, "docs/guides/own-task.md must show examples/wine_task.py verbatim"
