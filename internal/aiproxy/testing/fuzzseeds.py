"""The seeds a seeded fuzz test runs: its own by default, or FUZZ_SEED (the first) and FUZZ_CASES
(how many) from the environment, the same two settings for every test_*_fuzz.py. A failure names its
seed as `seed_label` writes it, and `FUZZ_SEED=<n> FUZZ_CASES=1` runs that seed alone again."""

from __future__ import annotations

import os


def fuzz_seeds(first: int, count: int) -> range:
    """`count` seeds from `first` (the test's defaults), unless FUZZ_SEED or FUZZ_CASES say otherwise."""
    start = int(os.environ.get("FUZZ_SEED", first))
    return range(start, start + int(os.environ.get("FUZZ_CASES", count)))


def seed_label(seed: int) -> str:
    """How a failure names its seed: with the settings that rerun it alone."""
    return f"seed {seed} (FUZZ_SEED={seed} FUZZ_CASES=1)"


def seeds_from_environment() -> bool:
    """Whether FUZZ_SEED or FUZZ_CASES chose the seeds: a check that the default seeds give a mix of
    outcomes (the generator reaches both sides) need not hold for a few seeds chosen by hand."""
    return "FUZZ_SEED" in os.environ or "FUZZ_CASES" in os.environ
