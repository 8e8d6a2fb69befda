"""The benchmark's downloaded datasets (ijcnn1, covtype): read from where libsvmdata and
scikit-learn keep them, in their own file formats (small files the tests write into a
temporary data home), and a one-line error naming the folder when they are neither on disk
nor downloadable."""

from __future__ import annotations

import bz2

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from src.config import build_method, objective_of, validate
from src.core.loop import make_run
from tests.conftest import cli, compose


@pytest.fixture(autouse=True)
def fresh_data(monkeypatch, tmp_path):
    from src.sweep import plan

    plan._data.cache_clear()  # the memo does not know about the data home
    monkeypatch.setenv("LIBSVMDATA_HOME", str(tmp_path / "libsvm_home"))
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path / "sklearn_home"))
    yield
    plan._data.cache_clear()


def _binary(rng, n):
    X = rng.uniform(-1, 1, (n, 22))
    y = np.where(X @ rng.standard_normal(22) + 0.3 * rng.standard_normal(n) > 0, 1.0, -1.0)
    return X, y


def _data(*overrides):
    from src.sweep.plan import job_data

    run = validate(compose(*overrides))
    return run, job_data(run)


def test_ijcnn1_from_libsvmdatas_cache_and_a_minibatch_run(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "libsvm_home" / "libsvm" / "binary"
    folder.mkdir(parents=True)
    (Xtr, ytr), (Xva, yva) = _binary(rng, 300), _binary(rng, 120)
    np.save(folder / "ijcnn1_data.npy", Xtr)
    np.save(folder / "ijcnn1_target.npy", ytr)
    np.save(folder / "ijcnn1.t_data.npy", Xva)
    np.save(folder / "ijcnn1.t_target.npy", yva)
    run, data = _data("objective=logreg", "objective.dataset=ijcnn1", "method=saba", "batch_size=64",
                      "outer_steps=30", "objective.theta_init=0.0")  # fmt: skip
    np.testing.assert_array_equal(data["Xtr"], Xtr)
    np.testing.assert_array_equal(data["yva"], yva)
    assert data["theta0"].shape == (22,)
    objective = objective_of(run.static)
    d = {k: jnp.asarray(v) for k, v in data.items()}
    w, theta = jnp.asarray(rng.standard_normal(22)), jnp.zeros(22)
    expected = np.mean(np.log1p(np.exp(-ytr * (Xtr @ np.asarray(w))))) + 0.5 * np.sum(np.asarray(w) ** 2)
    assert float(objective.inner_loss(w, theta, d)) == pytest.approx(expected, rel=1e-5)
    result = jax.jit(make_run(objective, 30))(build_method(run.tree), d, jax.random.key(0))
    loss = np.asarray(result.metrics["outer_loss"])
    assert loss[-1] < loss[0]  # SABA lowers the validation loss


def test_ijcnn1_from_the_libsvm_file_itself(tmp_path):
    """LIBSVM's own svmlight files, compressed as downloaded (``ijcnn1.bz2``, ``ijcnn1.t.bz2``)."""
    from sklearn.datasets import dump_svmlight_file

    rng = np.random.default_rng(1)
    folder = tmp_path / "libsvm_home" / "libsvm" / "binary"
    folder.mkdir(parents=True)
    parts = {"ijcnn1": _binary(rng, 50), "ijcnn1.t": _binary(rng, 40)}
    for stem, (X, y) in parts.items():
        plain = tmp_path / stem
        dump_svmlight_file(X, y, str(plain))
        (folder / f"{stem}.bz2").write_bytes(bz2.compress(plain.read_bytes()))
    _, data = _data("objective=logreg", "objective.dataset=ijcnn1")
    np.testing.assert_allclose(data["Xtr"], parts["ijcnn1"][0], rtol=1e-12)
    np.testing.assert_array_equal(data["yva"], parts["ijcnn1.t"][1])


def test_covtype_from_scikit_learns_data_home(tmp_path):
    import joblib

    rng = np.random.default_rng(2)
    folder = tmp_path / "sklearn_home" / "covertype"
    folder.mkdir(parents=True)
    X = rng.standard_normal((500, 54)) * 3 + 1
    y = rng.integers(1, 8, 500).astype(np.int32)  # the file's labels are 1..7
    joblib.dump(X, folder / "samples_py3", compress=9)
    joblib.dump(y, folder / "targets_py3", compress=9)
    run, data = _data("objective=covtype", "method=soba", "batch_size=64", "outer_steps=10")
    assert (len(data["ytr"]), len(data["yva"]), len(data["yte"])) == (320, 80, 100)  # 64 / 16 / 20 %
    assert set(np.unique(data["ytr"])) <= set(range(7))
    np.testing.assert_allclose(data["Xtr"].mean(0), 0, atol=1e-12)  # standardized on the training part
    assert data["w0"].shape == (54, 7) and data["theta0"].shape == (7,)
    objective = objective_of(run.static)
    d = {k: jnp.asarray(v) for k, v in data.items()}
    result = jax.jit(make_run(objective, 10))(build_method(run.tree), d, jax.random.key(0))
    assert np.isfinite(np.asarray(result.metrics["test_error"])).all()


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (("objective=logreg", "objective.dataset=ijcnn1", "objective.download=false"), "libsvm_home/libsvm/binary"),
        (("objective=covtype", "objective.download=false"), "sklearn_home"),
    ],
)
def test_missing_data_is_one_clear_line(tmp_path, overrides, words):
    env = {"LIBSVMDATA_HOME": str(tmp_path / "libsvm_home"), "SCIKIT_LEARN_DATA": str(tmp_path / "sklearn_home")}
    proc = cli(*overrides, "outer_steps=2", f"hydra.run.dir={tmp_path / 'run'}", env=env)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and words in errors[0] and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("present", [False, True])
def test_an_optional_grid_runs_only_where_its_data_are(tmp_path, present):
    """A study's ``optional: true`` grid (sweeps/benchmark.yaml's ijcnn1 and covtype): skipped,
    with one line saying why, where the data cannot be built; run where they are on disk."""
    home = tmp_path / "libsvm_home"
    if present:
        folder = home / "libsvm" / "binary"
        folder.mkdir(parents=True)
        rng = np.random.default_rng(3)
        for stem, n in (("ijcnn1", 100), ("ijcnn1.t", 50)):
            X, y = _binary(rng, n)
            np.save(folder / f"{stem}_data.npy", X)
            np.save(folder / f"{stem}_target.npy", y)
    conf = tmp_path / "conf" / "study"
    conf.mkdir(parents=True)
    grid = "{optional: 'true', objective: logreg, objective.dataset: ijcnn1, objective.download: 'false'"
    (conf / "probe.yaml").write_text(
        "# @package _global_\n"
        "hydra:\n  sweeper:\n"
        "    params: {method: soba, seed: '1'}\n"
        f"    also: [{grid}, method: soba}}, {grid}, method: saba}}]\n"
    )
    out = tmp_path / "sweep"
    proc = cli("-m", "study=probe", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "objective=logreg",
               "batch_size=32", "outer_steps=3", "wandb.mode=disabled", f"hydra.sweep.dir={out}",
               env={"LIBSVMDATA_HOME": str(home)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("Skipped")]
    jobs = sorted(p.name for p in out.iterdir() if (p / "summary.json").exists())
    if present:
        assert not skipped and len(jobs) == 3, (proc.stderr, jobs)
    else:
        assert len(skipped) == 1 and "libsvm_home/libsvm/binary" in skipped[0] and len(jobs) == 1, proc.stderr
