"""splice-lora is installed and its entry point registered the ``lora`` adapter."""

from splice.registry import get_registry


def test_installed():
    info = get_registry().plugins["lora"]
    assert (info.distribution, info.error) == ("splice-lora", None)
    assert "lora" in info.registered["adapter"]
