"""The batched launcher against Hydra's basic launcher, through the real CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import cli

SWEEP = ("objective=ridge", "lr=0.05,0.2", "seed=0,1,2", "outer_steps=15", "inner_solver.steps=30")
LAUNCHER_LINES = ("hydra.launcher", "hydra.runtime.choices.hydra/launcher")


def _multirun(tmp_path, name, *args, env=None):
    out = tmp_path / name
    proc = cli("-m", *args, f"hydra.sweep.dir={out}", env=env)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def _jobs(sweep_dir):
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


# Some columns are differences or stopping decisions, so their *relative* value is rounding
# noise: hypergrad_error (a relative error: absolute agreement a means the two hypergradients
# agree to a), ||grad_w G|| near the optimum (cancels terms ~1e4 times larger), the residual
# and iteration count of a solve stopped at its tolerance (CG may cross it one iteration
# earlier or later in float32). They get absolute tolerances; the rest rtol. The cumulative
# oracle counts add those iterations up: their per-step increments get the same floor.
FLOOR = {
    "float32": {
        "hypergrad_error": 1e-4,
        "inner_grad_norm": 1e-5,
        "linsolve_residual": 1e-2,
        "linsolve_iterations": 2,
    },
    "float64": {
        "hypergrad_error": 1e-9,
        "inner_grad_norm": 1e-12,
        "linsolve_residual": 1e-8,
    },
}
# The squared gaps of the iterates to the closed-form solutions are differences of nearby
# vectors, one of them a float32 solve of an ill-conditioned system whose batched and
# single LU round differently (hypergrad_error has the same noise): 1 % of the value, or
# 0.1 % of the column's largest value, in float32 (float64: where a CG solve stops).
GAPS = {"float32": (1e-2, 1e-3), "float64": (1e-5, 1e-6)}
CUMULATIVE = ("oracle_inner", "samples_inner")


def _compare_metrics(a_dir, b_dir, rtol, atol=0.0, precision="float32"):
    a, b = pd.read_parquet(a_dir / "metrics.parquet"), pd.read_parquet(b_dir / "metrics.parquet")
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for col in a.columns:
        x, y = a[col].astype(float), b[col].astype(float)
        if col in CUMULATIVE and "linsolve_iterations" in FLOOR[precision]:
            x, y, col = x.diff().fillna(0), y.diff().fillna(0), "linsolve_iterations"
        if col == "hypergrad_abs_error":  # hypergrad_error's floor, in units of ||grad h||
            size = float(np.nanmax(y / b["hypergrad_error"].astype(float)))  # ||grad h|| = abs / relative
            np.testing.assert_allclose(x, y, rtol=0, atol=FLOOR[precision]["hypergrad_error"] * size, err_msg=col)
        elif col in FLOOR[precision]:
            np.testing.assert_allclose(x, y, rtol=0, atol=FLOOR[precision][col], err_msg=col)
        else:  # atol: relative to the column's scale, for values that pass near zero
            scale = float(np.nanmax(np.abs(y))) if len(y) and np.isfinite(y).any() else 0.0
            r, floor = GAPS[precision] if col.endswith("_gap_sq") else (rtol, atol)
            np.testing.assert_allclose(x, y, rtol=max(r, rtol), atol=max(atol, floor * scale), err_msg=col)


def _strip_launcher(hydra_yaml: dict) -> dict:
    h = hydra_yaml["hydra"]
    h.pop("launcher")
    h["runtime"]["choices"].pop("hydra/launcher")
    h["runtime"].pop("output_dir")
    h["sweep"].pop("dir")
    h["overrides"]["hydra"] = [
        o for o in h["overrides"]["hydra"] if not o.startswith(("hydra/launcher", "hydra.sweep"))
    ]
    return hydra_yaml


@pytest.fixture(scope="module")
def both_launchers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("launchers")
    batched, proc = _multirun(tmp, "batched", *SWEEP)
    basic, _ = _multirun(tmp, "basic", *SWEEP, "hydra/launcher=basic")
    return batched, basic, proc


def test_batched_equals_basic_job_for_job(both_launchers):
    batched, basic, proc = both_launchers
    jobs = _jobs(batched)
    assert [p.name for p in jobs] == [p.name for p in _jobs(basic)] == [str(i) for i in range(6)]
    for a, b in zip(jobs, _jobs(basic), strict=True):
        _compare_metrics(a, b, rtol=1e-5, atol=1e-6)
        sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
        assert sa["overrides"] == sb["overrides"] and sa["status"] == sb["status"] == "completed"
        assert sa["batch"]["size"] == 6 and sb["batch"]["size"] == 1
        assert sa["run_s"] == pytest.approx(sa["batch"]["run_s"] / 6)
    summary = json.loads((batched / "sweep_summary.json").read_text())
    assert summary["groups"] == 1 and summary["compiled_programs"] == 1 and summary["jobs"] == 6
    assert "sweep: 6 jobs" in proc.stderr and "best: job" in proc.stderr


def test_batched_writes_the_basic_launchers_files(both_launchers):
    batched, basic, _ = both_launchers
    assert (batched / "multirun.yaml").exists()
    for a, b in zip(_jobs(batched), _jobs(basic), strict=True):
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        for name in ("config.yaml", "overrides.yaml"):
            assert (a / ".hydra" / name).read_bytes() == (b / ".hydra" / name).read_bytes(), name
        ha, hb = (yaml.safe_load((d / ".hydra" / "hydra.yaml").read_text()) for d in (a, b))
        assert _strip_launcher(ha) == _strip_launcher(hb)


def test_float64_batched_equals_basic(tmp_path):
    # Measured: theta and losses agree to 1e-10; hypergradients to 2.7e-10 relative after
    # Adam's normalized steps pass near a zero gradient. Asserted at 1e-9.
    sweep = ("objective=ridge", "precision=float64", "lr=0.05,0.2", "seed=0,1", "outer_steps=20")
    batched, _ = _multirun(tmp_path, "b", *sweep)
    basic, _ = _multirun(tmp_path, "s", *sweep, "hydra/launcher=basic")
    for a, b in zip(_jobs(batched), _jobs(basic), strict=True):
        _compare_metrics(a, b, rtol=1e-9, atol=1e-13, precision="float64")


def test_mixed_static_choices_form_groups_and_chunks(tmp_path):
    out, proc = _multirun(
        tmp_path,
        "mixed",
        "linear_solver=cg,gmres",
        "inner_solver.steps=10,20",
        "lr=0.01,0.05,0.08",
        "outer_steps=5",
        "hydra.launcher.max_batch_size=2",
    )
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert summary["jobs"] == 12 and summary["groups"] == 4
    assert [len(b["jobs"]) for b in summary["batches"]] == [2, 1] * 4
    assert summary["compiled_programs"] == 4  # the 1-job remainder is padded into the 2-job program
    assert summary["full_compositions"] == 2  # one per template: group choices x overridden keys
    for job in _jobs(out):  # a batch's label shows the keys that tell the groups apart
        s = json.loads((job / "summary.json").read_text())
        cfg = s["config"]
        label = f"linear_solver={cfg['linear_solver']['name']} inner_solver.steps={cfg['inner_solver']['steps']}"
        assert s["batch"]["label"] == label
        assert f"[{label}]" in proc.stderr  # and the progress lines show it


def test_resume_runs_only_missing_jobs(tmp_path):
    args = ("lr=0.01,0.05", "seed=0,1", "outer_steps=5")
    out, _ = _multirun(tmp_path, "r", *args)
    before = {j.name: (j / "metrics.parquet").stat().st_mtime_ns for j in _jobs(out)}
    (out / "2" / "summary.json").unlink()
    (out / "3" / "metrics.parquet").unlink()
    (out / "3" / "summary.json").write_text(json.dumps({"status": "running"}))
    _, proc = _multirun(tmp_path, "r", *args)
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert summary["resumed"] == 2 and summary["batches"][0]["jobs"] == ["2", "3"]
    after = {j.name: (j / "metrics.parquet").stat().st_mtime_ns for j in _jobs(out)}
    assert after["0"] == before["0"] and after["1"] == before["1"] and after["2"] != before["2"]
    for j in _jobs(out):
        assert json.loads((j / "summary.json").read_text())["status"] == "completed"


def test_sharded_over_four_devices_gives_the_same_numbers(tmp_path):
    sweep = ("objective=ridge", "lr=0.02,0.05,0.1", "seed=0,1", "outer_steps=10")
    flags = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    sharded, _ = _multirun(tmp_path, "sharded", *sweep, env=flags)
    single, _ = _multirun(tmp_path, "single", *sweep)
    for a, b in zip(_jobs(sharded), _jobs(single), strict=True):
        s = json.loads((a / "summary.json").read_text())
        assert s["provenance"]["device_count"] == 4 and s["batch"]["size"] == 6
        _compare_metrics(a, b, rtol=1e-5, atol=1e-6)


def test_job_returns_reach_hydra_callbacks(tmp_path):
    record = tmp_path / "returns.jsonl"
    out, _ = _multirun(
        tmp_path,
        "cb",
        "lr=0.01,0.05",
        "outer_steps=5",
        "+hydra.callbacks.record._target_=tests.callbacks.RecordReturns",
        f"+hydra.callbacks.record.path={record}",
    )
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    for r in rows:
        summary = json.loads((out / r["num"] / "summary.json").read_text())
        assert r["return_value"] == summary["final"]["outer_loss"]
        assert r["start_output_dir"] == str(out / r["num"])


def test_every_override_syntax_keeps_one_composition_per_template(tmp_path):
    """key=, +key=, ++key=, ~key and group overrides: one full composition per template,
    and every job's .hydra files as the basic launcher writes them."""
    sweep = (
        "objective=ridge",
        "lr=0.01,0.05",
        "seed=0,1",
        "++wandb.mode=disabled",
        "+inner_solver.momentum=0.5",
        "~wandb.tags",
        "++outer_steps=2",
    )
    out, _ = _multirun(tmp_path, "b", *sweep)
    basic, _ = _multirun(tmp_path, "s", *sweep, "hydra/launcher=basic")
    assert json.loads((out / "sweep_summary.json").read_text())["full_compositions"] == 1
    for a, b in zip(_jobs(out), _jobs(basic), strict=True):
        for name in ("config.yaml", "overrides.yaml"):
            assert (a / ".hydra" / name).read_bytes() == (b / ".hydra" / name).read_bytes(), (a, name)
        _compare_metrics(a, b, rtol=1e-5, atol=1e-6)


def test_a_group_cut_into_chunks_compiles_once(tmp_path):
    """3 learning rates x 4 seeds in batches of at most 5: every batch has one grid shape
    (datasets x jobs per dataset), so one program serves the group; the numbers equal one
    batch of all twelve."""
    sweep = ("objective=ridge", "lr=0.01,0.05,0.1", "seed=0,1,2,3", "outer_steps=3")
    out, _ = _multirun(tmp_path, "chunks", *sweep, "hydra.launcher.max_batch_size=5")
    whole, _ = _multirun(tmp_path, "whole", *sweep)
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert summary["compiled_programs"] == 1 and summary["groups"] == 1
    assert all(len(b["jobs"]) <= 5 for b in summary["batches"])
    assert sorted(j for b in summary["batches"] for j in b["jobs"]) == sorted(str(i) for i in range(12))
    for a, b in zip(_jobs(out), _jobs(whole), strict=True):
        _compare_metrics(a, b, rtol=1e-5, atol=1e-6)
