"""Tiny models and random batches shared by the tests, benchmarks and demos."""

from phoenix_recsys.testing.fixtures import random_batch, tiny_config

__all__ = ["random_batch", "tiny_config"]
