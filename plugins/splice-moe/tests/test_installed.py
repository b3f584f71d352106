"""splice-moe is installed and its entry point registered the ``moe`` channel mixer."""

from splice.registry import get_registry


def test_installed():
    info = get_registry().plugins["moe"]
    assert (info.distribution, info.error) == ("splice-moe", None)
    assert info.registered["channel_mixer"] == ["moe"]
    assert info.registered["hf_architecture"] == [
        "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3", "ernie4_5_moe"
    ]  # fmt: skip
