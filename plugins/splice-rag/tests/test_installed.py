"""splice-rag is installed and its entry point registered its components."""

from splice.registry import get_registry


def test_installed():
    info = get_registry().plugins["rag"]
    assert (info.distribution, info.error) == ("splice-rag", None)
    assert info.registered["retriever"] == ["bm25", "dense", "hybrid"]
    assert info.registered["task"] == ["rag"]
