import os

from hypothesis import HealthCheck, settings

# CI machines are small and shared: judge properties by examples, not by wall time.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
