"""Data layer: the on-disk dataset format, synthetic worlds, importers, example building, stats."""

from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.data.examples import (
    LeaveOneOut,
    PostCorpus,
    RankingExamples,
    RetrievalExamples,
    TimeSplit,
    build_ranking_examples,
    build_retrieval_examples,
    leave_one_out,
    post_corpus,
    split_by_time,
)
from phoenix_recsys.data.importers import ImportFormat, import_dataset
from phoenix_recsys.data.schema import PRODUCT_SURFACE_VOCAB_SIZE, Dataset, load_dataset, write_dataset
from phoenix_recsys.data.stats import DatasetStats, compute_stats
from phoenix_recsys.data.synth import (
    SynthConfig,
    World,
    load_world,
    synthesize,
    true_action_probs,
    true_affinity,
)

__all__ = [
    "PRODUCT_SURFACE_VOCAB_SIZE",
    "Dataset",
    "DatasetStats",
    "ImportFormat",
    "LeaveOneOut",
    "PostCorpus",
    "RankingExamples",
    "RecsysBatch",
    "RetrievalExamples",
    "SynthConfig",
    "TimeSplit",
    "World",
    "build_ranking_examples",
    "build_retrieval_examples",
    "compute_stats",
    "import_dataset",
    "leave_one_out",
    "load_dataset",
    "load_world",
    "post_corpus",
    "split_by_time",
    "synthesize",
    "true_action_probs",
    "true_affinity",
    "write_dataset",
]
