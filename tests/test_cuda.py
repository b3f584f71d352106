"""The CUDA paths: the same model, generation, training and plugins on a GPU as on the CPU.

CI has no GPU, so these run only where one is present (or where ``SPLICE_TEST_DEVICE``
names another device: ``SPLICE_TEST_DEVICE=cpu`` exercises the same code on the CPU, to
keep the file honest between GPU runs). Each test compares the device's result with the
CPU's on the same float32 weights, or checks that training on the device learns.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from splice.generation.sampling import SamplingConfig, generate
from splice.models.build import build_model
from splice.models.configs import DecoderConfig
from splice.nn.configs import PreNormBlockConfig, RMSNormConfig, SwiGLUConfig
from splice.objectives.sft import SFTObjective
from splice.training.configs import OptimizerConfig, TrainConfig
from splice.training.precision import resolve_precision
from splice.training.trainer import Trainer

DEVICE = os.environ.get("SPLICE_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(),
    reason="no CUDA device here (CI is CPU-only); the lead runs this file on a lent GPU",
)
V = 48


@pytest.fixture(autouse=True)
def _exact_float32():
    # Compare float32 against float32: no TF32 rounding in CUDA matmuls.
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


def decoder(channel_mixer=None, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(
        DecoderConfig(
            vocab_size=V,
            d_model=64,
            n_layers=2,
            max_seq_len=64,
            block=PreNormBlockConfig(
                token_mixer={"type": "mha", "n_heads": 4, "n_kv_heads": 2},
                channel_mixer=channel_mixer or SwiGLUConfig(),
                norm=RMSNormConfig(),
            ),
        )
    )


def batch(b: int = 4, t: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, V, (b, t), generator=torch.Generator().manual_seed(seed))


def test_forward_and_gradients_match_the_cpu() -> None:
    cpu = decoder()
    dev = copy.deepcopy(cpu).to(DEVICE)
    ids = batch()
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # left padding takes the masked attention path
    outs = []
    for model, where in ((cpu, "cpu"), (dev, DEVICE)):
        out = model(ids.to(where), attention_mask=mask.to(where))
        out.logits.float().pow(2).mean().backward()
        outs.append((out.logits.detach().cpu(), model.lm_head.weight.grad.cpu()))
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(outs[1][1], outs[0][1], atol=2e-4, rtol=2e-3)


def test_greedy_generation_matches_the_cpu_eager_and_compiled() -> None:
    cpu = decoder().eval()
    dev = copy.deepcopy(cpu).to(DEVICE)
    prompts = [[1, 5, 9, 12], [1, 7], [1, 3, 3, 3, 4, 20]]
    sampling = SamplingConfig(max_new_tokens=12)
    want = generate(cpu, prompts, sampling, pad_id=0).tokens
    got = generate(dev, prompts, sampling, pad_id=0).tokens.cpu()
    assert torch.equal(got, want)
    compiled = generate(dev, prompts, sampling.model_copy(update={"compile": True}), pad_id=0)
    assert torch.equal(compiled.tokens.cpu(), want)


def test_auto_precision_trains_in_bf16_where_native_and_learns() -> None:
    model = decoder().to(DEVICE)
    ids = batch(b=8, t=16, seed=2).to(DEVICE)
    data = [{"input_ids": ids, "labels": ids}] * 40  # memorise one batch
    cfg = TrainConfig(steps=40, batch_size=8, progress=False, log_every=10,
                      optimizer=OptimizerConfig(lr=3e-3))  # fmt: skip
    trainer = Trainer(model, SFTObjective(), data, cfg)
    out = trainer.fit()
    assert out["precision"] == resolve_precision("auto", DEVICE)
    first = SFTObjective().loss(decoder().to(DEVICE), data[0]).loss.item()
    assert out["final_train_loss"] < first / 2


def test_lora_merge_equals_the_adapter_forward_on_the_device() -> None:
    splice_lora = pytest.importorskip("splice_lora", reason="splice-lora is not installed")
    model = decoder().to(DEVICE).eval()
    splice_lora.apply_lora(
        model, splice_lora.LoRAConfig(r=4, targets="all-linear", init="gaussian")
    )
    ids = batch().to(DEVICE)
    with torch.no_grad():
        adapted = model(ids).logits
        splice_lora.merge_adapter(model)
        merged = model(ids).logits
    torch.testing.assert_close(merged, adapted, atol=1e-4, rtol=1e-4)


def test_nf4_forward_matches_its_dequantized_weights_on_the_device() -> None:
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    qlora = pytest.importorskip("splice_qlora", reason="splice-qlora is not installed")
    from splice_qlora.configs import NF4Config
    from splice_qlora.export import merge_dequantized
    from splice_qlora.quantizers import quantize

    model = decoder().to(DEVICE).eval()
    report = quantize(model, NF4Config(compute_dtype="float32"))
    assert report is not None
    ids = batch().to(DEVICE)
    with torch.no_grad():
        quantized = model(ids).logits.float()
        dense = merge_dequantized(copy.deepcopy(model), dtype=torch.float32)(ids).logits
    torch.testing.assert_close(quantized, dense.float(), atol=1e-3, rtol=1e-3)
    assert qlora is not None


def test_moe_layer_matches_the_cpu_forward_and_backward() -> None:
    pytest.importorskip("splice_moe", reason="splice-moe is not installed")
    cpu = decoder({"type": "moe", "n_experts": 8, "top_k": 2, "n_shared": 1}).eval()
    dev = copy.deepcopy(cpu).to(DEVICE)
    ids = batch()
    grads = []
    for model, where in ((cpu, "cpu"), (dev, DEVICE)):
        out = model(ids.to(where))
        (out.logits.float().pow(2).mean() + (out.aux_loss or 0)).backward()
        grads.append((out.logits.detach().cpu(), model.lm_head.weight.grad.cpu()))
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(grads[1][1], grads[0][1], atol=2e-4, rtol=2e-3)


def test_grpo_rollout_and_update_on_the_device() -> None:
    """Collect (generate + reward + reference log-probs) and two inner updates on the
    device: the importance ratio is exactly 1 before the first update and moves after it."""
    pytest.importorskip("splice_grpo", reason="splice-grpo is not installed")
    from splice.data.arithmetic import ArithmeticTask
    from splice.data.tokenizer import CharTokenizer
    from splice.registry import get_registry
    from splice.rl.rollout import PromptBatches, Rollouts
    from splice_grpo.configs import GRPOConfig

    tok = CharTokenizer()
    torch.manual_seed(0)
    model = build_model(
        DecoderConfig.model_validate(
            {
                "type": "decoder",
                "vocab_size": tok.vocab_size,
                "d_model": 32,
                "n_layers": 2,
                "max_seq_len": 24,
                "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
            }
        )
    ).to(DEVICE)
    length = {"reward": {"type": "length_penalty", "target": 0, "scale": 1.0}}
    cfg = GRPOConfig.model_validate(
        {"type": "grpo", "rewards": [length], "group_size": 4, "beta": 0.1,
         "inner_iterations": 2, "minibatches": 1}
    )  # fmt: skip
    obj = get_registry().build("objective", cfg, None)
    obj.setup(model)
    prompts = PromptBatches(
        ArithmeticTask("+", max_digits=2), tok, prompts_per_step=3, seed=0
    ).batch(0)
    gen = Rollouts(SamplingConfig(max_new_tokens=6, temperature=1.0), tok, seed=0).generator(0)
    exp = obj.collect(model, prompts, gen)
    assert exp["input_ids"].device.type == torch.device(DEVICE).type
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ratios = []
    for mb in obj.minibatches(exp):
        out = obj.loss(model, mb)
        assert torch.isfinite(out.loss)
        ratios.append((out.metrics["ratio_min"], out.metrics["ratio_max"]))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    assert ratios[0] == (1.0, 1.0) and ratios[-1] != (1.0, 1.0)
