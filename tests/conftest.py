"""Shared pytest configuration: hypothesis profiles and helpers."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Under the sanitizers (tools/sanitize.sh), fewer examples of the same derandomized draws.
settings.register_profile(
    "sanitize",
    max_examples=10,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
profile = os.environ.get("DENSEKIT_HYPOTHESIS_PROFILE") or (
    "ci" if os.environ.get("CI") else "default"
)
settings.load_profile(profile)
