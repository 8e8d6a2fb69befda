"""``python -m tests.optuna_probe ARGS``: ``python -m src.train ARGS`` with optuna's
``Study.tell`` recorded (trial number, params, values) into $OPTUNA_PROBE, one JSON line
per trial: what the optuna sweeper told optuna, to compare with the jobs' results."""

import json
import os

import optuna

_tell = optuna.study.Study.tell


def tell(self, trial, values=None, state=None, **kwargs):
    with open(os.environ["OPTUNA_PROBE"], "a") as f:
        row = {"number": trial.number, "params": trial.params, "values": values, "state": str(state)}
        f.write(json.dumps(row) + "\n")
    return _tell(self, trial, values=values, state=state, **kwargs)


optuna.study.Study.tell = tell

if __name__ == "__main__":
    import runpy

    runpy.run_module("src.train", run_name="__main__", alter_sys=True)
