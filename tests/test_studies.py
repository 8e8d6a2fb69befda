"""Every ready study in sweeps/ has a reduced form; tests/test_readme.py runs each, reduced,
through the README's own commands (and aggregates them), and tests/test_cluster.py runs
optuna_logreg as it comes."""

from __future__ import annotations

from tests.conftest import ROOT, cli

STUDIES = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))
REDUCED = {  # one seed, and fewer static groups (each one a compiled program); the command
    # line's value of a swept key replaces the study's
    "linear_solvers": ["seed=0", "method=cg,unrolled"],
    "inner_steps": ["seed=0", "inner_solver.steps=3"],
    "lr_seeds": ["hydra.sweeper.params.seed='0,1'", "hydra.sweeper.params.lr='0.01,0.1'"],
    "data_cleaning": ["hydra.sweeper.params.seed=0"],
    # the main grid only (soba, saba), one setting and seed, a smaller problem
    "benchmark": [
        "hydra.sweeper.also=[]",
        "seed=1",
        "method.step_size=choice(0.1)",
        "method.outer_ratio=choice(1.0)",
        "objective.n_inner=1024",
        "objective.n_outer=256",
        "eval_every=1",
    ],  # fmt: skip
    "distillation": ["seed=0", "objective.per_class=1,2"],
    "imaml": ["seed=0", "objective.lam=5,10", "objective.test_tasks=10"],
    "sparse_regression": ["hydra.sweeper.params.seed=0", "hydra.sweeper.params.objective='lasso,elastic_net'"],
}
# optuna_logreg runs as it comes in tests/test_cluster.py, which checks what optuna was told
ELSEWHERE = {"optuna_logreg"}
EXPECTED_JOBS = {"linear_solvers": 2, "inner_steps": 2, "lr_seeds": 4, "data_cleaning": 4}  # others: 2


def test_every_study_has_a_reduced_form():
    assert set(STUDIES) == set(REDUCED) | ELSEWHERE
    for name in STUDIES:
        text = (ROOT / "sweeps" / f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_") and f"study={name}" in text  # says how to run it


def test_mistyped_study_lists_the_studies(tmp_path):
    proc = cli("-m", "study=linear_solver", cwd=tmp_path)
    assert proc.returncode != 0
    for name in STUDIES:
        assert name in proc.stderr
