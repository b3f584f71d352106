"""Run inside the fresh environment of ``nox -s wheels``: splice from wheels, nothing editable.

Checks that every splice distribution came from a wheel file (no ``editable`` install,
no path into the repository), that ``splice plugins`` lists core, splice-mha and the
example third-party plugin, and that a config file using the plugin's channel mixer
trains a few steps through ``splice run``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from importlib.metadata import distributions
from pathlib import Path

REPO = Path(sys.argv[1]).resolve()
CONFIG = """
from splice.models.configs import DecoderConfig
from splice.nn.configs import PreNormBlockConfig, RMSNormConfig
from splice.training.configs import DataConfig, EvalConfig, ExperimentConfig, TrainConfig


def config():
    block = PreNormBlockConfig(
        token_mixer={"type": "mha", "n_heads": 2},
        channel_mixer={"type": "relu2"},
        norm=RMSNormConfig(),
    )
    return ExperimentConfig(
        name="wheels",
        model=DecoderConfig(vocab_size=64, d_model=32, n_layers=1, max_seq_len=32, block=block),
        data=DataConfig(task={"type": "arithmetic"}, max_len=32),
        train=TrainConfig(steps=3, batch_size=8, progress=False, log_every=1),
        eval=EvalConfig(loss_batches=1, exact_match_examples=4, batch_size=4),
    )
"""


def main() -> None:
    splice = [d for d in distributions() if (d.metadata["Name"] or "").startswith("splice-")]
    names = sorted(d.metadata["Name"] for d in splice)
    assert names == ["splice-core", "splice-example-ffn", "splice-mha"], names
    for dist in splice:
        direct = dist.read_text("direct_url.json")
        info = json.loads(direct) if direct else {}
        assert not info.get("dir_info", {}).get("editable"), f"{dist.metadata['Name']} is editable"
        where = Path(str(dist.locate_file(""))).resolve()
        assert Path(sys.prefix).resolve() in where.parents, f"{dist.metadata['Name']}: {where}"
        assert info.get("url", "").endswith(".whl"), f"{dist.metadata['Name']}: {info}"
    with tempfile.TemporaryDirectory() as tmp:  # run outside the repository
        listing = subprocess.run(
            ["splice", "plugins"], cwd=tmp, capture_output=True, text=True, check=True
        ).stdout
        for line in ("splice-core 0.1.0", "splice-mha 0.1.0", "splice-example-ffn 0.1.0"):
            assert line in listing, listing
        (Path(tmp) / "wheels_config.py").write_text(CONFIG)
        run = subprocess.run(
            ["splice", "run", "wheels_config.py", "--output-dir", "run"],
            cwd=tmp, capture_output=True, text=True,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
        records = [
            json.loads(line)
            for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
        ]
        steps = [r["step"] for r in records if r["kind"] == "train"]
        assert steps == [1, 2, 3], steps
    import splice
    import splice_mha

    for module in (splice, splice_mha):  # the code that runs is the env's copy, not the repo's
        path = Path(str(module.__file__)).resolve()
        assert Path(sys.prefix).resolve() in path.parents, path
        assert REPO / "packages" not in path.parents and REPO / "plugins" not in path.parents
    print("wheels: splice-core, splice-mha, splice-example-ffn from wheels; 3 steps trained")


if __name__ == "__main__":
    main()
