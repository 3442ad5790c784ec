"""The layering check that `make lint` runs (scripts/check_architecture.py) catches what it promises."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_check(tree: Path) -> subprocess.CompletedProcess[str]:
    script = tree / "scripts" / "check_architecture.py"
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)


def copy_tree(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "check_architecture.py", tmp_path / "scripts")
    return tmp_path


def test_the_real_tree_passes():
    result = run_check(ROOT)
    assert result.returncode == 0, result.stderr


def test_an_import_inside_a_function_that_closes_a_cycle_fails(tmp_path):
    tree = copy_tree(tmp_path)
    target = tree / "app" / "errors.py"
    target.write_text(target.read_text() + "\n\ndef _late():\n    from app.proxy import urls  # noqa\n")
    result = run_check(tree)
    assert result.returncode == 1
    cycle = next(line for line in result.stderr.splitlines() if line.startswith("import cycle between"))
    assert "app.errors" in cycle and "app.proxy" in cycle
    assert "app.errors -> app.proxy.urls" in result.stderr


def test_an_import_the_package_docstring_does_not_allow_fails(tmp_path):
    tree = copy_tree(tmp_path)
    target = tree / "app" / "edge" / "cors.py"
    target.write_text(target.read_text() + "\nfrom app.webhooks import records  # noqa\n")
    result = run_check(tree)
    assert result.returncode == 1
    assert "app.edge may not import app.webhooks" in result.stderr


def test_a_module_over_400_lines_fails(tmp_path):
    tree = copy_tree(tmp_path)
    (tree / "app" / "proxy" / "big.py").write_text("x = 1\n" * 401)
    result = run_check(tree)
    assert result.returncode == 1
    assert "app/proxy/big.py has 401 lines (max 400)" in result.stderr


def test_every_folder_of_app_is_a_regular_package_so_the_wheel_ships_it():
    # setuptools' find (pyproject: include = ["app*"]) skips folders without __init__.py:
    # the image built from the wheel would lack them.
    folders = {path.parent for path in (ROOT / "app").rglob("*.py") if "__pycache__" not in path.parts}
    missing = sorted(str(folder.relative_to(ROOT)) for folder in folders if not (folder / "__init__.py").is_file())
    assert missing == []
