"""Fixtures shared by the suites of several packages."""

import os
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, settings

# Properties are about results, not speed: on a shared 2-core CI machine a slow example
# (a first numba compilation, a busy neighbour) must not fail a run. Example counts
# stay as each test sets them.
settings.register_profile("unioncard", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("unioncard")


@pytest.fixture
def run_bounds_checked(tmp_path):
    """``run_bounds_checked(script)``: run a Python script in a fresh interpreter whose jit
    kernels compile with bounds checks (UNIONCARD_JIT_DEBUG=1, an empty numba cache), and
    require that it succeeds and ends by printing ``agreed``."""

    def run(script: str) -> None:
        env = {**os.environ, "UNIONCARD_JIT_DEBUG": "1", "NUMBA_CACHE_DIR": str(tmp_path)}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip().endswith("agreed")

    return run


@pytest.fixture
def race_threads():
    """``race_threads(work, count)``: run ``work`` in ``count`` threads at once, Python
    switching threads every microsecond so that their steps interleave as much as they
    can; the exceptions the threads raised."""

    def race(work, count: int) -> list[BaseException]:
        errors: list[BaseException] = []

        def guarded() -> None:
            try:
                work()
            except BaseException as exc:
                errors.append(exc)

        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            threads = [threading.Thread(target=guarded) for _ in range(count)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            sys.setswitchinterval(interval)
        return errors

    return race
