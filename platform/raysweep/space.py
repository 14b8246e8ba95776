"""Spec parameters -> Optuna distributions, and the sampler that draws from them."""

from __future__ import annotations

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from .spec import Choice, IntParam, LogUniform, Spec, Uniform


def to_distribution(param) -> BaseDistribution:
    if isinstance(param, Uniform):
        return FloatDistribution(param.low, param.high)
    if isinstance(param, LogUniform):
        return FloatDistribution(param.low, param.high, log=True)
    if isinstance(param, IntParam):
        return IntDistribution(param.low, param.high, step=param.step, log=param.log)
    if isinstance(param, Choice):
        return CategoricalDistribution(param.values)
    raise TypeError(f"unsupported parameter {param!r}")


def optuna_space(spec: Spec) -> dict[str, BaseDistribution]:
    return {name: to_distribution(param) for name, param in spec.space.items()}


def build_sampler(spec: Spec) -> optuna.samplers.BaseSampler:
    """The sampler, built explicitly so a search is reproducible from its seed.

    Optuna 5 changed TPE's defaults (multivariate, constant liar); spelling them out keeps
    a spec's behaviour fixed across Optuna releases. Multivariate TPE models the joint
    distribution (lr and batch size interact); constant liar keeps concurrent trials from
    all sampling the same point while earlier ones are still running.
    """
    if spec.search.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(
        seed=spec.seed,
        n_startup_trials=spec.search.n_startup_trials,
        multivariate=True,
        constant_liar=True,
    )
