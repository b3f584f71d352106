"""train.compile: regional torch.compile gives the eager run's numbers; generation stays eager."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from splice.generation.sampling import SamplingConfig, generate
from splice.models.build import build_model
from splice.models.configs import DecoderConfig
from splice.nn.configs import PreNormBlockConfig, RMSNormConfig, SwiGLUConfig
from splice.objectives.sft import SFTConfig, SFTObjective
from splice.training.configs import OptimizerConfig, TrainConfig
from splice.training.trainer import Trainer
from torch import nn

pytestmark = pytest.mark.bf16_pass  # also run with bf16 forced (nox -s tests_bf16)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(
        DecoderConfig(
            vocab_size=40,
            d_model=32,
            n_layers=2,
            max_seq_len=64,
            block=PreNormBlockConfig(
                token_mixer={"type": "mha", "n_heads": 4, "n_kv_heads": 2},
                channel_mixer=SwiGLUConfig(),
                norm=RMSNormConfig(),
            ),
            final_norm=RMSNormConfig(),
        )
    )


def _train(compile_blocks: bool, run_dir: Path) -> tuple[nn.Module, list[float]]:
    model = _model()
    gen = torch.Generator().manual_seed(1)
    rows = torch.randint(3, 40, (4 * 4, 24), generator=gen)
    batches = [{"input_ids": rows[i : i + 4], "labels": rows[i : i + 4]} for i in range(0, 16, 4)]
    cfg = TrainConfig(
        steps=4,
        batch_size=4,
        optimizer=OptimizerConfig(lr=1e-2),
        progress=False,
        log_every=1,
        compile=compile_blocks,
        precision="float32",  # compiled vs eager to float32 tolerance
    )
    Trainer(model, SFTObjective(SFTConfig()), batches, cfg, run_dir=run_dir).fit()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return model, [r["loss"] for r in records if r["kind"] == "train"]


@pytest.mark.slow
@pytest.mark.mha
def test_compiled_blocks_train_like_eager_and_generate_eagerly(tmp_path: Path) -> None:
    eager_model, eager_losses = _train(False, tmp_path / "eager")
    torch._dynamo.utils.counters.clear()
    compiled_model, compiled_losses = _train(True, tmp_path / "compiled")
    assert torch._dynamo.utils.counters["stats"]["calls_captured"] > 0  # really compiled
    assert len(compiled_losses) == len(eager_losses) > 0
    for a, b in zip(compiled_losses, eager_losses):
        assert abs(a - b) < 1e-4
    for p, q in zip(compiled_model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-4)
    # Decode shapes change every step; the compiled blocks must not be traced for them.
    torch._dynamo.utils.counters.clear()
    sampling = SamplingConfig(max_new_tokens=6)
    out = generate(compiled_model, [[1, 2, 3], [4, 5]], sampling, pad_id=0)
    want = generate(eager_model, [[1, 2, 3], [4, 5]], sampling, pad_id=0)
    assert torch.equal(out.tokens, want.tokens)
    assert not torch._dynamo.utils.counters["stats"]["calls_captured"]


def test_compile_needs_blocks() -> None:
    with pytest.raises(ValueError, match="Linear has no splice Block"):
        Trainer(nn.Linear(2, 2), SFTObjective(SFTConfig()), [], TrainConfig(compile=True))
