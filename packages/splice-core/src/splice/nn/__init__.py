"""Neural-network parts every model needs: norms, positions, FFNs, blocks, masks."""
