"""What a bilevel problem is: data plus pure functions (the shipped ones: :mod:`src.objectives`).

An objective is built by a factory named in its YAML file's ``_target_``. The factory
takes the *static* options (integers, booleans, strings: anything that fixes shapes)
and returns an :class:`Objective`. Its ``data(seed, **dynamic)`` function takes the
seed and the *dynamic* options (floats) and returns, on the host, a dict of arrays with
the same shapes for every seed; it holds the initial values ``theta0`` and ``w0`` too.
The data are inputs of the compiled run, so jobs that differ only in seed or in a
float option share one vmapped program.

All loss functions have the signature ``f(w, theta, data)``; ``w`` and ``theta`` are
arrays of any shape. A finite-sum objective (``inner_samples`` / ``outer_samples``) gets
the data of one minibatch the same way (:mod:`src.core.sampling`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

Data = dict[str, Any]


class Objective(NamedTuple):
    data: Callable[..., Data]
    """``(seed, **dynamic options) -> dict`` of numpy arrays, with ``theta0`` and ``w0``."""
    inner_loss: Callable[[Any, Any, Data], Any]
    """``G(w, theta, data)``: the inner problem, minimized over ``w``."""
    outer_loss: Callable[[Any, Any, Data], Any]
    """``F(w, theta, data)``: the outer problem, evaluated at the inner solution."""
    metrics: Callable[[Any, Any, Data], dict[str, Any]] | None = None
    """Scalar metrics of ``(w, theta)`` for the per-step table."""
    inner_solution: Callable[[Any, Data], Any] | None = None
    """Closed-form ``w*(theta)`` where one exists (enables ``inner_solver=exact``)."""
    hypergrad: Callable[[Any, Data], Any] | None = None
    """Closed-form ``dF(w*(theta), theta)/dtheta``; else autodiff through ``inner_solution``."""
    prox: Callable[[Any, Any, Any, Data], Any] | None = None
    """A composite inner problem ``G = inner_loss + h`` with ``h`` non-smooth:
    ``prox(w, step, theta, data)`` = the proximal operator of ``step * h(., theta)``. Its inner
    solution is the fixed point ``w = T(w, theta) = prox(w - eta grad_w inner_loss, eta, theta)``
    (``eta = 1 / lipschitz``), and the implicit system is ``(I - d_w T)^T u = d_w F``."""
    lipschitz: Callable[[Any, Data], Any] | None = None
    """A Lipschitz constant of ``grad_w inner_loss`` (the step ``1/L`` of proximal gradient)."""
    hypergrad_at: Callable[[Any, Any, Data], Any] | None = None
    """Closed-form hypergradient given the inner solution ``(w, theta, data)`` (the lasso's
    active-set formula), the reference for ``hypergrad_error``."""
    resample: Callable[[Any, Data], Data] | None = None
    """Data that change along the outer loop (meta-learning's tasks): ``resample(key, data)``
    returns the data of one outer step; the loop calls it at every step with the job's key
    folded with the step, so a step's data are the same wherever and however often it runs."""
    adjoint: Callable[[Any, Data], Any] | None = None
    """Closed-form ``v*(theta) = -H^{-1} d_w F`` at the inner solution (the variable that
    single-loop methods track); else solved (:mod:`src.core.reference`)."""
    blocks: bool = False
    """The inner variable is one array whose leading axis indexes independent blocks,
    ``G = sum_i G_i(w_i, theta)`` (iMAML's tasks): the Hessian is block diagonal, and CG
    solves the implicit system block by block (:mod:`src.core.linsolve`)."""
    symmetric: bool = True
    """Whether the implicit system is symmetric (gradient-based inner problems are)."""
    randomness: str | None = None
    """What ``seed`` drives in this problem's data, in words; ``""`` declares that it drives
    nothing (the jobs of every seed then share one copy of the data, and the seed drives only
    the samplers of stochastic methods). ``None`` (not declared): the planner finds out by
    building the data of two seeds and comparing them (:func:`src.sweep.plan.seeded_data`), so a
    ``data()`` that uses its ``seed`` gets each job's seed without being told."""
    maximize: tuple[str, ...] = ()
    """The metrics for which higher is better (accuracies...); for every other metric and
    the losses, lower is. Recorded in each job's summary, read by ``src.report.aggregate``."""
    figure: Callable[[Any, dict[str, Any], str], Any] | None = None
    """The objective's own picture of a result: ``figure(theta, final_metrics, title)`` returns a
    matplotlib figure (distillation's learned images), drawn by ``python -m src.aggregate
    --plot`` for each completed job (matplotlib imported inside it, never by the run)."""
    inner_samples: tuple[str, ...] = ()
    """A finite-sum inner problem ``G = 1/n sum_i g_i``: the data arrays with one row per
    sample (:mod:`src.core.sampling`); its loss takes means with ``sampling.mean``."""
    outer_samples: tuple[str, ...] = ()
    """The same for the outer problem ``F``."""
    full_losses: Callable[[Any, Any, Data], tuple[Any, Any]] | None = None
    """``(G, F)`` at ``(w, theta)`` on all samples without a pass over them (a quadratic's from
    the means of its factors, stored with the data): the evaluation rows use it, so that a
    finite sum's table does not cost a full pass per row; equal to ``inner_loss`` and
    ``outer_loss`` on the whole data (tests/test_objectives.py)."""


def losses(objective: Objective, w, theta, data) -> tuple[Any, Any]:
    """``(G, F)`` at ``(w, theta)`` on all the data (from ``full_losses`` where the objective has it)."""
    if objective.full_losses is not None:
        return objective.full_losses(w, theta, data)
    return objective.inner_loss(w, theta, data), objective.outer_loss(w, theta, data)


def scalar_theta_metrics(theta) -> dict[str, Any]:
    """The ``theta`` metric that objectives with a scalar outer variable report."""
    return {"theta": theta} if getattr(theta, "ndim", 0) == 0 else {}
