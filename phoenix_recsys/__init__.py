"""phoenix-recsys: the Phoenix recommendation system — hash embeddings, two-tower retrieval, candidate-isolated ranking, feed serving."""

__version__ = "0.2.0"  # keep equal to pyproject.toml [project].version (tests/test_wheel.py checks)

# The notebook API (phoenix_recsys/api.py), loaded on first use so `import phoenix_recsys` stays light.
_API = ("Bundle", "Dataset", "Feed", "JobConfig", "SynthConfig", "dataset_from_tables", "evaluate", "load_bundle",
        "load_dataset", "synthesize", "fit")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from phoenix_recsys import api

        return getattr(api, name)
    raise AttributeError(f"module 'phoenix_recsys' has no attribute {name!r}")
