"""phoenix-recsys: the Phoenix recommendation system — hash embeddings, two-tower retrieval, candidate-isolated ranking, feed serving."""

__version__ = "0.1.0"
