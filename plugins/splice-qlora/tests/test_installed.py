"""splice-qlora is installed and its entry point registered its quantizers."""

from splice.registry import get_registry


def test_installed():
    info = get_registry().plugins["qlora"]
    assert (info.distribution, info.error) == ("splice-qlora", None)
    assert {"nf4", "fp4", "int8"} <= set(info.registered["quantizer"])
