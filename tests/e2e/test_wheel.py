"""The wheel the Docker image installs carries the webhook store's migrations, and they run from it.

Built as the Dockerfile's builder stage does (``pyproject.toml``, ``README.md`` and
``app/`` only, ``pip wheel --no-deps``), unpacked, and imported from there ahead of
this checkout, so a revision or ``env.py`` missing from the package data fails here.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from app.webhooks.migrations import head_revision

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import anyio
import app
from app.webhooks.migrations import migrate_store

migrated = anyio.run(migrate_store, sys.argv[1])
print(json.dumps({"app": app.__file__, "found": list(migrated.found), "head": migrated.head}))
"""


def test_a_store_migrates_from_the_installed_wheel(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "app", src / "app", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = wheels.glob("gatehouse-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")} | {"PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, f"sqlite:///{tmp_path / 'hooks.db'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["app"].startswith(str(site))  # the wheel's copy, not this checkout
    assert (result["found"], result["head"]) == ([], head_revision())
