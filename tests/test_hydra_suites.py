"""Hydra's own launcher test suites, run against the batched launcher (as the joblib and
submitit plugins run them). Their task functions are not batch-aware, so the launcher
runs them one job after another, exactly like the basic launcher."""

import pytest
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from hydra.version import VersionBase
from pytest import mark


@pytest.fixture(autouse=True)
def unspecified_version_base():
    """Hydra's suites expect Hydra's default (unspecified) version base; other tests compose
    with version_base="1.3", which Hydra keeps in a process-wide singleton."""
    from hydra.version import _UNSPECIFIED_

    base = VersionBase.instance()  # a singleton: VersionBase() returns this same object
    saved, base.version_base = base.version_base, _UNSPECIFIED_
    yield
    base.version_base = saved


@mark.parametrize("launcher_name, overrides", [("batched", [])])
class TestBatchedLauncher(LauncherTestSuite):
    pass


@mark.parametrize("task_launcher_cfg, extra_flags", [({}, ["-m", "hydra/launcher=batched"])])
class TestBatchedLauncherIntegration(IntegrationTestSuite):
    pass
