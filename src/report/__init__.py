"""What a person sees: progress on the console (:mod:`~src.report.progress`), one wandb run
per job (:mod:`~src.report.wandb_runs`), and a sweep turned into tables and figures
(:mod:`~src.report.tables`, :mod:`~src.report.plots`; the CLI ``python -m src.aggregate``)."""
