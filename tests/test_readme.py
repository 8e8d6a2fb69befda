"""Every ``python -m src.train`` and ``python -m src.aggregate`` command that README.md
shows runs as shown, shrunk to a few outer steps (and a study to its reduced form), in a
fresh working directory: first every run, then every aggregation of what they wrote."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from tests.conftest import ROOT, cli
from tests.test_studies import EXPECTED_JOBS, REDUCED

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]  # the front door and the docs pages
NEEDS_A_CLUSTER = ("executor=submitit_slurm", "+cluster=")  # the SLURM section's commands
SHRUNK_OPTUNA = ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2"]


def readme_commands(on_a_cluster: bool = False) -> list[list[str]]:
    """The commands, in order: code lines (indented or fenced; ``\\`` continuations joined,
    trailing ``  # comments`` dropped), then inline code spans with arguments. Not run:
    the SLURM section's (they need a cluster: ``on_a_cluster=True`` returns those, which
    tests/test_slurm.py runs) and templates with a ``<placeholder>``."""
    text = "\n".join(page.read_text() for page in PAGES)
    found, lines, fenced, i = [], text.splitlines(), False, 0
    while i < len(lines):
        raw = lines[i]
        fenced ^= raw.strip().startswith("```")
        line = raw.strip()
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1].rstrip() + " " + lines[i].strip()
        if (fenced or raw.startswith("    ")) and line.startswith(("python -m src.train", "python -m src.aggregate")):
            found.append(re.split(r"\s{2,}#", line)[0].strip())
        i += 1
    found += [c for c in re.findall(r"`(python -m src\.(?:train|aggregate) [^`]+)`", text)]
    commands = []
    for command in dict.fromkeys(found):
        cluster = any(marker in command for marker in NEEDS_A_CLUSTER)
        if cluster == on_a_cluster and not re.search(r"<\w+>", command):
            commands.append(shlex.split(command))
    return commands


def shrunk(args: list[str]) -> list[str]:
    study = next((a.split("=", 1)[1] for a in args if a.startswith("study=")), None)
    extra = ["outer_steps=2"]
    if study == "optuna_logreg":
        extra += SHRUNK_OPTUNA
    elif study is not None:
        extra += REDUCED[study]
    return args + extra


def test_the_readme_shows_runs_and_aggregations():
    commands = readme_commands()
    modules = [c[2] for c in commands]
    assert modules.count("src.train") >= 10 and modules.count("src.aggregate") >= 3, commands
    assert ["python", "-m", "src.train"] in commands  # the set-up's default job


def shown_figures() -> list[str]:
    """The figures README.md (``![...](docs/NAME.png)``) and the docs pages (``![...](NAME.png)``) show."""
    shown = re.findall(r"\]\(docs/([\w.\-]+\.png)\)", README.read_text())
    for page in PAGES[1:]:
        shown += re.findall(r"\]\(([\w.\-]+\.png)\)", page.read_text())
    return list(dict.fromkeys(shown))


def drawn_by(args: list[str]) -> tuple[set[str], str | None]:
    """The figure names an aggregate command with ``--figures docs`` writes (curves of each
    ``--metric`` against its ``--x``), and the prefix of its per-job images."""
    if "--figures" not in args or args[args.index("--figures") + 1] != "docs" or "--plot" not in args:
        return set(), None
    sweep = args[3].rstrip("/").rsplit("/", 1)[-1]
    x = args[args.index("--x") + 1] if "--x" in args else "steps"
    metrics = [args[i + 1] for i, a in enumerate(args) if a == "--metric"]
    return {f"{sweep}_{m}_{x}.png" for m in metrics}, f"{sweep}_images_"


def test_every_figure_the_readme_shows_is_drawn_by_a_command_it_shows():
    names, prefixes = set(), []
    for args in readme_commands():
        if args[2] == "src.aggregate":
            drawn, prefix = drawn_by(args)
            names |= drawn
            prefixes += [prefix] if prefix else []
    shown = shown_figures()
    assert len(shown) >= 5
    for name in shown:
        assert name in names or name.startswith(tuple(prefixes)), f"docs/{name}: no command shown draws it"
        assert (ROOT / "docs" / name).exists(), name


@pytest.mark.slow
def test_every_readme_command_works_as_shown(tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # the own-objective example's paths
    commands = readme_commands()
    cache = {"JAX_COMPILATION_CACHE_DIR": str(ROOT / "outputs" / ".jax_cache")}  # the suite's, not a new one
    for args in sorted(commands, key=lambda c: c[2] == "src.aggregate"):  # runs first, stable
        module, rest = args[2], args[3:]
        proc = cli(*(shrunk(rest) if module == "src.train" else rest), module=module, cwd=tmp_path, env=cache)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (" ".join(args), proc.stderr[-3000:])
        study = next((a.split("=", 1)[1] for a in rest if a.startswith("study=")), None)
        if study is not None:  # each study writes its own directory, where its aggregation looks
            summary = json.loads((tmp_path / "outputs" / "studies" / study / "sweep_summary.json").read_text())
            assert summary["jobs"] == summary["completed"] == EXPECTED_JOBS.get(study, 2), (study, summary)
        if module == "src.aggregate":
            assert (tmp_path / rest[0] / "results.csv").exists()
    for name in shown_figures():  # drawn, under the names the README shows, by the commands it shows
        assert (tmp_path / "docs" / name).exists(), name


def test_the_docs_python_example_reproduces_the_seed(seed_trajectory, capsys):
    """docs/extending.md's "From Python" block, run as written: theta_100 of the seed notebook."""
    page = ROOT / "docs" / "extending.md"
    block = re.search(r"## From Python.*?```python\n(.*?)```", page.read_text(), re.S).group(1)
    exec(compile(block, str(page), "exec"), {})  # noqa: S102 - the docs' own example
    printed = capsys.readouterr().out
    value = float(re.search(r"theta_100 = (\S+)", printed).group(1))
    assert value == pytest.approx(seed_trajectory["theta"].iloc[-1], abs=5e-8)


def test_every_relative_link_and_image_resolves():
    """In README.md and every docs page: ``[text](path)`` and ``![alt](path)`` that are not
    web addresses name a file or folder that exists (an anchor after ``#`` is not checked)."""
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"^[a-z]+://", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken
    assert len(PAGES) >= 10 and len(README.read_text().splitlines()) <= 300
