"""The read path of the feed, one small stage per module, in SPEC 7 order:
sources -> hydrate -> (filters: `serve.filters`) -> rank -> select (scorers) -> explain."""

from phoenix_recsys.serve.feed.explain import explain_items
from phoenix_recsys.serve.feed.hydrate import hydrate
from phoenix_recsys.serve.feed.rank import rank_candidates
from phoenix_recsys.serve.feed.select import feed_scoring_config, score_feed
from phoenix_recsys.serve.feed.sources import (
    cap_followed,
    cold_start_sources,
    in_network_source,
    out_of_network_source,
)

__all__ = [
    "cap_followed",
    "cold_start_sources",
    "explain_items",
    "feed_scoring_config",
    "hydrate",
    "in_network_source",
    "out_of_network_source",
    "rank_candidates",
    "score_feed",
]
