"""The launcher's defaults, in one place (``hydra.launcher.*``; the plugin's config and the
sweep's functions both read them). Nothing else is imported here: Hydra imports the plugin,
and with it this module, at every start."""

MAX_BATCH_SIZE = 1024  # jobs per compiled program; a larger group runs as several batches
CHECKPOINT_EVERY_S = 300.0  # a batch run in chunks saves its state this often (and when stopped)
