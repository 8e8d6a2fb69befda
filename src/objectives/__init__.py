"""The shipped problems, one module each (``_target_: src.objectives.<name>.make``).

A problem is data plus pure functions: :class:`~src.core.objective.Objective`, re-exported
here so that a researcher's own objective writes ``from src.objectives import Objective``.
An objective module imports the core only (``src.core.sampling`` for finite sums).
"""

from src.core.objective import Data, Objective, scalar_theta_metrics

__all__ = ["Data", "Objective", "scalar_theta_metrics"]
