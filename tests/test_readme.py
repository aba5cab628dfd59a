"""The README's first five minutes, verbatim, on a fresh machine: a new virtualenv (no system site packages,
dependencies from PyPI), a copy of the repository as git tracks it, the README's main command exactly as
written, then every ``otel-rai`` line the README shows, in order, in the same directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from servers import OtlpReceiver, attributes

from otel_rai import semconv

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: pip in a new virtualenv downloads the dependencies from PyPI (a minute or two with an empty cache).
INSTALL_TIMEOUT_S = 1500
#: What each README command must print (stdout and stderr together), by its subcommand.
EXPECTED = {
    "query": ["A-1090/1.4.2", "P(OUTPUT)"],
    "show": ["decision     A-1093/1.4.1", "Reasons ("],
    "verify": ["A-1093/1.4.1", "A-1093/1.4.2", "1 of 1 input rows match a decision"],
    "export": ["exported 6,012 decisions"],
    "replay": ["replayed"],
    "verify-chain": ["chain intact"],
    "report": ["wrote report.html (3000 decisions of version 2.0)"],
    "monitor": ["QUALITY", "sex = f", "DRIFT", "income"],
    "spool": ["no spool files"],
    "model": ["credit 1.4.1  (sklearn.pipeline.Pipeline)", "clf__max_iter = 500", "training       5000 rows, fit"],
    "reproduce": ["re-run as row 3 of 6 rows", "REPRODUCED"],
}


def code_lines(markdown: str) -> list[str]:
    """The lines of the Markdown's code: fenced blocks and blocks indented by four spaces."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            lines.append(line)
        elif line.startswith("    ") and line.strip():
            lines.append(line[4:])
    return lines


def main_command(markdown: str) -> str:
    """The first command of the section "On a fresh machine"."""
    section = markdown.split("## On a fresh machine", 1)[1].split("\n## ", 1)[0]
    return code_lines(section)[0]


def cli_lines(markdown: str) -> list[str]:
    return [line for line in code_lines(markdown) if line.startswith("otel-rai ")]


def test_the_readme_shows_a_main_command_and_cli_lines():
    text = README.read_text()
    assert main_command(text) == "python3 -m pip install -e . && python3 examples/credit_scoring.py"
    commands = {line.split()[1] for line in cli_lines(text)}
    assert commands == set(EXPECTED), "every README command has its expected output here"
    for line in cli_lines(text):
        assert "[" not in line.split("#")[0] and "|" not in line.split("#")[0], f"not runnable verbatim: {line}"


def _copy_of_the_repository(target: Path) -> Path:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def _environment(venv: Path, home: Path) -> dict[str, str]:
    """A user's shell: the virtualenv first on PATH, nothing of this test run's Python setup."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "OTEL_", "VIRTUAL_ENV", "PIP_REQUIRE"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(venv), OTEL_RAI_HOME=str(home))
    return env


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT_S + 600)
def test_the_readme_verbatim_in_a_fresh_virtualenv(tmp_path):
    text = README.read_text()
    repo = _copy_of_the_repository(tmp_path / "otel-rai")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    env = _environment(venv, tmp_path / "home")

    done = subprocess.run(["bash", "-c", main_command(text)], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=INSTALL_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "audited 12 decisions in 2 spans; complete=True" in out
    assert "read back from the audit store: credit 1.4.2, this run" in out
    assert "2 fairness alert(s) for credit 2.0" in out and "0 fairness alert(s) for credit 2.1" in out
    assert done.stderr.count("generated the key file") == 1  # said once, when the key is made
    python = subprocess.run([str(venv / "bin" / "python"), "-c", "import otel_rai; print(otel_rai.__file__)"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert python.strip() == str(repo / "otel_rai" / "__init__.py")  # the copy, installed editable
    native = subprocess.run([str(venv / "bin" / "python"), "-c",
                             "from otel_rai.codec import native; print(native.module and native.module.__file__)"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert native.strip().startswith(str(repo / "otel_rai" / "codec" / "_native."))  # compiled by the install

    # The README's replay line sends to $OTEL_EXPORTER_OTLP_ENDPOINT: here a real OTLP receiver stands in
    # for the user's collector.
    receiver = OtlpReceiver().start()
    try:
        for line in cli_lines(text):
            run = subprocess.run(["bash", "-c", line], cwd=repo, capture_output=True, text=True, timeout=300,
                                 env={**env, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})
            shown = run.stdout + run.stderr
            assert run.returncode == 0, f"{line}\n{shown[-3000:]}"
            assert "Traceback" not in shown and "internal error" not in shown, line
            for expected in EXPECTED[line.split()[1]]:
                assert expected in shown, f"{line}: {expected!r} not in\n{shown[-3000:]}"
        received = receiver.spans()
    finally:
        receiver.stop()
    ids = [i for _, span in received for i in attributes(span).get(semconv.DECISION_IDS, ())]
    assert len(ids) == 6012 and "A-1093/1.4.1" in ids  # every exported decision was replayed
    assert (repo / "report.html").read_text().count("<svg") >= 4
    assert re.search(r"<td[^>]*id=\"explained\">3000</td>", (repo / "report.html").read_text())
