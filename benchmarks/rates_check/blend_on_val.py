"""Post-hoc blend of the trained ranker with the per-user training rate, weight chosen on validation
(2-fold by user inside validation, then all of validation); test read once at the chosen weight."""
import sys

import numpy as np

from phoenix_recsys.data.examples import build_ranking_examples, split_by_time
from phoenix_recsys.data.schema import load_dataset
from phoenix_recsys.train.bundle import load_bundle
from phoenix_recsys.train.evaluate import _logit, ranker_baselines
from phoenix_recsys.train.inference import predict_ranker
from phoenix_recsys.train.metrics import auroc

work = sys.argv[1]
ds = load_dataset(f"{work}/data")
b = load_bundle(sys.argv[2] if len(sys.argv) > 2 else f"{work}/bundle")
cfg = b.config
prot = split_by_time(ds, 0.1, 0.1)
codes = prot.assign(ds)
eng = b.train_config("ranker").get("engagement_actions")
W = np.linspace(-0.5, 2.0, 26)
res = {}
for split in ("val", "test"):
    ex = build_ranking_examples(ds, cfg.hash_config, history_len=cfg.history_seq_len, max_candidates=cfg.candidate_seq_len,
                                split=split, protocol=prot, engagement_actions=eng)
    pm = predict_ranker(b.ranker, ex)
    base = ranker_baselines(ds, codes, ex)["base_rate"]
    m = ex.candidate_mask
    users = np.broadcast_to(ex.user_ids[:, None], m.shape)[m]
    res[split] = (pm, base, ex, m, users)
for i, a in enumerate(ds.actions):
    if a.name not in ("click", "cart", "favorite", "buy", "long_view"):
        continue
    out = {}
    for split in ("val", "test"):
        pm, base, ex, m, users = res[split]
        y = ex.labels[..., i][m] > 0
        lm = _logit(pm[..., i][m])
        lb = _logit(base[..., i][m])
        out[split] = (y, lm, lb, users)
    y, lm, lb, users = out["val"]
    uu = np.unique(users)
    rng = np.random.default_rng(0)
    half = set(rng.permutation(uu)[: len(uu) // 2].tolist())
    f = np.array([u in half for u in users])
    cv = []
    for tr, te in ((f, ~f), (~f, f)):
        w = W[np.argmax([auroc(y[tr], lm[tr] + w * lb[tr]) for w in W])]
        cv.append(auroc(y[te], lm[te] + w * lb[te]) - auroc(y[te], lb[te]))
    wv = W[np.argmax([auroc(y, lm + w * lb) for w in W])]
    yt, lmt, lbt, _ = out["test"]
    print(f"{a.name}: val model {auroc(y, lm):.4f} base {auroc(y, lb):.4f} | 2-fold-by-user (blend - base) {np.mean(cv):+.4f} "
          f"| val-chosen w {wv:.2f} | test model {auroc(yt, lmt):.4f} base {auroc(yt, lbt):.4f} blend {auroc(yt, lmt + wv * lbt):.4f}")
print("bootstrap by user (500 resamples, seed 0): sd of AUROC(model) - AUROC(base_rate)")
for i, a in enumerate(ds.actions):
    if a.name not in ("click", "cart", "favorite", "buy", "long_view"):
        continue
    for split in ("val", "test"):
        pm, base, ex, m, users = res[split]
        y = ex.labels[..., i][m] > 0
        lm = pm[..., i][m]
        lb = base[..., i][m]
        uu = np.unique(users)
        rows = {u: np.flatnonzero(users == u) for u in uu}
        rng = np.random.default_rng(0)
        d = []
        for _ in range(500):
            idx = np.concatenate([rows[u] for u in rng.choice(uu, len(uu))])
            if y[idx].all() or not y[idx].any():
                continue
            d.append(auroc(y[idx], lm[idx]) - auroc(y[idx], lb[idx]))
        print(f"  {a.name} {split}: pos {int(y.sum())} diff {auroc(y, lm) - auroc(y, lb):+.4f} sd {np.std(d):.4f}")
