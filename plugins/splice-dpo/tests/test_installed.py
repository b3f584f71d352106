"""splice-dpo is installed and its entry point registered its losses, objectives and tasks."""

from splice.registry import get_registry


def test_installed():
    info = get_registry().plugins["dpo"]
    assert (info.distribution, info.error) == ("splice-dpo", None)
    assert set(info.registered["preference_loss"]) == {
        "sigmoid",
        "cdpo",
        "robust",
        "hinge",
        "ipo",
        "simpo",
        "orpo",
    }
    assert set(info.registered["objective"]) == {"dpo", "kto"}
    assert set(info.registered["task"]) == {"preference_jsonl", "unpaired_jsonl"}
