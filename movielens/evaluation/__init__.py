"""Scoring a trained model: error metrics, ranking metrics and cross-validation."""
