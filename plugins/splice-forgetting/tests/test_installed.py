"""splice-forgetting is installed and its entry point registered its regularizers."""

from splice.registry import get_registry


def test_installed():
    info = get_registry().plugins["forgetting"]
    assert (info.distribution, info.error) == ("splice-forgetting", None)
    assert {"l2sp", "ewc", "kl_reference"} <= set(info.registered["regularizer"])
