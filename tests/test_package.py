"""The ``comixup`` package: installable on its own, importable from anywhere, and layered (a subpackage
imports only lower layers, so the shared helpers never load the mixing code)."""
from __future__ import annotations

import ast
import email.parser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "comixup"

# lower layers first; a module imports only from its own subpackage or from an earlier layer
LAYERS = [("core",), ("models", "mixing", "data"), ("train",),
          ("localization", "compare", "visualize", "evaluation", "prepare")]
LAYER_OF = {sub: level for level, subs in enumerate(LAYERS) for sub in subs}


def _imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_every_subpackage_has_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages <= set(LAYER_OF), f"give {subpackages - set(LAYER_OF)} a layer in LAYERS"


@pytest.mark.parametrize("sub", sorted(LAYER_OF))
def test_subpackages_import_only_lower_layers(sub):
    folder = PACKAGE / sub
    if not folder.is_dir():
        pytest.skip(f"no comixup/{sub}")
    wrong = []
    for path in sorted(folder.rglob("*.py")):
        for module in _imported_modules(path):
            parts = module.split(".")
            if parts[0] != "comixup" or len(parts) < 2 or parts[1] not in LAYER_OF or parts[1] == sub:
                continue
            if LAYER_OF[parts[1]] >= LAYER_OF[sub]:
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong


def test_package_imports_none_of_the_top_level_modules():
    top = {p.stem for p in ROOT.glob("*.py")} | {"models"}
    wrong = [f"{path.relative_to(ROOT)} imports {module}" for path in sorted(PACKAGE.rglob("*.py"))
             for module in _imported_modules(path) if module.split(".")[0] in top]
    assert not wrong


def test_the_top_holds_at_most_ten_python_files():
    assert len(list(ROOT.glob("*.py"))) <= 10


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package pip-installed on its own into a folder (the site), from a copy of the sources."""
    base = tmp_path_factory.mktemp("pip")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "comixup", ignore=shutil.ignore_patterns("__pycache__"))
    target = base / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target), str(source)], check=True)
    return target


@pytest.mark.slow  # pip and a child process
def test_pip_installs_exactly_one_package_that_imports_from_anywhere(installed, tmp_path):
    names = sorted(p.name for p in installed.iterdir() if p.name != "bin")
    assert len(names) == 2 and names[0] == "comixup" and names[1].startswith("comixup-")
    assert names[1].endswith(".dist-info")
    _check_metadata(email.parser.Parser().parsestr((installed / names[1] / "METADATA").read_text()))
    probe = "import comixup; print(comixup.__file__)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(installed), "PATH": ""},
                         capture_output=True, text=True, check=True).stdout
    assert Path(out.strip()).resolve().parent == (installed / "comixup").resolve()


def _readme_loop() -> str:
    """The Python blocks of the README's section on the library, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Co-Mixup in your own training loop", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2
    return "".join(blocks)


def _share_the_compiled_solvers(installed: Path) -> None:
    """Give the installed copy the clone's compiled solvers: numba caches them per source file (path,
    time and size), so the copy would otherwise compile them again, for a minute."""
    from comixup.mixing import comix_solver, puzzlemix

    for dispatcher in (comix_solver.solve_partition, puzzlemix._solve_levels_batch, puzzlemix._transport_batch):
        cache = Path(dispatcher._cache._cache_path)
        (installed / "comixup" / "mixing" / "__pycache__").mkdir(exist_ok=True)
        for compiled in cache.glob("*.nb[ic]"):
            shutil.copy2(compiled, installed / "comixup" / "mixing" / "__pycache__" / compiled.name)
    for module in (PACKAGE / "mixing").glob("*.py"):
        stat = module.stat()
        os.utime(installed / "comixup" / "mixing" / module.name, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.slow  # child interpreters
def test_the_readme_loop_runs_every_mixer_with_class_indices_on_the_installed_package(installed, tmp_path):
    from comixup import CoMixup, PuzzleMix

    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(8, 3, 32, 32, generator=generator), torch.randint(0, 10, (8,), generator=generator)
    CoMixup(num_classes=10, m_part=4)(images, labels, torch.rand(8, 32, 32))  # compiled here, once
    PuzzleMix(num_classes=10)(images, labels, torch.rand(8, 32, 32))
    _share_the_compiled_solvers(installed)
    preamble = ("import torch\ndevice = 'cpu'\ntorch.manual_seed(0)\n"
                "loader = [(torch.randn(4, 3, 32, 32), torch.randint(0, 100, (4,)))]\n"
                "MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)\n")
    check = ("\nassert mixed_targets.shape == (4, 100) and logits.shape == (4, 100)\n"
             "assert torch.allclose(mixed_targets.sum(1), torch.ones(4))\n"
             "import comixup; print(comixup.__file__)\n")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "NUMBA_CACHE_DIR")}
    done = subprocess.run([sys.executable, "-c", preamble + _readme_loop() + check], cwd=tmp_path,
                          env={**env, "PYTHONPATH": str(installed)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve().parent == (installed / "comixup").resolve()
    assert "compiling" not in done.stderr


def _check_metadata(metadata) -> None:
    """Every third-party module the package imports is declared (a dependency or an extra); the
    licence is the SPDX expression; the project has URLs."""
    declared = {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()
                for requirement in metadata.get_all("Requires-Dist")}
    imported = {module.split(".")[0] for path in PACKAGE.rglob("*.py") for module in _imported_modules(path)}
    third_party = imported - set(sys.stdlib_module_names) - {"comixup"} - OPTIONAL_BACKENDS
    assert third_party <= set(DISTRIBUTIONS), f"map {third_party - set(DISTRIBUTIONS)} to its distribution"
    assert {DISTRIBUTIONS[module].lower() for module in third_party} <= declared
    assert metadata["License-Expression"] == "MIT" and metadata.get_all("Project-URL")


# third-party modules the package imports -> the distribution that provides them
DISTRIBUTIONS = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "numba": "numba",
                 "llvmlite": "llvmlite", "tqdm": "tqdm", "matplotlib": "matplotlib", "yaml": "PyYAML",
                 "PIL": "Pillow", "cv2": "opencv-contrib-python-headless"}
OPTIONAL_BACKENDS = {"gco", "bkgco"}  # the published solver's graph-cut libraries, for --m_solver gco / bkgco


@pytest.mark.slow  # child interpreters
def test_the_localization_code_without_opencv_names_the_extra_in_one_line():
    probe = "import sys; sys.modules['cv2'] = None; import comixup.localization.cam"
    failed = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert failed.returncode != 0
    assert failed.stderr.strip().splitlines()[-1] == ('ImportError: the localization evaluation needs OpenCV, which '
                                                      'is not installed: pip install "comixup[localization]"')
    command = subprocess.run([sys.executable, "-c", "import sys; sys.modules['cv2'] = None; "
                              "sys.argv = ['localization.py']; import runpy; runpy.run_path('localization.py', "
                              "run_name='__main__')"], cwd=ROOT, capture_output=True, text=True)
    assert command.returncode == 2
    assert command.stderr.strip() == ('error: the localization evaluation needs OpenCV, which is not installed: '
                                      'pip install "comixup[localization]"')
