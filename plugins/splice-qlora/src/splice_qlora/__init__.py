"""bitsandbytes quantizers and QLoRA for splice."""
