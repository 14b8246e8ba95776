"""Spec parameters map onto Optuna distributions, and the sampler is seeded."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from raysweep.space import build_sampler, optuna_space
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


def _draws(spec, n=12):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=build_sampler(spec))
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
