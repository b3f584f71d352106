"""splice-grpo is installed and its entry point registered its components."""

from splice.registry import get_registry


def test_installed():
    info = get_registry().plugins["grpo"]
    assert (info.distribution, info.error) == ("splice-grpo", None)
    assert info.registered["objective"] == ["grpo"]
    assert {"group_norm", "rloo", "reinforce_pp"} <= set(info.registered["advantage_estimator"])
    assert info.registered["policy_loss"] == ["gspo"]  # clipped_token is the core's, shared
    core = get_registry().plugins["core"].registered
    assert "clipped_token" in core["policy_loss"] and "gae" in core["advantage_estimator"]
