"""Preference and unpaired JSONL, and the collators that put both sides in one batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from splice.data.tokenizer import CharTokenizer

TOKENIZER = CharTokenizer()

from splice_dpo.data import (  # noqa: E402
    PreferenceCollator,
    PreferenceExample,
    UnpairedCollator,
    UnpairedExample,
    read_preference_jsonl,
    read_unpaired_jsonl,
    write_preference_jsonl,
)


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_prompt_and_chat_lines(tmp_path: Path) -> None:
    chat_c = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    chat_r = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]
    path = _write(
        tmp_path / "p.jsonl",
        [
            {"prompt": "1+1=", "chosen": "2", "rejected": "3", "answer": "2"},
            {"chosen": chat_c, "rejected": chat_r},
        ],
    )
    pairs = read_preference_jsonl(path)
    assert pairs[0] == PreferenceExample("1+1=", "2", "3", "2")
    assert pairs[1] == PreferenceExample("user: 2+2?\nassistant: ", "4", "5", "")
    assert pairs[1].completion == "4"


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"prompt": "a", "chosen": "b"}, r"p\.jsonl:2: missing field 'rejected'"),
        (
            {"prompt": "a", "chosen": 3, "rejected": "c"},
            r"p\.jsonl:2: field 'chosen' must be a str",
        ),
        (
            {
                "chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "1"}],
                "rejected": [
                    {"role": "user", "content": "y"},
                    {"role": "assistant", "content": "2"},
                ],
            },
            r"p\.jsonl:2: 'chosen' and 'rejected' conversations must share",
        ),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, row: dict, match: str) -> None:
    path = _write(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}, row])
    with pytest.raises(ValueError, match=match):
        read_preference_jsonl(path)


def test_unpaired_lines(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "u.jsonl",
        [
            {"prompt": "1+1=", "completion": "2", "label": True},
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ],
                "label": False,
            },
            {"prompt": "1+1=", "completion": "3"},
        ],
    )
    with pytest.raises(ValueError, match=r"u\.jsonl:3: missing field 'label'"):
        read_unpaired_jsonl(path)
    path.write_text("\n".join(path.read_text().splitlines()[:2]) + "\n")
    ex = read_unpaired_jsonl(path)
    assert ex == [
        UnpairedExample("1+1=", "2", True),
        UnpairedExample("user: q\nassistant: ", "a", False),
    ]


def test_round_trip(tmp_path: Path, make_pairs) -> None:
    pairs = make_pairs(5)
    write_preference_jsonl(tmp_path / "x.jsonl", pairs)
    assert read_preference_jsonl(tmp_path / "x.jsonl") == pairs


def test_preference_collator_padded_layout() -> None:
    pairs = [PreferenceExample("12+3=", "15", "105"), PreferenceExample("1+1=", "2", "3")]
    b = PreferenceCollator(TOKENIZER, max_len=32, layout="padded")(pairs)
    assert b["input_ids"].shape == (4, 1 + 5 + 3 + 1)  # bos + "12+3=" + "105" + eos
    assert int(b["n_pairs"]) == 2
    # row 0 = chosen of pair 0, row 2 = its rejected; the prompt is shared
    prompt = TOKENIZER.encode("12+3=", bos=True)
    assert b["input_ids"][0, :6].tolist() == prompt == b["input_ids"][2, :6].tolist()
    assert b["score_mask"].sum(1).tolist() == [3, 2, 4, 2]  # completion + eos
    assert b["score_mask"][0].tolist()[:6] == [False] * 6
    assert b["attention_mask"].sum(1).tolist() == [9, 7, 10, 7]
    # labels: the chosen completions only (SFT on this batch trains the chosen side)
    assert (b["labels"][2:] == -100).all()
    assert b["labels"][0, 6:9].tolist() == TOKENIZER.encode("15", eos=True)
    assert "ref_chosen_logps" not in b


def test_collator_carries_precomputed_reference() -> None:
    pairs = [PreferenceExample("1+1=", "2", "3", ref_chosen=-1.5, ref_rejected=-4.0)]
    b = PreferenceCollator(TOKENIZER, max_len=32)(pairs)
    assert b["ref_chosen_logps"].tolist() == [-1.5] and b["ref_rejected_logps"].tolist() == [-4.0]


def test_unpaired_collator_mismatched_rows() -> None:
    ex = [
        UnpairedExample("1+1=", "2", True),
        UnpairedExample("2+2=", "5", False),
        UnpairedExample("3+3=", "6", True),
    ]
    b = UnpairedCollator(TOKENIZER, max_len=32)(ex)
    assert b["input_ids"].shape[0] == 6
    assert b["desirable"].tolist() == [True, False, True]
    # row 3 = prompt 0 with completion 1
    row = b["input_ids"][3][b["attention_mask"][3].bool()].tolist()
    assert row == TOKENIZER.encode("1+1=", bos=True) + TOKENIZER.encode("5", eos=True)
    assert (b["labels"][1] == -100).all() and (b["labels"][3:] == -100).all()
    assert (b["labels"][0] != -100).sum() == 2
    assert b["score_mask"][1].sum() == 2  # the undesirable example is scored, just not SFT-labelled
