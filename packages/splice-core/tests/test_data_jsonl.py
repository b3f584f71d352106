"""JSONL readers, chat rendering, and the registered task configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError
from splice.config import component_field
from splice.data.chat import ChatTemplate
from splice.data.examples import Example
from splice.data.jsonl import read_chat, read_jsonl, read_prompt_completion
from splice.data.tasks import ArithmeticTaskConfig, JsonlTask, JsonlTaskConfig
from splice.registry import get_registry


def write(path: Path, *lines: object) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_prompt_completion_lines(tmp_path: Path) -> None:
    f = write(
        tmp_path / "pc.jsonl",
        {"prompt": "1+1=", "completion": " 2 "},
        "",  # blank lines are skipped
        {"prompt": "q", "completion": "a", "answer": "A"},
    )
    assert read_prompt_completion(f) == [Example("1+1=", " 2 ", "2"), Example("q", "a", "A")]


def test_chat_lines_render_with_template(tmp_path: Path) -> None:
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "and 3+3?"},
        {"role": "assistant", "content": "6"},
    ]
    f = write(tmp_path / "chat.jsonl", {"messages": msgs})
    (ex,) = read_chat(f)
    assert ex.prompt == ("system: be brief\nuser: 2+2?\nassistant: 4\nuser: and 3+3?\nassistant: ")
    assert ex.completion == "6" and ex.answer == "6"
    custom = ChatTemplate(turn="<{role}>{content}</{role}>", generation_prefix="<assistant>")
    (ex2,) = read_chat(f, template=custom)
    assert ex2.prompt.endswith("<user>and 3+3?</user><assistant>") and ex2.completion == "6"


def test_auto_format_mixes_both(tmp_path: Path) -> None:
    f = write(
        tmp_path / "mixed.jsonl",
        {"prompt": "p", "completion": "c"},
        {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]},
    )
    assert read_jsonl(f) == [Example("p", "c", "c"), Example("user: u\nassistant: ", "a", "a")]
    with pytest.raises(ValueError, match=r"mixed.jsonl:2: missing key 'prompt'"):
        read_jsonl(f, format="prompt_completion")


@pytest.mark.parametrize(
    ("line", "reader", "message"),
    [
        ('{"prompt": "a", "completion": ', read_prompt_completion, r"bad.jsonl:3: invalid JSON"),
        (
            '["prompt", "completion"]',
            read_prompt_completion,
            r"bad.jsonl:3: expected a JSON object, got list",
        ),
        (
            '{"prompt": "a"}',
            read_prompt_completion,
            r"bad.jsonl:3: missing key 'completion' \(keys present: \['prompt'\]\)",
        ),
        (
            '{"prompt": "a", "completion": 7}',
            read_prompt_completion,
            r"bad.jsonl:3: 'completion' must be a string, got int",
        ),
        (
            '{"prompt": "a", "completion": "b", "answer": null}',
            read_prompt_completion,
            r"bad.jsonl:3: 'answer' must be a string, got NoneType",
        ),
        ('{"turns": []}', read_chat, r"bad.jsonl:3: missing key 'messages'"),
        (
            '{"messages": "hi"}',
            read_chat,
            r"bad.jsonl:3: 'messages' must be a non-empty list, got str",
        ),
        (
            '{"messages": [{"role": "bot", "content": "x"}]}',
            read_chat,
            r"bad.jsonl:3: messages\[0\].role must be one of",
        ),
        (
            '{"messages": [{"role": "assistant", "content": 3}]}',
            read_chat,
            r"bad.jsonl:3: messages\[0\].content must be a string, got int",
        ),
        (
            '{"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}',
            read_chat,
            r"bad.jsonl:3: the last message must be from the assistant",
        ),
    ],
)
def test_malformed_line_names_file_and_line(
    tmp_path: Path, line: str, reader, message: str
) -> None:  # type: ignore[no-untyped-def]
    good_pc = {"prompt": "p", "completion": "c"}
    good_chat = {
        "messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    }
    good = good_pc if reader is read_prompt_completion else good_chat
    f = write(tmp_path / "bad.jsonl", good, "", line, good)  # the bad line is line 3
    with pytest.raises(ValueError, match=message):
        reader(f)


def test_task_configs_resolve_through_registry(tmp_path: Path) -> None:
    field = TypeAdapter(component_field("task"))
    cfg = field.validate_python({"type": "arithmetic", "op": "*", "max_digits": 3})
    assert isinstance(cfg, ArithmeticTaskConfig)
    task = get_registry().build("task", cfg)
    batch = task.sample("train", 5, seed=3)
    assert batch == task.sample("train", 5, seed=3)  # deterministic
    for ex in batch:
        a, b = ex.prompt[:-1].split("*")
        assert ex.completion == str(int(a) * int(b)) == ex.answer
    held = {ex.prompt for ex in task.sample("held_out", 50, seed=0)}
    assert held.isdisjoint(ex.prompt for ex in task.sample("train", 500, seed=0))
    with pytest.raises(ValidationError, match="min_digits=3 must be <= max_digits=2"):
        field.validate_python({"type": "arithmetic", "min_digits": 3})


def test_jsonl_task_splits_and_sampling(tmp_path: Path) -> None:
    lines = [{"prompt": f"{i}=", "completion": str(i)} for i in range(40)]
    f = write(tmp_path / "train.jsonl", *lines)
    cfg = TypeAdapter(component_field("task")).validate_python(
        {"type": "jsonl", "train": str(f), "held_out_fraction": 0.25}
    )
    assert isinstance(cfg, JsonlTaskConfig)
    task = get_registry().build("task", cfg)
    assert isinstance(task, JsonlTask)
    train, held = task.split("train"), task.split("held_out")
    assert len(train) + len(held) == 40 and 0 < len(held) < 20
    assert {e.prompt for e in train}.isdisjoint(e.prompt for e in held)
    # sample: distinct, capped at the split size, deterministic per seed
    s = task.sample("train", 1000, seed=1)
    assert len(s) == len(train) and len(set(s)) == len(train)
    assert task.sample("train", 5, seed=1) == s[:5] != task.sample("train", 5, seed=2)
    # examples: endless, every example once per epoch
    it = task.examples("held_out", seed=0)
    two_epochs = [next(it) for _ in range(2 * len(held))]
    assert sorted(two_epochs[: len(held)], key=str) == sorted(held, key=str)
    assert sorted(two_epochs[len(held) :], key=str) == sorted(held, key=str)


def test_jsonl_task_without_held_out_errors(tmp_path: Path) -> None:
    f = write(tmp_path / "t.jsonl", {"prompt": "p", "completion": "c"})
    task = JsonlTask(JsonlTaskConfig(train=str(f)))
    assert task.sample("train", 3) == [Example("p", "c", "c")]
    with pytest.raises(ValueError, match="split 'held_out' is empty; set `held_out` to a file"):
        task.sample("held_out", 1)
    other = write(
        tmp_path / "e.jsonl",
        {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]},
    )
    task2 = JsonlTask(JsonlTaskConfig(train=str(f), held_out=str(other)))
    assert task2.sample("held_out", 2) == [Example("user: u\nassistant: ", "a", "a")]


def test_one_chat_template_type_for_data_and_hf(tmp_path: Path) -> None:
    from splice.data.chat import SIMPLE_TEMPLATE, chat_template
    from splice.data.configs import JsonlTaskConfig
    from splice.data.tasks import JsonlTask
    from splice.hf import ChatTemplate as HFChatTemplate

    assert HFChatTemplate is ChatTemplate and isinstance(SIMPLE_TEMPLATE, ChatTemplate)
    assert chat_template("simple") == SIMPLE_TEMPLATE
    msgs = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    f = write(tmp_path / "chat.jsonl", {"messages": msgs})
    task = JsonlTask(JsonlTaskConfig(train=str(f), format="chat", chat_template="chatml"))
    (ex,) = task.split("train")
    # "turn" completions keep the end-of-turn text, so the model learns to close its turn.
    assert ex.prompt == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert ex.completion == "4<|im_end|>\n"
    with pytest.raises(ValueError, match="last message must be from the assistant"):
        SIMPLE_TEMPLATE.prompt_completion(msgs[:1])


class CountingList(list):
    """A list that counts the items read from it (what a batch costs)."""

    reads = 0

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        CountingList.reads += 1
        return super().__getitem__(i)


def test_jsonl_training_draws_seeded_epochs_resumable_at_any_step(tmp_path: Path) -> None:
    from itertools import islice

    from splice.interfaces import EpochTask
    from splice.testing.protocols import check_epoch_task
    from splice.training.experiment import build_batches

    lines = [{"prompt": f"{i}=", "completion": str(i)} for i in range(40)]
    held = write(tmp_path / "held.jsonl", {"prompt": "x=", "completion": "x"})
    cfg = {
        "type": "jsonl",
        "train": str(write(tmp_path / "t.jsonl", *lines)),
        "held_out": str(held),
    }

    def source(seed: int = 3):  # a fresh task each time, as a resumed process builds it
        task = get_registry().build(
            "task", TypeAdapter(component_field("task")).validate_python(cfg)
        )
        assert isinstance(task, EpochTask) and check_epoch_task(task) == task.split("train")
        return build_batches(
            task, lambda xs: {"prompts": [e.prompt for e in xs]}, batch_size=8, seed=seed
        )

    batches = [b["prompts"] for b in islice(source().batches(0), 15)]  # 3 epochs of 5 batches
    epochs = [[p for b in batches[i : i + 5] for p in b] for i in (0, 5, 10)]
    for epoch in epochs:  # every example exactly once per epoch
        assert sorted(epoch) == sorted(f"{i}=" for i in range(40))
    assert epochs[0] != epochs[1] != epochs[2]  # a new order each epoch
    # resumed at step 7 (mid-epoch 2) in a new process: the batches an unbroken run saw
    assert [b["prompts"] for b in islice(source().batches(7), 8)] == batches[7:15]
    assert [b["prompts"] for b in islice(source(seed=4).batches(0), 5)] != batches[:5]


@pytest.mark.parametrize("n", [40, 4000])
def test_a_jsonl_batch_costs_the_same_whatever_the_file_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    """Counted, not timed: a batch of 8 reads 8 examples, and the order is shuffled once per
    epoch (a sample per batch shuffled all n every batch)."""
    import random
    from itertools import islice

    from splice.training.experiment import build_batches

    lines = [{"prompt": f"{i}=", "completion": str(i)} for i in range(n)]
    held = write(tmp_path / "held.jsonl", {"prompt": "x=", "completion": "x"})
    task = JsonlTask(
        JsonlTaskConfig(train=str(write(tmp_path / "t.jsonl", *lines)), held_out=str(held))
    )
    examples = CountingList(task.epoch_examples())
    monkeypatch.setattr(task, "epoch_examples", lambda: examples)
    shuffled: list[int] = []
    real_shuffle = random.Random.shuffle
    monkeypatch.setattr(
        random.Random,
        "shuffle",
        lambda self, x: (shuffled.append(len(x)), real_shuffle(self, x))[1],
    )
    CountingList.reads = 0
    got = list(islice(build_batches(task, list, batch_size=8, seed=0).batches(0), 5))
    assert sum(map(len, got)) == 40 and CountingList.reads == 40  # 8 reads a batch
    assert shuffled == [n]  # one permutation for the epoch, not one per batch


def test_online_prompt_batches_of_a_jsonl_task_are_its_epochs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An online run's prompts from a JSONL file: every prompt once per epoch, batch k the
    same after a restart, and one shuffle of the file per epoch (not one per step)."""
    import random

    from splice.data.tokenizer import CharTokenizer
    from splice.rl.rollout import PromptBatches

    lines = [{"prompt": f"{i}+1=", "completion": str(i + 1)} for i in range(20)]
    held = write(tmp_path / "held.jsonl", {"prompt": "x=", "completion": "x"})
    cfg = JsonlTaskConfig(train=str(write(tmp_path / "t.jsonl", *lines)), held_out=str(held))
    tok = CharTokenizer("0123456789+=x")
    shuffled: list[int] = []
    real_shuffle = random.Random.shuffle

    def counting_shuffle(self: random.Random, x: list) -> None:
        shuffled.append(len(x))
        real_shuffle(self, x)

    monkeypatch.setattr(random.Random, "shuffle", counting_shuffle)
    src = PromptBatches(JsonlTask(cfg), tok, prompts_per_step=5, seed=1)
    batches = [src.batch(k) for k in range(8)]  # two epochs of 4 steps
    assert shuffled == [20, 20]  # one permutation per epoch
    for epoch in (batches[:4], batches[4:]):
        prompts = [p for b in epoch for p in b["prompts"]]
        assert sorted(prompts) == sorted(line["prompt"] for line in lines)
    assert batches[0]["references"] == [
        str(int(p.split("+")[0]) + 1) for p in batches[0]["prompts"]
    ]
    restarted = PromptBatches(JsonlTask(cfg), tok, prompts_per_step=5, seed=1)
    assert next(restarted.batches(6))["prompts"] == batches[6]["prompts"]
    other = PromptBatches(JsonlTask(cfg), tok, prompts_per_step=5, seed=2)
    assert other.batch(0)["prompts"] != batches[0]["prompts"]
