"""The image's default SQLite webhook store lands on a declared volume its user can write.

No Docker daemon is needed: the final stage's instructions are read from the Dockerfile.
"""

import re
from pathlib import Path

from app.config.webhooks import DEFAULT_WEBHOOK_STORE

ROOT = Path(__file__).resolve().parents[2]


def final_stage() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    stage = text.split("\nFROM ")[-1]
    instructions = []
    for line in stage.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_the_default_webhook_store_is_on_a_volume_owned_by_the_runtime_user():
    steps = final_stage()
    workdir = [rest for keyword, rest in steps if keyword == "WORKDIR"][-1]
    volumes = [rest for keyword, rest in steps if keyword == "VOLUME"]
    user = [rest for keyword, rest in steps if keyword == "USER"][-1]
    runs = " ".join(rest for keyword, rest in steps if keyword == "RUN")
    # The default store is relative, so it is created in the working directory...
    assert DEFAULT_WEBHOOK_STORE.startswith("sqlite+aiosqlite:///./")
    # ... which is a declared volume (kept beyond the container) ...
    assert any(workdir in re.findall(r'"([^"]+)"', volume) or volume == workdir for volume in volumes)
    # ... owned by the non-root user the server runs as.
    uid = user.split(":")[0]
    assert uid != "0" and re.search(rf"chown {uid}:\S+ {re.escape(workdir)}\b", runs)
    # The examples still import from anywhere (the compose demo runs python -m examples...).
    assert ("ENV", "PYTHONPATH=/srv/gatehouse") in steps
