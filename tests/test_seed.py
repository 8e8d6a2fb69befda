"""The default run reproduces the seed notebook (shared/reference/seed_trajectory.csv)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import cli


def test_default_run_reproduces_seed_trajectory(run_job, seed_trajectory):
    summary, m = run_job()
    assert summary["status"] == "completed"
    assert len(m) == 101 and list(m["step"]) == list(range(101))
    np.testing.assert_allclose(m["theta"], seed_trajectory["theta"], atol=1e-5, rtol=0)
    seed_grad = seed_trajectory["hypergrad"].to_numpy()[:100]
    np.testing.assert_allclose(m["hypergrad_norm"][:100], np.abs(seed_grad), atol=1e-5, rtol=0)
    assert abs(m["theta"].iloc[-1] - (-0.0042658)) <= 1e-6
    assert summary["final"]["theta"] == pytest.approx(seed_trajectory["theta"].iloc[-1], abs=1e-6)  # the seed's, too
    # row 0 is theta_0 = 1 with hypergradient 4 = d(2 theta^2)/dtheta
    assert m["theta"][0] == 1.0 and abs(m["hypergrad_norm"][0] - 4.0) < 1e-6
    # the toy's closed form: w* = theta^2, exact hypergradient 4 theta
    assert m["hypergrad_error"].max() < 1e-5


def test_cli_default_job_writes_every_output(tmp_path):
    out = tmp_path / "run"
    proc = cli(f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.parquet", "params.npz", "summary.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 100
    for key in ("compile_s", "run_s"):
        assert summary[key] > 0
    prov = summary["provenance"]
    assert prov["versions"]["jax"] and prov["device"].startswith("cpu")
    assert summary["precision"] == "float32"
    m = pd.read_parquet(out / "metrics.parquet")
    for col in ("step", "outer_loss", "hypergrad_norm", "inner_grad_norm", "linsolve_residual", "theta", "w"):
        assert col in m.columns
    params = np.load(out / "params.npz")
    assert params["theta"] == np.float32(m["theta"].iloc[-1])
    assert abs(params["w"] - m["w"].iloc[-1]) < 1e-7
    # no temporary files left behind by the atomic writers
    assert not list(out.glob(".*.tmp"))
