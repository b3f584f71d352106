"""splice-recipes is installed and its entry point loads."""

from splice.registry import get_registry


def test_installed():
    info = get_registry().plugins["recipes"]
    assert (info.distribution, info.error) == ("splice-recipes", None)
