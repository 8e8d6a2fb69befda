"""The numerical core: JAX only (no Hydra, pydantic, pandas or files).

Solver objects (:mod:`~src.core.inner`, :mod:`~src.core.linsolve`,
:mod:`~src.core.hypergrad`), the step protocol and the loop (:mod:`~src.core.loop`), the
single-loop stochastic methods (:mod:`~src.core.stochastic`), minibatch samplers
(:mod:`~src.core.sampling`) and the value function's reference figures
(:mod:`~src.core.reference`). tests/test_layers.py enforces what it may import.
"""
