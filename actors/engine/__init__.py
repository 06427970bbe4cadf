"""Inference engines of the rollout actors."""
