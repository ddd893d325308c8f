"""The compiled engine: Numba kernels of the standard model's own math, cached by content."""
