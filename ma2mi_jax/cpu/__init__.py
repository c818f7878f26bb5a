"""CPU-only speed-ups: small-map convolutions as products, and the host allocator setting."""
