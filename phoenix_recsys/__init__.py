"""phoenix-recsys: the Phoenix recommendation system — hash embeddings, two-tower retrieval, candidate-isolated ranking, feed serving."""

__version__ = "0.2.0"  # keep equal to pyproject.toml [project].version (tests/test_wheel.py checks)
