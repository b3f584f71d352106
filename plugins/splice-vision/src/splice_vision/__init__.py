"""splice-vision: ViT/CLIP encoders, VLM connectors, gated cross-attention, native VLMs."""
