"""splice-vision entry point: encoders, connectors, vision-language models, the shapes task."""

from __future__ import annotations

from typing import Any

from splice.hookspecs import hookimpl

from splice_vision import configs as c


@hookimpl
def register_encoders(register: Any) -> None:
    register(c.ViTConfig, "splice_vision.vit:build_vit")


@hookimpl
def register_connectors(register: Any) -> None:
    register(c.LinearProjectorConfig, "splice_vision.connectors:build_linear_projector")
    register(c.MLPProjectorConfig, "splice_vision.connectors:build_mlp_projector")
    register(c.QFormerConfig, "splice_vision.connectors:build_qformer")


@hookimpl
def register_models(register: Any) -> None:
    register(c.CLIPConfig, "splice_vision.clip:build_clip")
    register(c.LlavaConfig, "splice_vision.vlm:build_llava")
    register(c.FlamingoConfig, "splice_vision.flamingo:build_flamingo")
    register(c.NativeVLMConfig, "splice_vision.vlm:build_native")


@hookimpl
def register_tasks(register: Any) -> None:
    register(c.ShapesTaskConfig, "splice_vision.data:build_shapes")
