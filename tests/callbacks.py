"""A Hydra callback for the launcher tests: records what each job returned."""

import json

from hydra.experimental.callback import Callback


class RecordReturns(Callback):
    def __init__(self, path: str):
        self.path = path
        self.started = {}

    def on_job_start(self, config, **kwargs):
        self.started[str(config.hydra.job.num)] = config.hydra.runtime.output_dir

    def on_job_end(self, config, job_return, **kwargs):
        num = str(config.hydra.job.num)
        row = {
            "num": num,
            "status": job_return.status.name,
            "return_value": job_return.return_value,
            "start_output_dir": self.started[num],
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
