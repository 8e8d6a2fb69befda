"""Single-loop stochastic bilevel methods: every solver of benchopt's ``benchmark_bilevel``.

They follow the benchmark's ``solvers/`` (update rules, order of the minibatches, step-size
exponents, initial values) and take its parameter names: ``step_size`` (rho),
``outer_ratio`` (the outer step is rho / outer_ratio), ``n_inner_steps``, ``n_shia_steps``,
``n_hia_steps``, ``eta``, ``lmbda0``, ``delta_lmbda``, ``period_frac``. Step sizes decay as
``rho_t = rho / (t + 1)^inner_decay`` and ``gamma_t = rho / outer_ratio / (t + 1)^outer_decay``
(the presets in ``conf/method/`` hold each algorithm's exponents). Each is one more
implementation of the protocol of :mod:`src.core.protocol`.

One module per family:

* :mod:`.soba`: SOBA, SABA (simultaneous steps; SAGA tables).
* :mod:`.inner_loops`: AmIGO, StocBiO, BSA (SGD inner loops; ``v`` by SGD or Neumann series).
* :mod:`.ttsa`: TTSA (two timescales, randomly truncated Neumann series).
* :mod:`.momentum`: MRBO, SUSTAIN, FSLA (recursive momentum).
* :mod:`.recursive`: SRBA, VRBO (SARAH-type recursion with periodic full passes).
* :mod:`.f2sa`: F2SA; :mod:`.hessian_free`: BOME, PZOBO (no second derivatives).
* :mod:`.neumann`: the stochastic Neumann series they share; :mod:`.base`: state, oracles,
  schedule, oracle counting.
"""

from src.core.stochastic.base import Oracles, Schedule, SingleLoop, State
from src.core.stochastic.f2sa import F2SA
from src.core.stochastic.hessian_free import BOME, PZOBO
from src.core.stochastic.inner_loops import BSA, AmIGO, StocBiO
from src.core.stochastic.momentum import FSLA, MRBO, SUSTAIN
from src.core.stochastic.recursive import SRBA, VRBO
from src.core.stochastic.soba import SABA, SOBA
from src.core.stochastic.ttsa import TTSA

METHODS: dict[str, type] = {
    m.name: m for m in (SOBA, SABA, AmIGO, StocBiO, F2SA, BSA, TTSA, MRBO, SUSTAIN, FSLA, SRBA, VRBO, BOME, PZOBO)
}

__all__ = [
    "AmIGO", "BOME", "BSA", "F2SA", "FSLA", "METHODS", "MRBO", "Oracles", "PZOBO", "SABA", "SOBA",
    "SRBA", "SUSTAIN", "Schedule", "SingleLoop", "State", "StocBiO", "TTSA", "VRBO",
]  # fmt: skip
