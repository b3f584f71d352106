"""splice-mha is installed and its entry point registered its token mixers."""

from splice.registry import get_registry


def test_installed():
    info = get_registry().plugins["mha"]
    assert (info.distribution, info.error) == ("splice-mha", None)
    assert info.registered["token_mixer"] == ["mha", "cross_attention", "mla"]
