"""Conformance testing for splice components (PEFT-style common tester).

Plain functions (``check_output``, ``check_gradients``, ``check_state_dict_roundtrip``,
``check_config_roundtrip``, ``check_determinism``, ``check_position_mixing``,
``check_kv_cache``, ``check_packing_isolation``, ``check_padding_isolation``,
``check_batch_composition``, ``check_length_consistency``, ``check_parameters_registered``,
``check_config_fields_honoured``, ``run_all``) take a registered config and a ``BuildContext``;
the pytest suites (``TokenMixerConformance``, ``ChannelMixerConformance``, ...) run
them from a subclass that defines ``make_config()``. Add a kind with ``register_spec``.

Every other registered kind has its suite too, subclassed the same way:
``PreferenceLossConformance``, ``AdvantageEstimatorConformance``,
``TokenAdvantageEstimatorConformance``, ``PolicyLossConformance``, ``RewardConformance``,
``AdapterConformance``, ``QuantizerConformance`` (``splice.testing.preference`` / ``rl`` / ``rewards`` /
``adapters``), ``PositionalConformance``, ``EncoderConformance``, ``TaskConformance``,
``ObjectiveConformance`` (``positional`` / ``encoders`` / ``tasks`` / ``objectives``; their
failures name the component's tag, plugin and module: ``splice.testing.naming``).
splice-rag's ``RetrieverConformance`` lives in ``splice_rag.testing``.

``splice.testing.resume`` (imported on its own) tests exact resume: it SIGKILLs a
``splice run`` after a checkpoint, resumes it, and compares it bit for bit with an
uninterrupted run.
"""

from splice.testing.adapters import AdapterConformance, QuantizerConformance
from splice.testing.checks import (
    build_seeded,
    check_config_roundtrip,
    check_determinism,
    check_gradients,
    check_kv_cache,
    check_output,
    check_position_mixing,
    check_state_dict_roundtrip,
    make_probe,
    perturb_parameters,
    run_all,
)
from splice.testing.encoders import EncoderConformance
from splice.testing.isolation import (
    check_batch_composition,
    check_length_consistency,
    check_packing_isolation,
    check_padding_isolation,
)
from splice.testing.objectives import ObjectiveConformance
from splice.testing.positional import PositionalConformance
from splice.testing.preference import PreferenceLossConformance
from splice.testing.regularizers import RegularizerConformance
from splice.testing.rewards import RewardConformance
from splice.testing.rl import (
    AdvantageEstimatorConformance,
    PolicyLossConformance,
    TokenAdvantageEstimatorConformance,
)
from splice.testing.specs import KindSpec, Probe, Result, kind_of, register_spec, spec_for
from splice.testing.suites import (
    BlockConformance,
    CachedModelConformance,
    CachedTokenMixerConformance,
    ChannelMixerConformance,
    ConformanceSuite,
    ConnectorConformance,
    ModelConformance,
    NormConformance,
    TokenMixerConformance,
    run_suite,
)
from splice.testing.tasks import TaskConformance
from splice.testing.wiring import check_config_fields_honoured, check_parameters_registered

__all__ = [
    "AdapterConformance",
    "AdvantageEstimatorConformance",
    "BlockConformance",
    "CachedModelConformance",
    "CachedTokenMixerConformance",
    "ChannelMixerConformance",
    "ConformanceSuite",
    "ConnectorConformance",
    "EncoderConformance",
    "KindSpec",
    "ModelConformance",
    "NormConformance",
    "ObjectiveConformance",
    "PolicyLossConformance",
    "PositionalConformance",
    "PreferenceLossConformance",
    "Probe",
    "QuantizerConformance",
    "RegularizerConformance",
    "Result",
    "RewardConformance",
    "TaskConformance",
    "TokenAdvantageEstimatorConformance",
    "TokenMixerConformance",
    "build_seeded",
    "check_batch_composition",
    "check_config_fields_honoured",
    "check_config_roundtrip",
    "check_determinism",
    "check_gradients",
    "check_kv_cache",
    "check_length_consistency",
    "check_output",
    "check_packing_isolation",
    "check_padding_isolation",
    "check_parameters_registered",
    "check_position_mixing",
    "check_state_dict_roundtrip",
    "kind_of",
    "make_probe",
    "perturb_parameters",
    "register_spec",
    "run_all",
    "run_suite",
    "spec_for",
]
