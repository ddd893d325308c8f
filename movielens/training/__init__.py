"""Fitting the rating model: the backends, the one epoch loop, and the engines that plug into it."""
