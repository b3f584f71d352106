"""Model families assembled from configs: decoder-only LM, encoder-decoder, vision-language."""
