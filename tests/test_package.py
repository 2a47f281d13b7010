"""The ``comixup`` package: installable on its own, importable from anywhere, and layered (a subpackage
imports only lower layers, so the shared helpers never load the mixing code)."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_pip_installs_exactly_one_package_that_imports_from_anywhere(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "comixup", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target), str(source)], check=True)
    installed = sorted(p.name for p in target.iterdir() if p.name != "bin")
    assert len(installed) == 2 and installed[0] == "comixup" and installed[1].startswith("comixup-")
    assert installed[1].endswith(".dist-info")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = ("import comixup, torch; from comixup import CoMixup, PuzzleMix, ManifoldMix, input_mixup, cutmix, "
             "build_model, saliency_and_clean_loss; CoMixup(num_classes=10); "
             "model = build_model('preactresnet18', 10, initial_channels=16); print(comixup.__file__)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env={"PYTHONPATH": str(target), "PATH": ""},
                         capture_output=True, text=True, check=True).stdout
    assert Path(out.strip()).resolve().parent == (target / "comixup").resolve()
