"""Spec parameters -> Optuna distributions, and the sampler that draws from them."""

from __future__ import annotations

import hashlib

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


def config_params(spec: Spec, config: dict) -> tuple[dict, dict[str, BaseDistribution]]:
    """A trial's searched hyperparameters and their distributions, as `optuna.trial.create_trial`
    takes them (an in-memory study of a search's trials: views.py, pareto.py)."""
    space = optuna_space(spec)
    return {k: config[k] for k in space if k in config}, {k: d for k, d in space.items() if k in config}


def round_seed(seed: int, round_no: int) -> int:
    """The sampler's seed in round `round_no` of a search (`--resume --samples +N`, resume.py).

    Round 0 uses the spec's seed itself. A later round seeded the same would draw the same
    configurations again (all of them for the random sampler, TPE's start-up trials), so round
    k > 0 uses the first 4 bytes (little-endian) of SHA-256 of "<seed>:<k>": unrelated to the
    other rounds' seeds, and fixed for good (no library version in it), so every round, and the
    whole search, is reproducible.
    """
    if round_no == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:{round_no}".encode()).digest()[:4], "little")


def build_sampler(spec: Spec, round_no: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler, built explicitly so a search is reproducible from its seed (`round_seed`).

    Optuna 5 changed TPE's defaults (multivariate, constant liar); spelling them out keeps
    a spec's behaviour fixed across Optuna releases. Multivariate TPE models the joint
    distribution (lr and batch size interact); constant liar keeps concurrent trials from
    all sampling the same point while earlier ones are still running.
    """
    seed = round_seed(spec.seed, round_no)
    if spec.search.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=spec.search.n_startup_trials,
        multivariate=True,
        constant_liar=True,
    )
