"""Drift monitoring, one concern a module.

- `stats`: PSI, KS, chi-square, Jensen-Shannon, Wasserstein, and how a column is read;
- `profile`: the reference profile stored with each model at training time;
- `compare`: a batch and its predictions against the profile, column by column;
- `domain`: multivariate drift with a domain classifier;
- `performance`: real metrics per time window once late labels arrive;
- `steps`: the Prefect tasks the monitoring flow wires.

The names below are the package's public surface, importable from `tasks.drift`.
"""

from tasks.drift.compare import compare_to_profile
from tasks.drift.performance import degradation, performance_over_time
from tasks.drift.profile import OTHER, build_profile, load_profile, parse_profile, profile_text, save_profile
from tasks.drift.stats import bin_counts, chi_square_test, jensen_shannon, ks_test, psi, wasserstein

__all__ = [
    "OTHER",
    "bin_counts",
    "build_profile",
    "chi_square_test",
    "compare_to_profile",
    "degradation",
    "jensen_shannon",
    "ks_test",
    "load_profile",
    "parse_profile",
    "performance_over_time",
    "profile_text",
    "psi",
    "save_profile",
    "wasserstein",
]
