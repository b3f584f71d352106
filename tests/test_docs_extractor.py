"""The docs-examples extractor (tests/docs_examples.py): it finds blocks, reads directives,
and rejects what would let a block go unrun (a fence without a language, a skip without a
reason, a short form that no longer matches the block)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "docs_examples", Path(__file__).with_name("docs_examples.py")
)
assert _spec and _spec.loader
docs = sys.modules.get("docs_examples") or importlib.util.module_from_spec(_spec)
if "docs_examples" not in sys.modules:
    sys.modules["docs_examples"] = docs
    _spec.loader.exec_module(docs)

PAGE = """# Title

Some text.

```python
x = 1
```

## Commands

<!-- docs-test: sub="--steps 1000" with="--steps 2" -->
```console
$ splice run thing --steps 1000
done
...
```

```text
output only
```

<!-- docs-test: skip="needs 8 GPUs" -->
```bash
torchrun --nproc_per_node=8 train.py
```
"""


def test_blocks_lines_headings_and_directives():
    blocks = docs.extract(PAGE, "page.md")
    assert [(b.lang, b.line, b.heading) for b in blocks] == [
        ("python", 6, "Title"),
        ("shell", 13, "Commands"),
        ("shell", 24, "Commands"),
    ]
    assert blocks[0].code == "x = 1\n"
    assert blocks[1].runnable_code().startswith("$ splice run thing --steps 2\n")
    assert blocks[2].skip == "needs 8 GPUs"
    script, expected = docs.console_parts(blocks[1].runnable_code())
    assert script == "splice run thing --steps 2\n" and expected == ["done"]
    assert docs.console_parts(blocks[2].code) is None  # a plain script runs as a whole


@pytest.mark.parametrize(
    ("page", "message"),
    [
        ("```\nsplice run x\n```\n", "fence without a language"),
        ("<!-- docs-test: skip -->\n```bash\nls\n```\n", "skip needs a non-empty value"),
        ('<!-- docs-test: skip="" -->\n```bash\nls\n```\n', "skip needs a non-empty value"),
        ('<!-- docs-test: sub="a" -->\n```bash\nls\n```\n', "has no with="),
        ('<!-- docs-test: colour="red" -->\n```bash\nls\n```\n', "unknown docs-test key"),
        ('<!-- docs-test: skip="x" -->\n\nText.\n```bash\nls\n```\n', "before no fence"),
        ('<!-- docs-test: skip="x" -->\n```text\nls\n```\n', "before a text block"),
        ("```python\nx = 1\n", "fence is not closed"),
        ("```cobol\nx\n```\n", "unknown fence language"),
        ('<!-- docs-test: setup="nope" -->\n```bash\nls\n```\n', "unknown docs-test setup"),
    ],
)
def test_malformed_pages_are_errors(page, message):
    with pytest.raises(docs.DocsTestError, match=message):
        docs.extract(page, "page.md")


def test_a_sub_that_no_longer_matches_is_an_error():
    (block,) = docs.extract(
        '<!-- docs-test: sub="--old" with="--new" -->\n```bash\nls\n```\n', "p.md"
    )
    with pytest.raises(docs.DocsTestError, match="is not in the block"):
        block.runnable_code()


def test_four_backtick_fence_holds_a_three_backtick_one():
    page = "````markdown\n```python\nnot run\n```\n````\n\n```python\nrun = 1\n```\n"
    blocks = docs.extract(page, "p.md")
    assert [b.code for b in blocks] == ["run = 1\n"]


def test_the_repository_pages_parse():
    blocks = docs.all_blocks()
    assert len(blocks) >= 30
    assert {b.lang for b in blocks} == {"python", "shell"}
