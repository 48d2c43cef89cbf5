"""Validation/test analysis of the user x item base rate on kuairand and taobao (no training)."""
import tempfile
from pathlib import Path

import numpy as np

from phoenix_recsys.data.examples import TRAIN, build_ranking_examples, split_by_time
from phoenix_recsys.hashing import HashConfig
from phoenix_recsys.train.evaluate import _smoothed_rates, ranker_baselines
from phoenix_recsys.train.metrics import auroc
from phoenix_recsys.train.quality import jobs


def hm_se(a: float, npos: int, nneg: int) -> float:
    """Hanley-McNeil standard error of one AUROC `a` with `npos` positives and `nneg` negatives."""
    q1 = a / (2 - a)
    q2 = 2 * a * a / (1 + a)
    return np.sqrt((a * (1 - a) + (npos - 1) * (q1 - a * a) + (nneg - 1) * (q2 - a * a)) / (npos * nneg))


rng = np.random.default_rng(0)
for name, acts, S, C in (("kuairand", ("click", "long_view"), 64, 8), ("taobao", ("click", "cart", "favorite", "buy"), 128, 16)):
    job = jobs()[name]
    out = Path(tempfile.mkdtemp()) / name
    ds = job.make_data(out)
    prot = split_by_time(ds, 0.1, 0.1)
    codes = prot.assign(ds)
    eng = job.config.get("train", {}).get("engagement_actions")
    for split in ("val", "test"):
        ex = build_ranking_examples(ds, HashConfig(), history_len=S, max_candidates=C, split=split, protocol=prot, engagement_actions=eng)
        b = ranker_baselines(ds, codes, ex)
        # user-only rate (train split), same smoothing
        train = codes == TRAIN
        y = np.where(ds.action_matrix()[train] > 0, 1.0, 0.0)
        prior = y.mean(0)
        qu = np.broadcast_to(ex.user_ids[:, None], ex.candidate_post_ids.shape)
        b["user_rate"] = _smoothed_rates(ds.column("user_id")[train], y, qu, prior)
        # user rate from every event strictly before the split start (train+val for test)
        before = codes < (1 if split == "val" else 2)
        yb = np.where(ds.action_matrix()[before] > 0, 1.0, 0.0)
        b["user_rate_prefix"] = _smoothed_rates(ds.column("user_id")[before], yb, qu, yb.mean(0))
        m = ex.candidate_mask
        users = qu[m]
        print(f"== {name} {split}: {int(m.sum())} impressions, {len(np.unique(users))} users")
        for a in acts:
            i = list(ds.actions.names).index(a)
            lab = ex.labels[..., i][m] > 0
            npos, nneg = int(lab.sum()), int((~lab).sum())
            row = []
            for k in ("popularity", "user_rate", "user_rate_prefix", "base_rate"):
                s = b[k][..., i][m]
                au = auroc(lab, s)
                row.append(f"{k} {au:.4f}±{hm_se(au, npos, nneg):.4f}")
            # bootstrap over users: sd of (user_rate - base_rate) AUROC difference
            uu = np.unique(users)
            diffs = []
            for _ in range(200):
                pick = rng.choice(uu, len(uu))
                idx = np.concatenate([np.flatnonzero(users == u) for u in pick])
                if lab[idx].all() or not lab[idx].any():
                    continue
                diffs.append(auroc(lab[idx], b["base_rate"][..., i][m][idx]) - auroc(lab[idx], b["user_rate"][..., i][m][idx]))
            print(f"  {a}: pos {npos} neg {nneg} | " + " | ".join(row) + f" | boot-by-user sd(base-user) {np.std(diffs):.4f}, sd(base AUROC) n/a")
