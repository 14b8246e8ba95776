"""Spec parameters map onto Optuna distributions, and the sampler is seeded."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from raysweep.space import build_sampler, optuna_space, round_seed
from raysweep.spec import validate
from tests.conftest import make_raw


def test_each_parameter_type_maps_to_its_distribution():
    spec = validate(make_raw(**{
        "space.units": {"type": "int", "low": 16, "high": 256, "log": True},
        "space.layers": {"type": "int", "low": 1, "high": 5, "step": 2},
    }))
    space = optuna_space(spec)
    assert space["lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert space["dropout"] == FloatDistribution(0.0, 0.3)
    assert space["batch_size"] == CategoricalDistribution([64, 128])
    assert space["units"] == IntDistribution(16, 256, log=True)
    assert space["layers"] == IntDistribution(1, 5, step=2)


def _draws(spec, n=12, round_no=0):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=build_sampler(spec, round_no))
    space = optuna_space(spec)
    out = []
    for _ in range(n):
        trial = study.ask(space)
        out.append(dict(trial.params))
        study.tell(trial, trial.params["lr"])
    return out


def test_same_seed_same_trials_and_a_new_seed_differs():
    for algorithm in ("tpe", "random"):
        spec = validate(make_raw(**{"search.algorithm": algorithm}))
        assert _draws(spec) == _draws(spec)
        assert _draws(spec) != _draws(validate(make_raw(**{"search.algorithm": algorithm, "seed": 1})))


def test_samplers_are_the_ones_named():
    assert isinstance(build_sampler(validate(make_raw())), optuna.samplers.TPESampler)
    assert isinstance(build_sampler(validate(make_raw(**{"search.algorithm": "random"}))), optuna.samplers.RandomSampler)


def test_each_round_samples_its_own_reproducible_stream():
    """`--resume --samples +N` rounds: none replays another's draws; each is the same every time."""
    assert round_seed(7, 0) == 7  # round 0 keeps the spec's seed: existing searches draw as before
    assert round_seed(0, 1) == 709825519  # the documented derivation: a search extended later draws the same
    assert round_seed(7, 1) == round_seed(7, 1) and len({round_seed(7, k) for k in range(4)} | {round_seed(8, 1)}) == 5
    for algorithm in ("tpe", "random"):  # TPE's first trials are random ones
        spec = validate(make_raw(**{"search.algorithm": algorithm}))
        rounds = [_draws(spec, round_no=k) for k in range(3)]
        assert rounds[0] == _draws(spec) and rounds[2] == _draws(spec, round_no=2)
        lrs = [draw["lr"] for draws in rounds for draw in draws]
        assert len(set(lrs)) == len(lrs), algorithm
