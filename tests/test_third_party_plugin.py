"""An outsider's plugin extends splice without touching the core.

``tests/plugins/splice-example-ffn`` is a separate distribution with its own
``pyproject.toml`` and a ``splice`` entry point registering the ``relu2`` ChannelMixer.
The test installs it (a real wheel build) and composes a DecoderLM with it through
config only: the core never names the plugin. ``docs/writing-plugins.md`` walks
through this package.
"""

from __future__ import annotations

import json

# Runs in a fresh interpreter with the plugin installed; prints one JSON line of facts.
COMPOSE_AND_TRAIN = """
import json, torch
from splice.models.build import build_model
from splice.models.configs import DecoderConfig

mha = {"type": "mha", "n_heads": 4}
config = {
    "type": "decoder", "vocab_size": 40, "d_model": 32, "n_layers": 3, "max_seq_len": 16,
    "block": {"type": "pre_norm", "token_mixer": mha,
              "channel_mixer": {"type": "relu2", "multiple": 2.0}},
    # the plugin's FFN everywhere except layer 1, which keeps the core's GELU MLP
    "overrides": [{"layers": [1], "block": {"type": "pre_norm", "token_mixer": mha}}],
}
cfg = DecoderConfig.model_validate(config)
again = DecoderConfig.model_validate_json(cfg.model_dump_json())

torch.manual_seed(0)
model = build_model(cfg)
ids = torch.randint(0, 40, (2, 9))
out = model(ids[:, :-1])
loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, 40), ids[:, 1:].reshape(-1))
loss.backward()
ffns = [type(block.ffn).__module__ + "." + type(block.ffn).__name__ for block in model.blocks]
up = model.blocks[0].ffn.up
print(json.dumps({
    "config_type": type(cfg.block.channel_mixer).__module__,
    "roundtrip": again == cfg,
    "dumped_tag": json.loads(cfg.model_dump_json())["block"]["channel_mixer"],
    "ffns": ffns,
    "up_shape": list(up.weight.shape),
    "logits_shape": list(out.logits.shape),
    "loss_finite": bool(torch.isfinite(loss)),
    "grad_norm_up": float(up.weight.grad.norm()),
    "grad_norm_embed": float(model.embed.weight.grad.norm()),
    "all_grads": all(p.grad is not None for p in model.parameters()),
}))
"""


def test_compose_a_decoder_with_a_third_party_channel_mixer(install_plugin, run_python):
    done = run_python("-c", COMPOSE_AND_TRAIN, plugins=[install_plugin("splice-example-ffn")])
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout.splitlines()[-1])
    assert facts["config_type"] == "splice_example_ffn.configs"
    assert facts["roundtrip"] is True
    assert facts["dumped_tag"] == {
        "type": "relu2",
        "hidden_dim": None,
        "multiple": 2.0,
        "bias": False,
    }
    assert facts["ffns"] == [
        "splice_example_ffn.ffn.ReLU2MLP",
        "splice.nn.ffn.MLP",
        "splice_example_ffn.ffn.ReLU2MLP",
    ]
    assert facts["up_shape"] == [64, 32]  # hidden = multiple * d_model
    assert facts["logits_shape"] == [2, 8, 40]
    assert facts["loss_finite"] is True
    assert facts["grad_norm_up"] > 0 and facts["grad_norm_embed"] > 0
    assert facts["all_grads"] is True


def test_plugin_config_fields_are_validated_by_the_plugin_config(install_plugin, run_python):
    code = (
        "from pydantic import ValidationError\n"
        "from splice.nn.configs import PreNormBlockConfig\n"
        "try:\n"
        "    PreNormBlockConfig.model_validate({'token_mixer': {'type': 'mha', 'n_heads': 2},\n"
        "        'channel_mixer': {'type': 'relu2', 'multiple': -1}})\n"
        "except ValidationError as exc:\n"
        "    print([('.'.join(map(str, e['loc'])), e['type']) for e in exc.errors()])\n"
    )
    done = run_python("-c", code, plugins=[install_plugin("splice-example-ffn")])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[('channel_mixer.multiple', 'greater_than')]"


def test_without_the_plugin_the_tag_is_unknown_and_listed(run_python):
    code = (
        "from pydantic import ValidationError\n"
        "from splice.nn.configs import PreNormBlockConfig\n"
        "try:\n"
        "    PreNormBlockConfig.model_validate({'token_mixer': {'type': 'mha', 'n_heads': 2},\n"
        "        'channel_mixer': {'type': 'relu2'}})\n"
        "except ValidationError as exc:\n"
        "    print(exc.errors()[0]['loc'], exc.errors()[0]['msg'])\n"
    )
    done = run_python("-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        "('channel_mixer',) Value error, unknown channel_mixer type 'relu2'"
    )
    listed = done.stdout.partition("registered channel_mixer types: [")[2].partition("]")[0]
    assert {"'mlp'", "'swiglu'"} <= set(listed.split(", ")), done.stdout
    assert "'relu2'" not in listed


def test_the_plugin_passes_splices_conformance_suite(install_plugin, run_python, tmp_path):
    """The plugin's own tests (``splice.testing.ChannelMixerConformance``) pass once installed."""
    from pathlib import Path

    tests = Path(__file__).parent / "plugins" / "splice-example-ffn" / "tests"
    done = run_python(
        "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tests.parent),
        "--basetemp", str(tmp_path / "pytest"), str(tests),
        plugins=[install_plugin("splice-example-ffn")],
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout.splitlines()[-1] and "failed" not in done.stdout
