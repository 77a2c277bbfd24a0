"""Every Python block and every command line of README.md and docs/*.md runs as written, each as its own test.

- A ```python block runs as a script; each line of a ```bash block is one command (`lld-probe ...`,
  `python -m lld_probe ...`, `torchrun ... -m lld_probe ...`).
- Each runs in a fresh folder, so relative `runs/...` paths land there; `data/` in it is a link to the
  repository's, so the shipped question files read as from the repository. An example that mentions
  `runs/NAME` runs on a copy of what the nearest earlier example of the same page that mentions
  `runs/NAME` left (e.g. `load("runs/x")` after a trainer with `output_dir="runs/x"`); examples that
  share no run folder are independent, so one failure does not hide the others.
- An example that cannot run here says why in a comment on the line before its block:
  `<!-- not run: needs a GPU -->`; it is reported as skipped with that reason (`pytest -rs`).
  `python tests/test_docs.py` lists every example and what the tests do with it.
- Code is fenced: a 4-space indented block (which none of this would see) fails `test_code_is_fenced`.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<reason>.*?)\s*-->$")
FENCE = re.compile(r"^```(?P<language>[\w-]*)\s*$")
RUN_FOLDER = re.compile(r"\bruns/[A-Za-z0-9_.-]+")
CLI = ("lld-probe ", "python -m lld_probe ", ".venv/bin/lld-probe ")
TORCHRUN = "torchrun "


@dataclass
class Example:
    page: str           # README.md, docs/x.md
    line: int           # 1-based line of the code (the block's first line, or the command's)
    kind: str           # "python" | "command"
    code: str
    skip_reason: str | None = None
    needs: list = field(default_factory=list)       # ids of earlier examples whose run folders it reads

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def folders(self) -> set:
        return set(RUN_FOLDER.findall(self.code))


def _blocks(path: Path):
    """(language, first code line number, code lines, marker reason or None) for each fenced block."""
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index].strip())
        if not opening or not opening.group("language"):
            index += 1
            continue
        before = next((lines[i].strip() for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marker = NOT_RUN.match(before)
        if before.startswith("<!--") and not marker:
            raise ValueError(f"{path.name}:{index}: unknown marker {before!r} (expected '<!-- not run: WHY -->')")
        end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
        yield opening.group("language"), index + 2, lines[index + 1:end], marker.group("reason") if marker else None
        index = end + 1


def _commands(first_line: int, code: list):
    """(line number, command) per command of a bash block; `\\` continuations joined, comments dropped."""
    pending, start = "", None
    for number, text in enumerate(code, first_line):
        stripped = text.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        start = number if not pending else start
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        yield start, pending + stripped
        pending = ""


def collect_examples() -> list:
    examples = []
    for path in PAGES:
        page = str(path.relative_to(ROOT))
        runnable = []                                   # earlier runnable examples of this page
        for language, first_line, code, reason in _blocks(path):
            if language == "python":
                items = [Example(page, first_line, "python", "\n".join(code), reason)]
            elif language in ("bash", "sh", "shell", "console"):
                items = [Example(page, line, "command", command, reason) for line, command in _commands(first_line, code)]
            else:
                continue
            for example in items:
                if example.skip_reason is None:
                    for folder in sorted(example.folders):
                        producer = next((e for e in reversed(runnable) if folder in e.folders), None)
                        if producer is not None and producer.id not in example.needs:
                            example.needs.append(producer.id)
                    runnable.append(example)
                examples.append(example)
    return examples


EXAMPLES = collect_examples()
BY_ID = {example.id: example for example in EXAMPLES}


def _marks(example: Example) -> list:
    marks = [pytest.mark.docs, pytest.mark.integration]
    if example.code.startswith(TORCHRUN):
        marks.append(pytest.mark.distributed)
    return marks


def _argv(command: str) -> list:
    """The command's arguments after the program, with `*` patterns expanded as a shell would."""
    words = shlex.split(command, comments=True)
    args = []
    for word in words:
        matches = sorted(glob.glob(word)) if any(ch in word for ch in "*?[") else []
        args.extend(matches or [word])
    return args


def _run_command(command: str, folder: Path) -> None:
    if command.startswith(TORCHRUN):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", *_argv(command)[1:]], cwd=folder,
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return
    program = next((p for p in CLI if command.startswith(p)), None)
    if program is None:
        raise AssertionError(f"not an lld-probe command: {command!r}; run it here or mark its block "
                             "'<!-- not run: WHY -->'")
    from lld_probe.cli import main
    try:
        status = main(_argv(command)[len(program.split()):])
    except SystemExit as stop:                      # argparse: --help exits 0, a bad flag exits 2
        status = stop.code or 0
    assert status == 0, f"{command}: exit {status}"


def _run(example: Example, folder: Path) -> None:
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        if example.kind == "python":
            exec(compile(example.code, example.id, "exec"), {"__name__": "__main__"})
        else:
            _run_command(example.code, folder)
    finally:
        os.chdir(cwd)


class _States:
    """The folder each example leaves behind (run once per session), and each failure, for the examples after it."""

    def __init__(self, factory):
        self.factory, self.folders, self.failures = factory, {}, {}

    def after(self, example_id: str) -> Path:
        if example_id in self.failures:
            raise self.failures[example_id]
        if example_id in self.folders:
            return self.folders[example_id]
        example = BY_ID[example_id]
        folder = self.factory.mktemp(re.sub(r"\W+", "_", example_id))
        (folder / "data").symlink_to(ROOT / "data")         # the shipped question files, as from the repository
        for needed in example.needs:
            try:
                source = self.after(needed)
                shutil.copytree(source, folder, dirs_exist_ok=True, symlinks=True,
                                ignore=lambda at, names: ["data"] if Path(at) == source else [])
            except Exception as error:
                failure = RuntimeError(f"{example_id} needs the run folder that {needed} writes, "
                                       f"and {needed} failed: {error}")
                self.failures[example_id] = failure
                raise failure from None
        try:
            _run(example, folder)
        except BaseException as error:
            self.failures[example_id] = error
            raise
        self.folders[example_id] = folder
        return folder


@pytest.fixture(scope="session")
def states(tmp_path_factory):
    return _States(tmp_path_factory)


@pytest.mark.parametrize("example_id", [pytest.param(e.id, id=e.id, marks=_marks(e)) for e in EXAMPLES])
def test_example_runs(example_id, states, capsys):
    example = BY_ID[example_id]
    if example.skip_reason is not None:
        pytest.skip(f"{example.id} not run: {example.skip_reason}")
    states.after(example_id)


def test_every_example_is_found():
    """The parser finds the README's examples, and every not-run marker gives its reason."""
    readme = [e for e in EXAMPLES if e.page == "README.md"]
    assert sum(e.kind == "python" for e in readme) >= 3
    assert sum(e.kind == "command" and e.skip_reason is None for e in readme) >= 3
    assert all(e.skip_reason for e in EXAMPLES if e.skip_reason is not None)


LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(page):
    """Every relative link and image of the page names a file or folder of the repository."""
    targets = [m.group("target") for m in LINK.finditer(page.read_text()) if "://" not in m.group("target")]
    missing = [target for target in targets if not (page.parent / target).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"


LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")


def indented_code_lines(text: str) -> list:
    """Line numbers where a 4-space indented code block starts (after a blank line, outside a fence and not in a
    list item's continuation): code these tests would not see."""
    lines, fenced, found = text.splitlines(), False, []
    for index, line in enumerate(lines):
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or index == 0 or not line.startswith("    ") or not line.strip() or lines[index - 1].strip():
            continue
        above = index - 1                   # back to the paragraph this block follows
        while above >= 0 and (not lines[above].strip() or lines[above].startswith(" ")):
            above -= 1
        if above < 0 or not LIST_ITEM.match(lines[above]):
            found.append(index + 1)
    return found


def test_indented_code_lines_are_found():
    assert indented_code_lines("Run:\n\n    lld-probe report runs/x\n") == [3]
    assert indented_code_lines("- an item\n\n    its second paragraph\n") == []
    assert indented_code_lines("```bash\n\n    lld-probe report runs/x\n```\n") == []


@pytest.mark.parametrize("page", PAGES, ids=lambda path: str(path.relative_to(ROOT)))
def test_code_is_fenced(page):
    """Every example is a fenced block (run, or marked not run); an indented block would go unchecked."""
    lines = indented_code_lines(page.read_text())
    assert not lines, f"{page.name}: indented code at lines {lines}: fence it (```bash / ```python)"


if __name__ == "__main__":
    for example in EXAMPLES:
        status = f"not run: {example.skip_reason}" if example.skip_reason else "runs"
        after = f" (after {', '.join(example.needs)})" if example.needs else ""
        print(f"{example.id:24} {example.kind:8} {status}{after}")
