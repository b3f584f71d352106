"""splice-vision is installed and its entry point registered its components."""

from splice.registry import get_registry


def test_installed():
    info = get_registry().plugins["vision"]
    assert (info.distribution, info.error) == ("splice-vision", None)
    assert info.registered["encoder"] == ["vit"]
    assert set(info.registered["connector"]) == {"linear_projector", "mlp_projector", "qformer"}
    assert set(info.registered["model"]) == {"clip", "llava", "flamingo", "native_vlm"}
    assert info.registered["task"] == ["shapes"]
