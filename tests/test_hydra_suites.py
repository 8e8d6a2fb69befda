"""Hydra's own launcher test suites, run against the batched launcher (as the joblib and
submitit plugins run them). Their task functions are not batch-aware, so the launcher
runs them one job after another, exactly like the basic launcher."""

from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from pytest import mark


@mark.parametrize("launcher_name, overrides", [("batched", [])])
class TestBatchedLauncher(LauncherTestSuite):
    pass


@mark.parametrize("task_launcher_cfg, extra_flags", [({}, ["-m", "hydra/launcher=batched"])])
class TestBatchedLauncherIntegration(IntegrationTestSuite):
    pass
