"""docs/settings.md is generated from otel_rai/settings.py, and names every OTEL_RAI_* variable there is."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from otel_rai import settings

ROOT = Path(__file__).resolve().parents[1]
VARIABLE = re.compile(r"\bOTEL_RAI_[A-Z0-9_]*[A-Z0-9]\b")
#: Names that are not variables: tests/test_layout.py checks that `settings.env` refuses an undeclared one.
NOT_VARIABLES = frozenset({"OTEL_RAI_NOT_A_SETTING"})


def test_the_committed_settings_page_is_what_the_settings_module_prints():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    printed = subprocess.run([sys.executable, "-m", "otel_rai.settings"], env=env, capture_output=True,
                             text=True, timeout=60, check=True).stdout
    committed = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert committed == printed, "docs/settings.md is stale: python -m otel_rai.settings > docs/settings.md"


def _tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / name for name in listed.splitlines() if name != "docs/settings.md"]


def test_every_otel_rai_variable_anywhere_in_the_repository_is_in_the_one_table():
    used: dict[str, str] = {}
    for path in _tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        for name in set(VARIABLE.findall(text)) - NOT_VARIABLES:
            used.setdefault(name, str(path.relative_to(ROOT)))
    assert len(used) >= 10  # the scan found the variables (a broken pattern would find none)
    table = settings.markdown_table()
    missing = {name: where for name, where in used.items() if f"`{name}`" not in table}
    assert not missing, f"variables used but not documented in docs/settings.md: {missing}"


def test_the_page_has_no_restructuredtext_literals():
    page = settings.markdown_page()
    assert "``" not in page
    for option in ("service_name", "hash_key", "store", "spool", "checkpoint_key"):
        assert f"| `{option}` |" in page
