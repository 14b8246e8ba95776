"""Data-parallel shards: every rank the same number of steps, whatever the sizes; evaluation
counts every sample once. Unit tests with every rank simulated in one process, then real
Ray Train worker groups of 2 and 3 on uneven data, built-in and user tasks."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from raysweep.context import LocalContext
from raysweep.sharding import ShardSampler, shard_indices, shard_loader
from tests.conftest import make_raw


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 5, 341, 360, 1000])
def test_padded_shards_are_equal_and_cover_every_sample(world, n):
    shards = [shard_indices(n, r, world, seed=3, epoch=2) for r in range(world)]
    assert {len(s) for s in shards} == {math.ceil(n / world)}
    counts = Counter(torch.cat(shards).tolist())
    assert set(counts) == set(range(n))
    # Padding repeats as few samples as it must: ceil(n / world) * world - n extra slots.
    assert sum(counts.values()) - n == math.ceil(n / world) * world - n


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("n", [0, 1, 5, 341])
def test_unpadded_shards_cover_each_sample_exactly_once(world, n):
    shards = [shard_indices(n, r, world, pad=False) for r in range(world)]
    assert sorted(torch.cat(shards).tolist()) == list(range(n))


def test_each_epoch_is_a_new_permutation_the_same_on_every_rank_and_after_a_restart():
    assert torch.equal(shard_indices(100, 1, 2, seed=0, epoch=3), shard_indices(100, 1, 2, seed=0, epoch=3))
    assert not torch.equal(shard_indices(100, 1, 2, seed=0, epoch=3), shard_indices(100, 1, 2, seed=0, epoch=4))
    # One worker: the epoch's permutation of everything, as the loop has always drawn it.
    expected = torch.randperm(100, generator=torch.Generator().manual_seed(0 * 100_003 + 3))
    assert torch.equal(shard_indices(100, 0, 1, seed=0, epoch=3), expected)


@pytest.mark.parametrize("world,n,batch", [(2, 341, 34), (3, 341, 34), (3, 100, 7), (2, 5, 4)])
def test_sharded_loader_gives_every_rank_the_same_number_of_batches(world, n, batch):
    dataset = TensorDataset(torch.arange(n))
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=0)
    per_rank = [shard_loader(loader, r, world, seed=0, pad=True) for r in range(world)]
    assert len({len(list(l)) for l in per_rank}) == 1
    for l in per_rank:
        l.sampler.set_epoch(1)
    first = [torch.cat([b[0] for b in l]).tolist() for l in per_rank]
    for l in per_rank:
        l.sampler.set_epoch(2)
    second = [torch.cat([b[0] for b in l]).tolist() for l in per_rank]
    assert first != second  # reshuffled per epoch
    assert set(sum(first, [])) == set(range(n))


def _Rank(rank, world):
    """A context that says it is rank `rank` of `world` (no collectives are run here)."""
    return LocalContext(max_epochs=2, seed=0, rank=rank, world_size=world)


def test_prepare_data_loader_reshuffles_per_epoch_and_keeps_the_loaders_settings():
    dataset = TensorDataset(torch.arange(50), torch.arange(50) * 2)
    loader = DataLoader(dataset, batch_size=8, shuffle=True, drop_last=False, collate_fn=None)
    ctxs = [_Rank(r, 2) for r in range(2)]
    prepared = [c.prepare_data_loader(loader) for c in ctxs]
    assert [len(p) for p in prepared] == [4, 4] and prepared[0].batch_size == 8
    epoch1 = [[int(i) for x, _ in p for i in x] for p in prepared]
    assert sorted(epoch1[0] + epoch1[1]) == list(range(50))  # 25 each: nothing padded
    for c in ctxs:
        c.report({"val_loss": 1.0})  # epoch 1 done: the next pass is epoch 2's shuffle
    epoch2 = [[int(i) for x, _ in p for i in x] for p in prepared]
    assert epoch2 != epoch1 and sorted(epoch2[0] + epoch2[1]) == list(range(50))
    # Validation: pad=False, every sample once over the ranks, order kept.
    val = [c.prepare_data_loader(DataLoader(TensorDataset(torch.arange(7)), batch_size=2), pad=False) for c in ctxs]
    assert [[int(i) for (x,) in v for i in x] for v in val] == [[0, 2, 4, 6], [1, 3, 5]]


def test_one_worker_gets_its_own_loader_back_apart_from_the_device_move():
    loader = DataLoader(TensorDataset(torch.arange(10)), batch_size=4, shuffle=False)
    prepared = _Rank(0, 1).prepare_data_loader(loader)
    assert prepared.loader is loader and len(prepared) == 3
    assert [b[0].tolist() for b in prepared] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_loaders_that_cannot_be_sharded_say_why():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(range(3))

    with pytest.raises(TypeError, match="IterableDataset has no indices"):
        _Rank(0, 2).prepare_data_loader(DataLoader(Stream(), batch_size=2))
    own = DataLoader(TensorDataset(torch.arange(10)), sampler=ShardSampler(10, 0, 1, shuffle=False, seed=0, pad=True))
    with pytest.raises(TypeError, match="ShardSampler"):
        _Rank(0, 2).prepare_data_loader(own)


# --------------------------------------------------------------------------- real worker groups


def _params(out, rank, epoch):
    return torch.load(out / f"params-rank{rank}-epoch{epoch}.pt", weights_only=True)


def test_builtin_task_on_uneven_shards_keeps_ranks_identical(ray_session, tmp_path, tracking_uri):
    """The issue's command: breast_cancer's 341 training rows at batch 34 (gloo crashed on 2:
    171 and 170 rows, 6 batches against 5). Three workers' shards (114, 114, 113) have 4
    batches each, padded or not, so they prove nothing more here; three ranks are the next test's."""
    from raysweep.search import run_search
    from raysweep.spec import validate

    workers = 2
    spec = validate(make_raw(**{
        "name": f"uneven-{workers}", "task": "tests.data_tasks:RecordsParams", "max_epochs": 3,
        "search.num_samples": 1, "scheduler.type": "fifo", "resources.workers_per_trial": workers,
        "space": {"lr": {"type": "choice", "values": [0.01]}},
        "fixed": {"dataset": "breast_cancer", "batch_size": 34, "hidden": 16, "out_dir": str(tmp_path)},
    }))
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri)
    (trial,) = result.trials
    assert trial["status"] == "finished" and trial["epochs"] == 3
    for epoch in (1, 2, 3):
        rank0 = _params(tmp_path, 0, epoch)
        for rank in range(1, workers):
            other = _params(tmp_path, rank, epoch)
            assert all(torch.equal(p, other[k]) for k, p in rank0.items()), (rank, epoch)
    assert not all(torch.equal(p, _params(tmp_path, 0, 3)[k]) for k, p in _params(tmp_path, 0, 1).items())
    assert trial["metrics"]["val_accuracy"] > 0.85


def test_user_loops_with_prepare_data_loader_and_shard_train_disjoint_shards(ray_session, tmp_path, tracking_uri):
    """Three ranks at batch 16. A DataLoader over 300 samples: the ranks train on disjoint
    shards whose union is the train set, each sample once per epoch (100 each, 7 batches,
    the last of 4). `ctx.shard` over 301: the union is the train set, the padding's 2 samples
    twice. Validation counts each sample once either way."""
    from raysweep.search import run_search
    from raysweep.spec import validate
    from tests.data_tasks import IndexedDigits

    n_val = len(IndexedDigits("val"))
    for mode, n_train in (("loader", 300), ("shard", 301)):
        out = tmp_path / mode
        out.mkdir()
        spec = validate(make_raw(**{
            "name": f"own-{mode}", "task": "tests.data_tasks:own_loader", "max_epochs": 2,
            "search.num_samples": 1, "scheduler.type": "fifo", "resources.workers_per_trial": 3,
            "space": {"lr": {"type": "choice", "values": [0.5]}},
            "fixed": {"feed": mode, "batch_size": 16, "n_train": n_train, "out_dir": str(out)},
        }))
        result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri)
        (trial,) = result.trials
        assert trial["status"] == "finished" and trial["epochs"] == 2, mode
        assert trial["metrics"]["val_count"] == n_val  # exact global validation: no padded sample twice
        orders = []
        for epoch in (1, 2):
            seen = [torch.load(out / f"seen-rank{r}-epoch{epoch}.pt", weights_only=True) for r in range(3)]
            assert {s["steps"] for s in seen} == {math.ceil(math.ceil(n_train / 3) / 16)}, (mode, epoch)
            counts = Counter(sum((s["train"] for s in seen), []))
            assert set(counts) == set(range(n_train)), (mode, epoch)
            assert sum(counts.values()) == math.ceil(n_train / 3) * 3, (mode, epoch)  # 300 or 303
            if n_train % 3 == 0:
                assert set(counts.values()) == {1}, (mode, epoch)
            assert sorted(sum((s["val"] for s in seen), [])) == list(range(n_val)), (mode, epoch)
            for s in seen[1:]:
                assert all(torch.equal(p, s["params"][k]) for k, p in seen[0]["params"].items()), (mode, epoch)
            orders.append(seen[0]["train"])
        assert orders[0] != orders[1], mode  # reshuffled between epochs
