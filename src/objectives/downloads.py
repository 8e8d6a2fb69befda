"""The benchmark's two datasets that are downloaded, not bundled: LIBSVM's ``ijcnn1``
(``ijcnn1`` / ``ijcnn1.t``, as libsvmdata fetches them) and scikit-learn's covertype.

Each is looked for where its usual tool keeps it, so that files fetched once elsewhere
(or copied in) are used as they are:

* LIBSVM: ``$LIBSVMDATA_HOME/libsvm/binary/`` (else ``$XDG_DATA_HOME/libsvm``, else
  ``~/data/libsvm``, libsvmdata's rule): libsvmdata's cache (``ijcnn1_data.npy|.npz`` and
  ``ijcnn1_target.npy``), or the LIBSVM file itself (``ijcnn1``, ``ijcnn1.bz2``, read with
  scikit-learn's ``load_svmlight_file``).
* covertype: scikit-learn's data home (``$SCIKIT_LEARN_DATA``, else ``~/scikit_learn_data``),
  through ``fetch_covtype``.

With ``download`` true a missing file is downloaded (libsvmdata's and scikit-learn's
sources); where that fails too (no network, as on the machines this project is tested on),
:class:`DataUnavailable` says in one line where to put the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

LIBSVM_URL = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary/"
LIBSVM_FILES = {"ijcnn1": "ijcnn1", "ijcnn1_test": "ijcnn1.t"}  # libsvmdata's names -> LIBSVM's
LIBSVM_FEATURES = {"ijcnn1": 22, "ijcnn1_test": 22}


class DataUnavailable(FileNotFoundError):
    """A dataset that is neither on disk nor downloadable."""


def libsvm_home() -> Path:
    """libsvmdata's data folder: ``$LIBSVMDATA_HOME``, else ``$XDG_DATA_HOME``, else ``~/data``; ``/libsvm``."""
    home = os.environ.get("LIBSVMDATA_HOME", os.environ.get("XDG_DATA_HOME"))
    return (Path(home) if home else Path.home() / "data") / "libsvm"


def libsvm(name: str, download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of a LIBSVM binary dataset (dense float64, labels in {-1, +1})."""
    folder = libsvm_home() / "binary"
    stem = LIBSVM_FILES[name]
    cached_y = folder / f"{stem}_target.npy"
    cached_x = [folder / f"{stem}_data.npy", folder / f"{stem}_data.npz"]
    if cached_y.exists() and any(p.exists() for p in cached_x):
        from scipy import sparse

        X = np.load(cached_x[0]) if cached_x[0].exists() else sparse.load_npz(cached_x[1]).toarray()
        return np.asarray(X, np.float64), np.asarray(np.load(cached_y), np.float64)
    raw = next((p for p in (folder / stem, folder / f"{stem}.bz2") if p.exists()), None)
    if raw is None:
        raw = _download(LIBSVM_URL + f"{stem}.bz2", folder / f"{stem}.bz2", name, download, folder)
    from sklearn.datasets import load_svmlight_file

    X, y = load_svmlight_file(str(raw), n_features=LIBSVM_FEATURES[name])
    return np.asarray(X.toarray(), np.float64), np.asarray(y, np.float64)


def _download(url: str, target: Path, name: str, download: bool, folder: Path) -> Path:
    where = (f"put libsvmdata's {LIBSVM_FILES[name]}_data.npy and _target.npy, or LIBSVM's file "
             f"{LIBSVM_FILES[name]}(.bz2), in {folder} (set LIBSVMDATA_HOME to choose another folder)")  # fmt: skip
    if not download:
        raise DataUnavailable(f"{name} is not on disk and objective.download is false: {where}")
    import urllib.request

    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        with urllib.request.urlopen(url, timeout=20) as response, open(partial, "wb") as out:  # noqa: S310
            while chunk := response.read(1 << 20):
                out.write(chunk)
        partial.replace(target)
        return target
    except OSError as exc:
        target.with_name(target.name + ".part").unlink(missing_ok=True)
        raise DataUnavailable(f"{name} is not on disk and cannot be downloaded ({exc}): {where}") from None


def covtype(download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of scikit-learn's covertype (581,012 x 54, labels 0..6)."""
    from sklearn.datasets import fetch_covtype, get_data_home

    try:
        X, y = fetch_covtype(return_X_y=True, download_if_missing=download)
    except OSError as exc:
        home = get_data_home()
        how = "objective.download is false" if not download else f"it cannot be downloaded ({exc})"
        raise DataUnavailable(
            f"covtype is not in scikit-learn's data home {home} and {how}: run sklearn.datasets.fetch_covtype() "
            f"where the internet is reachable and copy {home}/covertype here (set SCIKIT_LEARN_DATA to choose "
            "another folder)"
        ) from None
    return np.asarray(X, np.float64), np.asarray(y, np.int64) - 1
