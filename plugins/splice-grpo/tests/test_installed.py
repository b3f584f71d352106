"""splice-grpo is installed and its entry point registered its components."""

from splice.registry import get_registry


def test_installed():
    info = get_registry().plugins["grpo"]
    assert (info.distribution, info.error) == ("splice-grpo", None)
    assert info.registered["objective"] == ["grpo"]
    assert {"group_norm", "rloo", "reinforce_pp"} <= set(info.registered["advantage_estimator"])
    assert {"clipped_token", "gspo"} <= set(info.registered["policy_loss"])
