"""Every Python block and shell command in README.md and docs/**/*.md runs here.

How (details and the directive syntax: tests/docs_examples.py):

- Blocks are found by their fence language (``python``; ``console``/``bash``/``sh``/``shell``);
  a fence without a language fails the page, so commands cannot hide as plain text.
- Each page gets an empty temporary working folder. Its Python blocks run in order in ONE
  fresh Python process and ONE namespace (``exec``, ``__name__ == "__main__"``): a block may
  use what an earlier block of the same page defined, as a reader running the page top to
  bottom would. Running one block alone (``-k``) first runs the page's earlier blocks.
- Shell blocks run with ``bash -e -o pipefail`` in that folder (``cwd="checkout"``: in a
  copy of the repository's files). PATH starts with shims for ``uv``/``uvx`` and then this
  test environment's scripts, so ``splice ...`` and ``torchrun ...`` are the installed ones.
  ``uv run [--no-sync] CMD`` runs CMD as is (no re-sync, no network); ``uv sync`` becomes
  ``uv sync --locked --dry-run``; ``uv pip install`` inside the checkout copy installs into
  the page's own folder on PYTHONPATH; no command changes the test environment. In a
  ``$ ``-prompted block the lines without ``$`` are output that must appear.
- Long commands (training, the test command itself) run in a short form given right above
  the block in the page: ``<!-- docs-test: sub="..." with="..." -->``; the few blocks that
  cannot run here say why: ``<!-- docs-test: skip="..." -->`` (counted below, kept few).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import sysconfig
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "docs_examples", Path(__file__).with_name("docs_examples.py")
)
assert _spec and _spec.loader
docs = importlib.util.module_from_spec(_spec)
sys.modules["docs_examples"] = docs
_spec.loader.exec_module(docs)

# The floor: what the pages held when this test was written. A page that loses its code
# blocks, or an extractor that stops finding them, fails test_blocks_are_found.
MIN_TOTAL_BLOCKS = 32  # found when this test was written; 35 today
PAGES_WITH_CODE = [
    "README.md",
    "docs/bring-your-own-model.md",
    "docs/concepts/dpo.md",
    "docs/concepts/encoder-decoder.md",
    "docs/concepts/evaluation.md",
    "docs/concepts/lora-qlora.md",
    "docs/concepts/moe.md",
    "docs/concepts/ppo.md",
    "docs/concepts/self-attention.md",
    "docs/distributed.md",
    "docs/evaluation.md",
    "docs/loading-models.md",
    "docs/writing-plugins.md",
    "docs/writing-rewards.md",
]
MAX_SKIPS = 4
# Pages whose blocks do not run yet (being made runnable, page by page); empty when done.
PENDING_PAGES: set[str] = set()


def _collect() -> tuple[list[object], dict[str, list[object]]]:
    params: list[object] = []
    by_page: dict[str, list[object]] = {}
    for page in docs.pages():
        rel = str(page.relative_to(docs.REPO))
        try:
            blocks = docs.extract(page.read_text("utf-8"), rel)
        except docs.DocsTestError as e:  # a malformed page fails as its own test
            params.append(pytest.param(e, id=f"{rel}:malformed"))
            continue
        by_page[rel] = blocks
        if rel not in PENDING_PAGES:
            params += [pytest.param(b, id=b.id) for b in blocks]
    return params, by_page


PARAMS, BY_PAGE = _collect()


@pytest.fixture(scope="session")
def page_state(tmp_path_factory: pytest.TempPathFactory):
    states: dict[str, object] = {}

    def get(name: str):
        if name not in states:
            work = tmp_path_factory.mktemp(name.replace("/", "-").removesuffix(".md"))
            state = docs.Page(name=name, work=work)
            state.prepare()
            states[name] = state
        return states[name]

    yield get
    for state in states.values():
        state.close()


def _installed() -> dict[str, tuple[str, str | None]]:
    """The test environment's distributions: name -> (version, direct_url.json)."""
    site = sysconfig.get_paths()["purelib"]
    return {
        dist.metadata["Name"]: (dist.version, dist.read_text("direct_url.json"))
        for dist in importlib.metadata.distributions(path=[site])
    }


BEFORE = _installed()


def _run(state, block) -> str | None:
    if block.id in state.done:
        return state.failed if state.failed and state.failed.startswith(block.id) else None
    error = docs.run_block(state, block)
    state.done.add(block.id)
    if error and state.failed is None:
        state.failed = f"{block.id}\n{error}"
    return error


@pytest.mark.timeout(900)
@pytest.mark.parametrize("block", PARAMS)
def test_block_runs(block, page_state):
    if isinstance(block, Exception):
        pytest.fail(str(block))
    if block.skip:
        pytest.skip(f"{block.id}: {block.skip}")
    if block.file:
        error = docs.check_excerpt(block)
        assert error is None, error
        return
    state = page_state(block.page)
    for earlier in BY_PAGE[block.page]:  # a page runs top to bottom, even under -k
        if earlier.line >= block.line or state.failed:
            break
        if earlier.skip or earlier.file or earlier.id in state.done:
            continue
        _run(state, earlier)
    if state.failed and not state.failed.startswith(block.id):
        pytest.fail(f"an earlier block of {block.page} failed: {state.failed.splitlines()[0]}")
    error = _run(state, block)
    # No block may change the environment the tests run in (a `uv pip install` that
    # followed nox's UV_PYTHON once did, and broke the tests that ran after it).
    now = _installed()
    changed = sorted(n for n in BEFORE.keys() | now.keys() if BEFORE.get(n) != now.get(n))
    assert not changed, f"{block.id} changed the test environment: {changed}"
    assert error is None, f"{block.id} (under {block.heading!r}) failed:\n{error}"


def test_blocks_are_found():
    """The extractor finds code on every page that has some, and the total does not shrink."""
    counts = {page: len(blocks) for page, blocks in BY_PAGE.items()}
    empty = [p for p in PAGES_WITH_CODE if not counts.get(p)]
    assert not empty, f"no code blocks found in {empty}"
    assert sum(counts.values()) >= MIN_TOTAL_BLOCKS, counts
    skips = [b.id for blocks in BY_PAGE.values() for b in blocks if b.skip]
    assert len(skips) <= MAX_SKIPS, f"keep docs-test skips few; found {skips}"
