"""Many jobs at once: plan -> execute (in-process or on submitit) -> record -> outcome.

:mod:`~src.sweep.plan` (jobs, their data, groups and batches), :mod:`~src.sweep.batching`
(one batch as one ``jit(vmap(run))``), :mod:`~src.sweep.record` and :mod:`~src.sweep.files`
(a job's files, atomic), :mod:`~src.sweep.checkpoints` (mid-batch state),
:mod:`~src.sweep.runner` (``run_sweep``: validate, resume, run, report),
:mod:`~src.sweep.launcher` and :mod:`~src.sweep.executors` (Hydra's and submitit's sides),
:mod:`~src.sweep.interrupts` and :mod:`~src.sweep.preflight` (stops and refusals).
"""
