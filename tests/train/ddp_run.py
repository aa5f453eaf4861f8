"""One rank of the DDP test (tests/train/test_train.py runs it under `torchrun --nproc_per_node 2`): a few steps of
training on CPU/gloo, recording which samples this rank loaded, which files it saved, and its final weights."""

import json
import os
import sys
from pathlib import Path

import torch

import flow.train.loop as loop
from flow.train.loader import TrainSet

data, out = sys.argv[1], Path(sys.argv[2])
rank = int(os.environ["RANK"])
seen, saved = [], []
get = TrainSet.__getitem__
TrainSet.__getitem__ = lambda self, key: (seen.append(key), get(self, key))[1]
save = loop.save_atomic
loop.save_atomic = lambda obj, path: (saved.append(str(path)), save(obj, path))[1]

cfg = loop.TrainConfig(variant="4w4a", img=64, epochs=1, batch=2, data=data, out=str(out / "run"), optimizer="adamw",
                       lr0=0.003, weight_decay=0.01, warmup_epochs=0.5, collect_stats_steps=1, eval_every=1,
                       amp=False, workers=0, limit_val=2)
r = loop.train(cfg, progress=False)
torch.save({k: v for k, v in r["model"].named_parameters()}, out / f"params{rank}.pt")
(out / f"rank{rank}.json").write_text(json.dumps({"seen": seen, "saved": saved}))
