"""Find the runnable code in README.md and docs/**/*.md, and run it (tests/test_docs_examples.py).

What counts as code: every fenced block must name its language. ``python``/``py`` blocks
are Python; ``bash``/``sh``/``shell``/``console``/``shell-session`` blocks are shell
commands; ``text``, ``json``, ``jsonl``, ``toml``, ``yaml``, ``math`` (output, data, file
contents, formulas) are not code. A fence without a language is an error, so a block of
commands cannot hide as plain text.

A shell block whose lines start with ``$ `` is a console transcript: the ``$`` lines (and
their ``\\`` continuations) are the commands, the other lines are output that must appear
in what the commands print (``...`` stands for lines left out). Any other shell block is a
script, run as a whole.

Directives: an HTML comment right before a fence (blank lines between are allowed), e.g.
``<!-- docs-test: sub="--set a=1" with="--set a=2" -->``, of ``key="value"`` pairs:

- ``skip="reason"``: not run; the reason is required and shown in the test report.
- ``sub="old" with="new"`` (repeatable): replace text in the block before running it, e.g.
  a short form of a long command; ``old`` must occur in the block (so it cannot drift).
- ``setup="name[:arg]"``: run a named setup from :data:`SETUPS` first (e.g. write a tiny
  Hugging Face checkpoint where a page says ``path/to/checkpoint``).
- ``save="path"``: also write the block to that file in the page's working directory
  (a page that says "``# config.py``" and later runs ``splice run config.py``).
- ``file="repo/path"``: the block is an excerpt of that repository file, verbatim (checked);
  it is not run on its own: the file it shows is the code that runs (the file's own tests,
  and the page's later blocks that import it).
- ``cwd="checkout"``: run the shell block in a copy of the repository's tracked files
  (commands a page runs "from the root of a splice checkout"), not in the empty page folder.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON_LANGS = {"python", "py"}
SHELL_LANGS = {"bash", "sh", "shell", "console", "shell-session"}
NOT_CODE_LANGS = {"text", "json", "jsonl", "toml", "yaml", "math", "markdown"}
DIRECTIVE_KEYS = {"skip", "sub", "with", "setup", "save", "file", "cwd"}

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_DIRECTIVE = re.compile(r"<!--\s*docs-test:(?P<body>.*?)-->", re.S)


class DocsTestError(ValueError):
    """A page's fences or docs-test directives are malformed (names the page and line)."""


@dataclass(frozen=True)
class Block:
    """One fenced code block. ``line``: 1-based line of its first code line."""

    page: str  # path relative to the repository root
    line: int
    lang: str  # "python" or "shell"
    code: str
    heading: str = ""
    skip: str | None = None
    subs: tuple[tuple[str, str], ...] = ()
    setup: tuple[str, ...] = ()
    save: str | None = None
    file: str | None = None
    cwd: str | None = None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    def runnable_code(self) -> str:
        """The code with every ``sub`` applied; an ``old`` text that is not there is an error."""
        code = self.code
        for old, new in self.subs:
            if old not in code:
                raise DocsTestError(f"{self.id}: docs-test sub={old!r} is not in the block")
            code = code.replace(old, new)
        return code


def pages(root: Path = REPO) -> list[Path]:
    """README.md and every Markdown page under docs/, in a stable order."""
    found = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return [p for p in found if p.is_file()]


def _parse_directive(body: str, where: str) -> dict[str, object]:
    try:
        tokens = shlex.split(body)
    except ValueError as e:
        raise DocsTestError(f"{where}: docs-test directive does not parse: {e}") from None
    out: dict[str, object] = {"subs": []}
    pending_sub: str | None = None
    for tok in tokens:
        key, eq, value = tok.partition("=")
        if key not in DIRECTIVE_KEYS:
            raise DocsTestError(
                f"{where}: unknown docs-test key {key!r} (known: {sorted(DIRECTIVE_KEYS)})"
            )
        if not eq or not value.strip():
            hint = ' (skip="why it cannot run here")' if key == "skip" else ""
            raise DocsTestError(f"{where}: docs-test {key} needs a non-empty value{hint}")
        if key == "sub":
            if pending_sub is not None:
                raise DocsTestError(f"{where}: docs-test sub={pending_sub!r} has no with=")
            pending_sub = value
        elif key == "with":
            if pending_sub is None:
                raise DocsTestError(f"{where}: docs-test with= without a sub= before it")
            out["subs"].append((pending_sub, value))  # type: ignore[attr-defined]
            pending_sub = None
        elif key == "setup":
            out.setdefault("setup", []).append(value)  # type: ignore[attr-defined]
        elif key in out:
            raise DocsTestError(f"{where}: docs-test {key} given twice")
        else:
            out[key] = value
    if pending_sub is not None:
        raise DocsTestError(f"{where}: docs-test sub={pending_sub!r} has no with=")
    if out.get("cwd") not in (None, "checkout"):
        raise DocsTestError(f"{where}: docs-test cwd must be 'checkout', not {out['cwd']!r}")
    for name in out.get("setup", []):  # type: ignore[attr-defined]
        if name.partition(":")[0] not in SETUPS:
            raise DocsTestError(
                f"{where}: unknown docs-test setup {name!r} (known: {sorted(SETUPS)})"
            )
    return out


def extract(text: str, page: str) -> list[Block]:
    """Every Python and shell block of one Markdown text, with its directives, in order.

    Raises DocsTestError for a fence without a language, an unknown language, an unclosed
    fence, or a malformed / dangling directive.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    heading = ""
    directive: tuple[dict[str, object], int] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("<!--") and "docs-test:" in line:
            # a directive may span lines: gather up to its closing -->
            j = i
            while "-->" not in lines[j]:
                j += 1
                if j == len(lines):
                    raise DocsTestError(f"{page}:{i + 1}: docs-test comment is not closed")
            comment = _DIRECTIVE.search("\n".join(lines[i : j + 1]))
            assert comment is not None
            if directive is not None:
                raise DocsTestError(f"{page}:{directive[1]}: docs-test directive before no fence")
            directive = (_parse_directive(comment["body"], f"{page}:{i + 1}"), i + 1)
            i = j + 1
            continue
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        m = _FENCE.match(line)
        if not m:
            if line.strip() and directive is not None:
                raise DocsTestError(f"{page}:{directive[1]}: docs-test directive before no fence")
            i += 1
            continue
        fence, lang = m["fence"], m["info"].strip().split(" ")[0].lower()
        start = i + 1
        j = start
        while j < len(lines) and not (
            lines[j].strip().startswith(fence[0] * len(fence))
            and not lines[j].strip().strip(fence[0])
        ):
            j += 1
        if j == len(lines):
            raise DocsTestError(f"{page}:{i + 1}: fence is not closed")
        body = "\n".join(lines[start:j]) + "\n"
        where = f"{page}:{i + 1}"
        if not lang:
            raise DocsTestError(
                f"{where}: fence without a language; name it (python, console, bash: run by "
                f"the docs test; {', '.join(sorted(NOT_CODE_LANGS))}: not code)"
            )
        kind = "python" if lang in PYTHON_LANGS else "shell" if lang in SHELL_LANGS else None
        if kind is None and lang not in NOT_CODE_LANGS:
            raise DocsTestError(f"{where}: unknown fence language {lang!r}")
        opts = directive[0] if directive else {}
        if kind is None and directive is not None:
            raise DocsTestError(f"{page}:{directive[1]}: docs-test directive before a {lang} block")
        if kind is not None:
            blocks.append(
                Block(
                    page=page,
                    line=start + 1,
                    lang=kind,
                    code=body,
                    heading=heading,
                    skip=opts.get("skip"),  # type: ignore[arg-type]
                    subs=tuple(opts.get("subs", ())),  # type: ignore[arg-type]
                    setup=tuple(opts.get("setup", ())),  # type: ignore[arg-type]
                    save=opts.get("save"),  # type: ignore[arg-type]
                    file=opts.get("file"),  # type: ignore[arg-type]
                    cwd=opts.get("cwd"),  # type: ignore[arg-type]
                )
            )
        directive = None
        i = j + 1
    if directive is not None:
        raise DocsTestError(f"{page}:{directive[1]}: docs-test directive before no fence")
    return blocks


def all_blocks(root: Path = REPO) -> list[Block]:
    return [b for p in pages(root) for b in extract(p.read_text("utf-8"), str(p.relative_to(root)))]


# ---------------------------------------------------------------------------------------
# Console transcripts


def console_parts(code: str) -> tuple[str, list[str]] | None:
    """``(script, expected output lines)`` of a ``$ ``-prompted block; None for a plain script."""
    lines = code.splitlines()
    if not any(line.startswith("$ ") for line in lines):
        return None
    commands: list[str] = []
    expected: list[str] = []
    continued = False
    for line in lines:
        if continued or line.startswith("$ "):
            cmd = line if continued else line[2:]
            commands.append(cmd)
            continued = cmd.rstrip().endswith("\\")
        elif line.strip() and line.strip() != "...":
            expected.append(line.strip())
    return "\n".join(commands) + "\n", expected


# ---------------------------------------------------------------------------------------
# Setups: the few things a page assumes exist that a reader has and a fresh folder does not


def _tiny_hf_checkpoint(work: Path, arg: str) -> None:
    """A tiny Llama-layout Hugging Face folder (config.json, model.safetensors, tokenizer.json
    with a ChatML template) at ``arg``, as ``transformers`` would save it."""
    from splice.testing.hf_folder import write_tiny_llama

    write_tiny_llama(work / arg)


def _chat_jsonl(work: Path, arg: str) -> None:
    """``arg``: 100 conversations in the format a page shows (sums answered in words)."""
    from splice.data.translation import ONES as words  # number words 0-19

    lines = []
    for a, b in itertools.product(range(10), range(10)):
        messages = [
            {"role": "system", "content": "answer in words"},
            {"role": "user", "content": f"{a} + {b}"},
            {"role": "assistant", "content": words[a + b]},
        ]
        lines.append(json.dumps({"messages": messages}))
    (work / arg).parent.mkdir(parents=True, exist_ok=True)
    (work / arg).write_text("\n".join(lines) + "\n")


SETUPS = {"hf-checkpoint": _tiny_hf_checkpoint, "chat-jsonl": _chat_jsonl}


# ---------------------------------------------------------------------------------------
# Running: one working folder per page, one Python process per page, shims for uv / uvx


def find_uv() -> str:
    """The uv binary: ``$UV`` (set by ``uv run``/``uvx``), then PATH, then the ``uv`` package."""
    found = os.environ.get("UV") or shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeError("the docs test runs `uv` commands; put uv on PATH") from None
    return str(find_uv_bin())


SHIM = '''#!{python}
"""docs-test shim for `{name}`: see tests/docs_examples.py (Page.environment)."""
import os, subprocess, sys
REAL, UVX, SITE, CHECKOUT = {real!r}, {uvx!r}, {site!r}, {checkout!r}
args = sys.argv[1:]
def run(cmd):
    # uv's cache first (no network at test time), then the index for what it lacks
    done = subprocess.run([cmd[0], "--offline", *cmd[1:]])
    if done.returncode != 0:
        done = subprocess.run(cmd)
    sys.exit(done.returncode)
if {name!r} == "uvx":
    run([UVX, *args])
if args[:1] == ["run"]:  # uv run [--no-sync] CMD: the test environment is already synced
    rest = args[1:]
    while rest and rest[0] in ("--no-sync", "--frozen", "--locked", "--"):
        rest = rest[1:]
    os.execvp(rest[0], rest)
if args[:1] == ["sync"]:  # check the lock and the plan, change nothing
    run([REAL, "sync", "--locked", "--dry-run", *args[1:]])
inside = os.path.realpath(os.getcwd()).startswith(os.path.realpath(CHECKOUT))
if args[:2] == ["pip", "install"] and inside:
    # into this page's site folder (on PYTHONPATH), never into the test environment
    rest = [a for a in args[2:] if a not in ("-e", "--editable")]
    run([REAL, "pip", "install", "--python", sys.executable, "--target", SITE, *rest])
run([REAL, *args])
'''


@dataclass
class Page:
    """The state one page's blocks share: a working folder, a site folder for what its
    commands install, a Python process running its Python blocks in one namespace."""

    name: str
    work: Path
    done: set[str] = field(default_factory=set)
    failed: str | None = None
    _python: subprocess.Popen[str] | None = None

    @property
    def site(self) -> Path:
        return self.work / ".docs-test" / "site"

    @property
    def checkout(self) -> Path:
        return self.work / "splice"

    def prepare(self) -> None:
        self.site.mkdir(parents=True, exist_ok=True)
        bin_dir = self.work / ".docs-test" / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        real = find_uv()
        for name in ("uv", "uvx"):
            shim = bin_dir / name
            shim.write_text(
                SHIM.format(
                    python=sys.executable,
                    name=name,
                    real=real,
                    uvx=str(Path(real).with_name("uvx")),
                    site=str(self.site),
                    checkout=str(self.checkout),
                )
            )
            shim.chmod(0o755)

    def environment(self) -> dict[str, str]:
        """The environment of the page's commands and Python process.

        PATH: the uv/uvx shims, then the test environment's scripts (``splice``, ``python``,
        ``torchrun``), then the rest. The ``uv`` shim maps ``uv run [--no-sync] CMD`` to CMD
        (the environment is already synced; no re-sync, no network), ``uv sync`` to
        ``uv sync --locked --dry-run`` (the lock is current; nothing changes), and
        ``uv pip install`` inside the checkout copy to an install into this page's site
        folder (on PYTHONPATH), so no command changes the environment the tests run in;
        anything else (``uv build``, ``uv venv``, ``uv pip install`` into a new venv) runs
        as written: from uv's cache (``--offline``) first, then with the index.
        PYTHONDONTWRITEBYTECODE is dropped: a fresh venv a page makes then caches the
        bytecode of what it imports instead of compiling all of torch up front.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPLICE_")}
        # A `uv venv` the page makes must be the one its commands use: drop every variable
        # that points uv at another environment (nox's uv backend sets UV_PYTHON and
        # UV_PROJECT_ENVIRONMENT to the test environment, and `uv pip install` obeys them).
        for name in ("VIRTUAL_ENV", "CONDA_PREFIX", "UV_PYTHON", "UV_PROJECT_ENVIRONMENT"):
            env.pop(name, None)
        env.pop("UV_SYSTEM_PYTHON", None)
        env.pop("PYTHONHOME", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        scripts = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join(
            [str(self.work / ".docs-test" / "bin"), scripts, env.get("PATH", "")]
        )
        env["PYTHONPATH"] = str(self.site)
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def copy_checkout(self) -> Path:
        """The repository's tracked (and untracked, not ignored) files, copied once."""
        if not self.checkout.exists():
            listed = subprocess.run(
                ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split("\0")
            for rel in filter(None, listed):
                src = REPO / rel
                if src.is_file():
                    dst = self.checkout / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst)
        return self.checkout

    # -- Python ---------------------------------------------------------------------------

    def python(self, block: Block, code: str, timeout: float) -> str | None:
        """Run a Python block in the page's process; the traceback (None if it passed)."""
        if self._python is None:
            self._log = open(self.work / ".docs-test" / "python.log", "w+")  # noqa: SIM115
            self._python = subprocess.Popen(
                [sys.executable, "-u", __file__, "--worker"],
                cwd=self.work,
                env=self.environment(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                text=True,
            )
        assert self._python.stdin and self._python.stdout
        request = {"path": str(REPO / block.page), "line": block.line, "code": code}
        self._python.stdin.write(json.dumps(request) + "\n")
        self._python.stdin.flush()
        reply = self._python.stdout.readline()
        if not reply:
            self._log.seek(0)
            return f"the page's Python process died:\n{self._log.read()[-4000:]}"
        error: str | None = json.loads(reply)["error"]
        if error:
            self._log.seek(0)
            error += "\n--- output ---\n" + self._log.read()[-4000:]
        return error

    def close(self) -> None:
        if self._python is not None:
            if self._python.stdin:
                self._python.stdin.close()
            try:  # every block has answered; do not wait long for the interpreter's exit
                self._python.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._python.kill()
                self._python.wait()
            self._log.close()
            self._python = None

    # -- shell ----------------------------------------------------------------------------

    def shell(self, block: Block, code: str, timeout: float) -> str | None:
        """Run a shell block; a message naming what failed (None if it passed)."""
        parts = console_parts(code)
        script, expected = parts if parts else (code, [])
        cwd = self.copy_checkout() if block.cwd == "checkout" else self.work
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=cwd,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = done.stdout + done.stderr
        if done.returncode != 0:
            return (
                f"exit status {done.returncode} from:\n{script}\n--- output ---\n{output[-6000:]}"
            )
        missing = [line for line in expected if line not in output]
        if missing:
            return f"output lacks {missing} shown in the page\n--- output ---\n{output[-6000:]}"
        return None


def run_block(page: Page, block: Block, timeout: float = 540) -> str | None:
    """Set up and run one block in its page; an error message, or None if it passed."""
    code = block.runnable_code()
    for name in block.setup:
        key, _, arg = name.partition(":")
        SETUPS[key](page.work, arg)
    if block.save:
        target = page.work / block.save
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
    if block.lang == "python":
        return page.python(block, code, timeout)
    return page.shell(block, code, timeout)


def check_excerpt(block: Block) -> str | None:
    """For ``file=``: None if the block is a verbatim excerpt of the repository file."""
    assert block.file
    path = REPO / block.file
    if not path.is_file():
        return f"{block.id}: docs-test file={block.file!r} does not exist"
    if block.code.strip() not in path.read_text("utf-8"):
        return f"{block.id}: the block is not a verbatim excerpt of {block.file}"
    return None


# ---------------------------------------------------------------------------------------
# The page's Python process: exec each block it is sent in one namespace


def _worker() -> None:
    import contextlib
    import importlib
    import traceback

    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the blocks' output (and their subprocesses') goes to the log
    sys.stdout = sys.stderr
    sys.path.insert(0, os.getcwd())  # a block saved as my_module.py imports as in the page
    namespace: dict[str, object] = {"__name__": "__main__"}
    for request in sys.stdin:
        req = json.loads(request)
        importlib.invalidate_caches()  # a command of the page may have installed a package
        error = None
        try:
            # dont_inherit: a block is compiled as the page shows it, without this file's
            # `from __future__ import annotations` (pydantic would then look the string
            # annotations up in this module instead of the page's namespace).
            code = compile(
                "\n" * (req["line"] - 1) + req["code"], req["path"], "exec", dont_inherit=True
            )
            with contextlib.redirect_stdout(sys.stderr):
                exec(code, namespace)
        except BaseException:
            error = traceback.format_exc()
        replies.write(json.dumps({"error": error}) + "\n")
        replies.flush()


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker()
