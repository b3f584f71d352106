"""The shipped ``r1-zero`` starts: published by ``r1-zero-start``, checked against their
manifest (config, seed) and the folder's checkpoint manifest (bytes) before the main job
reads them, and what the main job reports of them is what they are."""

from __future__ import annotations

import json

import pytest
from splice.checkpoint.integrity import CorruptCheckpointError, verify_checkpoint
from splice.cli import main
from splice_recipes.r1_shipped import read_manifest, shipped_start, starts_dir
from splice_recipes.r1_zero import R1ZeroConfig
from splice_recipes.study import StudyResult


def test_published_starts_are_what_the_main_job_reads(tmp_path, capsys, r1_tiny, cli_args):
    """``r1-zero-start`` trains and publishes two tiny starts; ``r1-zero`` with the same
    settings evaluates exactly those weights (the figures the start run printed) and runs
    its GRPO arms from them; other settings, seeds or bytes are refused by name."""
    ships = tmp_path / "starts"
    sets = {**r1_tiny, "shipped_starts": str(ships)}
    assert main(cli_args("r1-zero-start", tmp_path / "s", {**sets, "publish": True})) == 0
    assert "published 2 starts" in capsys.readouterr().out
    manifest = read_manifest(ships)
    assert sorted(manifest["seeds"]) == ["0", "1"] and manifest["trained"]["cpu_time_s"] > 0
    assert set(verify_checkpoint(ships)["files"]) == {
        "seed-0.safetensors",
        "seed-1.safetensors",
        "starts.json",
    }
    for entry in manifest["seeds"].values():
        assert [r["step"] for r in entry["curve"]] == [4]

    assert main(cli_args("r1-zero", tmp_path / "r", sets)) == 0
    result = StudyResult.load(tmp_path / "r" / "study.json")
    for seed in (0, 1):  # the start's evaluation in the main job = the one at publish time
        assert result.figures["sft"][seed] == pytest.approx(manifest["seeds"][str(seed)]["figures"])
    assert [p[0] for p in result.extras["sft_curve"]["acc"]] == [4.0]  # from the manifest
    assert not (tmp_path / "r" / "sft" / "seed-0" / "checkpoints").exists()  # not trained

    cfg = R1ZeroConfig.model_validate(json.loads((tmp_path / "r" / "config.json").read_text()))
    logs_more = cfg.sft.model_copy(update={"log_every": 1, "keep_last": 3})
    assert shipped_start(cfg.model_copy(update={"sft": logs_more}), 0, ships).is_file()
    with pytest.raises(ValueError, match="trained with other sft than"):
        shipped_start(
            cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"steps": 5})}), 0, ships
        )
    with pytest.raises(
        ValueError, match=r"no shipped r1-zero start for seed 7; shipped seeds: \[0, 1\]"
    ):
        shipped_start(cfg, 7, ships)
    (ships / "seed-1.safetensors").write_bytes(b"not the published weights")
    with pytest.raises(CorruptCheckpointError, match=r"seed-1\.safetensors"):
        shipped_start(cfg, 1, ships)
    with pytest.raises(FileNotFoundError, match="r1-zero-start --set publish=true"):
        read_manifest(tmp_path / "nowhere")


def test_the_package_ships_a_start_for_every_default_seed():
    """The main job's defaults match the shipped manifest, and every seed's file is
    intact (the checkpoint manifest vouches for every file): ``uv run splice run r1-zero``
    needs no training of its start."""
    cfg = R1ZeroConfig()
    assert cfg.start == "shipped"
    for seed in cfg.seed_list():
        path = shipped_start(cfg, seed)
        assert path.parent == starts_dir() and path.stat().st_size > 100_000
    assert len(verify_checkpoint(starts_dir())["files"]) == cfg.seeds + 1  # and starts.json
    manifest = read_manifest()
    assert manifest["trained"]["machine_class"]  # who trained them, and at what cost


@pytest.mark.slow
def test_a_shipped_start_evaluates_to_its_manifest_figures(tmp_path):
    """Seed 0's shipped start evaluated here (200 held-out problems per task, greedy, and the
    probes) gives the figures recorded when it was published, within one problem (kernels
    may round differently on another CPU class)."""
    from splice_recipes.r1_zero import SFT_ARM, run_one

    cfg = R1ZeroConfig(output_dir=str(tmp_path))
    got = run_one(cfg, SFT_ARM, 0, tmp_path)
    want = read_manifest()["seeds"]["0"]["figures"]
    for key in ("acc", "retention", "forced", "reasoning"):
        assert got[key] == pytest.approx(want[key], abs=1 / cfg.eval_examples + 1e-9), key
    assert got["p_reason"] == pytest.approx(want["p_reason"], abs=1e-3)
