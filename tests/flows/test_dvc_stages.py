"""``dvc.yaml`` is exact: each stage depends on the code it runs, no more and no less.

Each stage's command runs (tiny params, in a copy of the project) with a ``sitecustomize`` that
lists, at exit, every module the process imported; every module of ``uaafusion`` or ``flows`` it
imported must be covered by one of the stage's dependencies, and every Python file a code
dependency names (a folder: every file under it) must have been imported.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_ROOT, write_tiny_params

CODE_ROOTS = ("uaafusion", "flows")
MODULE_LISTER = """import atexit, os, sys


def _list_modules():
    with open(os.environ["IMPORTED_MODULES_FILE"], "a") as listing:
        listing.write("\\n".join(sorted(sys.modules)) + "\\n")


if os.environ.get("IMPORTED_MODULES_FILE"):
    atexit.register(_list_modules)
"""


def module_file(root: Path, module: str) -> str | None:
    """The project-relative file of ``module`` (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``), if any."""
    base = Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if (root / candidate).is_file():
            return candidate.as_posix()
    return None


def imported_files(root: Path, command: str, listing: str) -> set[str]:
    """Project code files among the module names of ``listing`` (one per line) that a stage command
    imported (``-m MODULE`` runs count as imported too)."""
    modules = set(listing.split())
    words = shlex.split(command)
    modules |= {words[index + 1] for index, word in enumerate(words[:-1]) if word == "-m"}
    files = {module_file(root, module) for module in modules if module.split(".")[0] in CODE_ROOTS}
    return {name for name in files if name is not None}


def code_files(root: Path, dependencies: list[str]) -> list[str]:
    """The Python files a list of dependencies names: a file itself, a folder every ``*.py`` under it."""
    files = []
    for dependency in dependencies:
        path = root / dependency
        files += [path.relative_to(root).as_posix()] if path.is_file() else \
            [item.relative_to(root).as_posix() for item in sorted(path.rglob("*.py"))]
    return files


def covers(dependency: str, file: str) -> bool:
    dependency = dependency.rstrip("/")
    return file == dependency or file.startswith(dependency + "/")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (REPO_ROOT / name).is_file() and name.split("/")[0] in (*CODE_ROOTS, "params.yaml", "dvc.yaml"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, root / name)
    write_tiny_params(root / "params.yaml")
    return root


@pytest.mark.slow
def test_every_stage_depends_on_exactly_the_code_it_imports(project: Path) -> None:
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    lister = project.parent / f"{project.name}-lister"
    lister.mkdir(exist_ok=True)
    (lister / "sitecustomize.py").write_text(MODULE_LISTER)
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "PREFECT_"))}
    environment.update(PYTHONPATH=str(lister), PREFECT_HOME=str(project / ".prefect"),
                       PATH=f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}")
    problems = []
    for name, stage in stages.items():
        listing = lister / f"{name}.txt"
        result = subprocess.run(stage["cmd"], shell=True, cwd=project, capture_output=True, text=True, timeout=900,
                                env={**environment, "IMPORTED_MODULES_FILE": str(listing)})
        assert result.returncode == 0, f"stage {name} failed:\n{result.stderr[-3000:]}"
        imported = imported_files(project, stage["cmd"], listing.read_text())
        code_deps = [dep for dep in stage.get("deps", []) if dep.split("/")[0] in CODE_ROOTS]
        uncovered = sorted(file for file in imported if not any(covers(dep, file) for dep in code_deps))
        unused = sorted(set(code_files(project, code_deps)) - imported)
        if uncovered or unused:
            problems.append(f"{name}: imports but does not depend on {uncovered}; depends on but never imports {unused}")
    assert not problems, "\n".join(problems)


def test_the_import_report_parser_finds_project_modules(tmp_path: Path) -> None:
    (tmp_path / "uaafusion" / "models").mkdir(parents=True)
    for name in ("uaafusion/__init__.py", "uaafusion/config.py", "uaafusion/models/__init__.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "pipeline.py").write_text("")
    report = "\n".join(["uaafusion.config", "uaafusion.models", "torch.nn", "uaafusion.not_a_file"])
    assert imported_files(tmp_path, "python -m flows.pipeline --steps train", report) == {
        "uaafusion/config.py", "uaafusion/models/__init__.py", "flows/pipeline.py"}
    assert covers("uaafusion/models", "uaafusion/models/__init__.py") and not covers("uaafusion/model", "uaafusion/models/x.py")
