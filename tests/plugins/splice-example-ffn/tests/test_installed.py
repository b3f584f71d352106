"""splice-example-ffn is installed and its entry point registered its channel mixer."""

from splice.registry import get_registry


def test_installed():
    info = get_registry().plugins["relu2"]
    assert (info.distribution, info.error) == ("splice-example-ffn", None)
    assert info.registered["channel_mixer"] == ["relu2"]
