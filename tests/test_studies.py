"""Every ready study in sweeps/ runs, in a reduced form, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli

STUDIES = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))
REDUCED = {  # one seed, and fewer static groups (each one a compiled program); the command
    # line's value of a swept key replaces the study's
    "linear_solvers": ["seed=0", "method=cg,unrolled"],
    "inner_steps": ["seed=0", "inner_solver.steps=3"],
    "lr_seeds": ["hydra.sweeper.params.seed='0,1'", "hydra.sweeper.params.lr='0.01,0.1'"],
    "data_cleaning": ["hydra.sweeper.params.seed=0"],
}
# optuna_logreg runs reduced (4 trials, 2 per round) in tests/test_cluster.py, which also
# checks what optuna was told
ELSEWHERE = {"optuna_logreg"}
EXPECTED_JOBS = {"linear_solvers": 2, "inner_steps": 2, "lr_seeds": 4, "data_cleaning": 4}


def test_every_study_has_a_reduced_form():
    assert set(STUDIES) == set(REDUCED) | ELSEWHERE
    for name in STUDIES:
        text = (ROOT / "sweeps" / f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_") and f"study={name}" in text  # says how to run it


@pytest.mark.slow
@pytest.mark.parametrize("study", sorted(REDUCED))
def test_study_runs_reduced(study, tmp_path):
    out = tmp_path / study
    proc = cli("-m", f"study={study}", "outer_steps=2", *REDUCED[study], f"hydra.sweep.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert summary["jobs"] == EXPECTED_JOBS[study] and summary["completed"] == summary["jobs"]
    agg = cli(str(out), module="src.aggregate", cwd=tmp_path)
    assert agg.returncode == 0, agg.stderr
    assert Path(out / "results.csv").exists()
    if study in ("linear_solvers", "inner_steps"):  # these studies report a hypergradient error
        assert "hypergrad_error" in (out / "results.csv").read_text()


def test_mistyped_study_lists_the_studies(tmp_path):
    proc = cli("-m", "study=linear_solver", cwd=tmp_path)
    assert proc.returncode != 0
    for name in STUDIES:
        assert name in proc.stderr
