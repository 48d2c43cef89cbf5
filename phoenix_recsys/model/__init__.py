"""Models: config, mask, layers, hash embeddings, the ranker, two-tower retrieval, cached scoring."""

from phoenix_recsys.model.cached import CachedRanker
from phoenix_recsys.model.config import (
    DType,
    HistoryAttention,
    PhoenixModelConfig,
    PositionScheme,
    TransformerConfig,
    UserPooling,
)
from phoenix_recsys.model.embeddings import HashEmbeddingTables, RecsysEmbeddings
from phoenix_recsys.model.mask import make_recsys_attn_mask
from phoenix_recsys.model.ranker import (
    ContextCache,
    PhoenixModel,
    RankingOutput,
    RecsysModelOutput,
    probabilities_from_logits,
    ranking_output,
)
from phoenix_recsys.model.retrieval import (
    PhoenixRetrievalModel,
    RetrievalOutput,
    l2_normalize,
    retrieve_top_k,
)
from phoenix_recsys.model.validation import validate_batch

__all__ = [
    "CachedRanker",
    "ContextCache",
    "DType",
    "HashEmbeddingTables",
    "HistoryAttention",
    "PhoenixModel",
    "PhoenixModelConfig",
    "PhoenixRetrievalModel",
    "PositionScheme",
    "RankingOutput",
    "RecsysEmbeddings",
    "RecsysModelOutput",
    "RetrievalOutput",
    "TransformerConfig",
    "UserPooling",
    "l2_normalize",
    "make_recsys_attn_mask",
    "probabilities_from_logits",
    "ranking_output",
    "retrieve_top_k",
    "validate_batch",
]
