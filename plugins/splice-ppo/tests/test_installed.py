"""splice-ppo is installed and its entry point registered the ``ppo`` objective."""

from splice.registry import get_registry


def test_installed():
    info = get_registry().plugins["ppo"]
    assert (info.distribution, info.error) == ("splice-ppo", None)
    assert "ppo" in info.registered["objective"]
