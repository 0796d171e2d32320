"""The trained network as bits: file format, folding, kernels, summary."""
