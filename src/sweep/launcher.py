"""The Hydra side of the batched launcher: jobs, their directories and files, JobReturns.

Hydra's basic launcher composes every job from scratch (``load_sweep_config``, about
55 ms) and writes its three ``.hydra`` files through OmegaConf (about 14 ms). Here a
job is composed from scratch only when it is the first of its *template*: the same
config-group choices and the same overridden keys. Every other job of a template is the
template's config with its own values applied by Hydra's own override code, and its
``hydra`` node differs from the template's only in the per-job fields
(``overrides.task``, ``job.override_dirname``, ``job.id``/``num``, ``runtime.output_dir``).
Files are dumped with libyaml's emitter and OmegaConf's representers: byte-identical to
``OmegaConf.save`` (the tests compare both paths job for job).

The jobs are then handed to the task function's ``run_sweep`` (see ``src.sweep.runner``), which
validates, groups and runs them; one ``JobReturn`` per job comes back to Hydra.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from src.sweep.files import atomic_write_text

log = logging.getLogger(__name__)


@dataclasses.dataclass
class JobSpec:
    idx: int
    overrides: list[str]
    task: DictConfig  # the job's config without the hydra node, unresolved
    hydra: dict  # the job's hydra node as a container (enums as strings)
    output_dir: Path


class _JobReturn(JobReturn):
    """A JobReturn whose ``hydra_cfg`` DictConfig is built only if someone reads it."""

    _hydra_node: dict | None = None

    @property
    def hydra_cfg(self):  # type: ignore[override]
        if self.__dict__.get("_hydra_cfg") is None and self._hydra_node is not None:
            self.__dict__["_hydra_cfg"] = OmegaConf.create({"hydra": self._hydra_node})
        return self.__dict__.get("_hydra_cfg")

    @hydra_cfg.setter
    def hydra_cfg(self, value) -> None:
        self.__dict__["_hydra_cfg"] = value


@functools.cache
def _dumper() -> type:
    from omegaconf._utils import get_omega_conf_dumper

    base = getattr(yaml, "CDumper", yaml.Dumper)
    dumper = type("FastOmegaConfDumper", (base,), {})
    dumper.add_representer(str, get_omega_conf_dumper().str_representer)
    return dumper


def to_yaml(container: Any) -> str:
    """``OmegaConf.to_yaml`` of a plain container, through libyaml's emitter."""
    return yaml.dump(container, default_flow_style=False, allow_unicode=True, sort_keys=False, Dumper=_dumper())


@functools.cache
def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def _parse(overrides: Sequence[str]):
    return _parser().parse_overrides(list(overrides))


class ConfigGroups:
    """Whether a key names a config group: the groups chosen in the primary config, or any
    group of the config search path (``+group=option`` of a group not chosen yet)."""

    def __init__(self, loader, config: DictConfig):
        self.known = {k: True for k in config.hydra.runtime.choices}
        self.repository = getattr(loader, "repository", None)

    def __contains__(self, key: str) -> bool:
        if key not in self.known:
            self.known[key] = self.repository is not None and bool(self.repository.group_exists(key))
        return self.known[key]


def _per_job(o, groups) -> bool:
    """An override whose value a job may change without a composition of its own: a
    ``key=value``, ``+key=value`` or ``++key=value`` of the task config with a scalar value
    (not a config group, not a deletion, not hydra.*). A template's composition already
    has the key; each job's value is then set on a copy of it."""
    if o.is_delete() or o.is_hydra_override() or o.package is not None or o.key_or_group in groups:
        return False
    return not isinstance(o.value(), dict | list)  # a merged container depends on the template's


def template_key(overrides: Sequence[str], groups, parsed=None) -> tuple | None:
    """Jobs with equal keys compose alike up to their values: the same group choices,
    deletions, container values and hydra overrides (verbatim), and the same per-job keys
    with the same override type. ``None`` for a job that must be composed on its own
    (it sets hydra keys of its own)."""
    parsed = parsed if parsed is not None else _parse(overrides)
    if any(o.is_hydra_override() for o in parsed):
        return None
    kind = {True: "+", False: ""}
    return (
        tuple(o.input_line for o in parsed if not _per_job(o, groups)),
        tuple(("++" if o.is_force_add() else kind[o.is_add()]) + o.key_or_group for o in parsed if _per_job(o, groups)),
    )


def _apply(parsed, groups, task: DictConfig) -> None:
    """Set each per-job override's value on a copy of its template's config (which has the
    key: the template's own ``+key``/``++key`` added it)."""
    for o in parsed:
        if _per_job(o, groups):
            OmegaConf.update(task, o.key_or_group, o.value(), merge=True, force_add=o.is_add() or o.is_force_add())


class JobComposer:
    """Compose the jobs of a multirun, reusing one full composition per template."""

    def __init__(self, hydra_context, config: DictConfig):
        self.loader = hydra_context.config_loader
        self.config = config
        self.groups = ConfigGroups(self.loader, config)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.templates: dict[tuple, tuple[dict, dict]] = {}
        self.full_compositions = 0

    def compose(self, idx: int, overrides: Sequence[str]) -> JobSpec:
        overrides = list(overrides)
        parsed = _parse(overrides)
        key = template_key(overrides, self.groups, parsed)
        if key is None or key not in self.templates:
            return self._compose_full(idx, overrides, key)
        task_template, hydra_template = self.templates[key]
        task = OmegaConf.create(task_template, flags={"struct": True})
        _apply(parsed, self.groups, task)
        # the hydra node differs from the template's only here; copy just these paths
        job = {**hydra_template["job"], "id": str(idx), "num": idx}  # id typed str by Hydra's JobConf
        job["override_dirname"] = _override_dirname(parsed, job["config"]["override_dirname"])
        hydra = {**hydra_template, "job": job, "overrides": {**hydra_template["overrides"], "task": overrides}}
        output_dir = self._output_dir(hydra, idx)
        hydra["runtime"] = {**hydra_template["runtime"], "output_dir": str(output_dir)}
        return JobSpec(idx, overrides, task, hydra, output_dir)

    def _compose_full(self, idx: int, overrides: list[str], key: tuple | None) -> JobSpec:
        from hydra.core.hydra_config import HydraConfig

        self.full_compositions += 1
        cfg = self.loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg):
            cfg.hydra.job.id = idx
            cfg.hydra.job.num = idx
        HydraConfig.instance().set_config(cfg)
        output_dir = self.sweep_dir / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
        with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = os.path.abspath(output_dir)
        task = copy.deepcopy(cfg)
        with open_dict(task):
            del task["hydra"]
        hydra = OmegaConf.to_container(cfg.hydra, resolve=False, enum_to_str=True)
        if key is not None:
            self.templates[key] = (OmegaConf.to_container(task, resolve=False), hydra)
        return JobSpec(idx, overrides, task, hydra, Path(os.path.abspath(output_dir)))

    def _output_dir(self, hydra: dict, idx: int) -> Path:
        subdir = hydra["sweep"]["subdir"]
        if subdir == "${hydra.job.num}":
            sub = str(idx)
        elif subdir == "${hydra.job.override_dirname}":
            sub = hydra["job"]["override_dirname"]
        elif "${" not in str(subdir):
            sub = str(subdir)
        else:  # any other interpolation: resolve it as Hydra would, on this job's hydra node
            sub = str(OmegaConf.select(OmegaConf.create({"hydra": hydra}), "hydra.sweep.subdir"))
        return Path(os.path.abspath(self.sweep_dir / sub))


def _override_dirname(parsed, spec: dict) -> str:
    from hydra._internal.config_loader_impl import get_overrides_dirname

    app = [o for o in parsed if not o.is_hydra_override()]
    return get_overrides_dirname(
        overrides=app, kv_sep=spec["kv_sep"], item_sep=spec["item_sep"], exclude_keys=spec["exclude_keys"]
    )


def write_hydra_files(spec: JobSpec) -> None:
    """The files ``hydra.core.utils.run_job`` writes for a job, byte for byte."""
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    subdir = spec.hydra.get("output_subdir")
    if subdir is not None:
        out = spec.output_dir / subdir
        task = OmegaConf.to_container(spec.task, resolve=False, enum_to_str=True)
        atomic_write_text(out / "config.yaml", to_yaml(task))
        atomic_write_text(out / "hydra.yaml", to_yaml({"hydra": spec.hydra}))
        atomic_write_text(out / "overrides.yaml", to_yaml(spec.overrides))
    handlers = spec.hydra.get("job_logging", {}).get("handlers", {})
    if "file" in handlers:  # Hydra's job log file (empty: this app prints, it does not log)
        (spec.output_dir / f"{spec.hydra['job']['name']}.log").touch()


def launch_batched(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    setup_globals()
    config = launcher.config
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    composer = JobComposer(launcher.hydra_context, config)
    composer.sweep_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    specs = [composer.compose(initial_job_idx + i, ovs) for i, ovs in enumerate(job_overrides)]
    compose_s = time.perf_counter() - t
    check = getattr(launcher.task_function, "validate_sweep", None)
    entries = [(s.task, s.output_dir, s.overrides) for s in specs]
    # every job is checked before any job directory is written; the result goes to run_sweep
    t = time.perf_counter()
    validated = check(entries, overwrite=launcher.overwrite) if check is not None else None
    validate_s = time.perf_counter() - t
    if not launcher.resume or launcher.overwrite:  # a fresh start: no batch resumes an old state
        from src.sweep.checkpoints import remove_checkpoints

        remove_checkpoints(composer.sweep_dir)
    callbacks = launcher.hydra_context.callbacks
    has_callbacks = bool(getattr(callbacks, "callbacks", None))
    full = {}
    t = time.perf_counter()
    for spec in specs:
        write_hydra_files(spec)
        if has_callbacks:
            full[spec.idx] = cfg = copy.deepcopy(spec.task)
            with open_dict(cfg):
                cfg.hydra = spec.hydra
            callbacks.on_job_start(config=full[spec.idx], task_function=launcher.task_function)
    hydra_files_s = time.perf_counter() - t
    stats = {
        "full_compositions": composer.full_compositions,
        "compose_s": compose_s,
        "validate_s": validate_s,
        "hydra_files_s": hydra_files_s,
    }
    if launcher.executor == "local":
        from src.sweep.programs import Programs

        launcher.programs = launcher.programs or Programs()  # kept across the launches of one multirun
        results = launcher.task_function.run_sweep(
            entries,
            validated=validated,
            programs=launcher.programs,
            max_batch_size=launcher.max_batch_size,
            resume=launcher.resume,
            sweep_dir=composer.sweep_dir,
            stats=stats,
            append_summary=initial_job_idx > 0,
            checkpoint_every_s=launcher.checkpoint_every_s,
        )
    else:
        from src.sweep.executors import run_on_submitit

        results = run_on_submitit(launcher, entries, validated, composer.sweep_dir, stats, initial_job_idx > 0)
    returns = []
    for spec, result in zip(specs, results, strict=True):
        ret = _JobReturn(
            overrides=spec.overrides,
            cfg=spec.task,
            working_dir=os.getcwd(),
            task_name=spec.hydra["job"]["name"],
            status=JobStatus.FAILED if isinstance(result, BaseException) else JobStatus.COMPLETED,
            _return_value=result,
        )
        ret._hydra_node = spec.hydra
        returns.append(ret)
        if has_callbacks:
            callbacks.on_job_end(config=full[spec.idx], job_return=ret)
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return returns
