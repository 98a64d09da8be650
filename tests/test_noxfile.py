"""The README's test command tests, whatever Pythons the machine has (issue #14).

On a pyenv machine, ``python3.9`` on PATH is a shim that exits 127 when pyenv has not
selected 3.9; nox used to take it for present, skip both sessions and exit 0 having run
no test. Here the README's command runs in a copy of this tree with such shims first on
PATH and no pyenv installs to fall back on, as a newcomer's machine would have it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BROKEN_SHIM = '#!/bin/sh\necho "pyenv: $(basename "$0"): command not found" >&2\nexit 127\n'
# A pythonX.Y that starts but is another Python (a stale link, a misnamed venv): not X.Y.
WRONG_SHIM = f'#!/bin/sh\nexec {sys.executable} "$@"\n'

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This tree's files (committed or not, minus what .gitignore drops) in a new folder."""
    copy = tmp_path_factory.mktemp("fresh-clone")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


def newcomer_env(tmp: Path, shim: str = BROKEN_SHIM, **extra: str) -> dict[str, str]:
    """PATH with broken python3.9/python3.13 shims first, then the system's folders only.

    Not the folder of the Python running this test: in a virtualenv of 3.9 or 3.13 that
    holds a working ``python3.9`` / ``python3.13``, which nox itself would find.
    """
    shims = tmp / "shims"
    shims.mkdir(exist_ok=True)
    for name in ("python3.9", "python3.13"):
        path = shims / name
        path.write_text(shim)
        path.chmod(0o755)
    (tmp / "no-pyenv").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "VIRTUAL_ENV"}}
    env.update(
        PATH=os.pathsep.join([str(shims), "/usr/bin", "/bin"]),
        PYENV_ROOT=str(tmp / "no-pyenv"),  # no pyenv install to fall back on either
        UV_PYTHON_DOWNLOADS="never",  # nor an interpreter nox would have uv download
        **extra,
    )
    return env


def nox(fresh: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m nox ARGS`` in ``fresh``: the README's command, nox's flags in front."""
    return subprocess.run(
        [sys.executable, "-m", "nox", *args],
        cwd=fresh,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


CI_SESSIONS = {  # noxfile.py's CI_MATRIX, as session ids
    "3.9": "py3.9-flask2.2-django4.2-otel-oldest",
    "3.13": "py3.13-flask3-django6-otel-newest",
}
HERE = "{}.{}".format(*sys.version_info[:2])


@pytest.mark.parametrize("shim", [BROKEN_SHIM, WRONG_SHIM], ids=["exits-127", "another-python"])
def test_broken_shims_run_the_tests_on_the_python_that_runs(
    fresh: Path, tmp_path: Path, shim: str
) -> None:
    argv = ["-s", "tests", "--", "-q", "tests/test_public_api.py"]
    done = nox(fresh, newcomer_env(tmp_path, shim), *argv)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    notes = [line for line in out.splitlines() if "not found or not runnable" in line]
    assert len(notes) == 1, out[-4000:]  # said once, in one line
    broken = [f"python{v}" for v in CI_SESSIONS if v != HERE]
    assert f"{' and '.join(broken)} not found or not runnable" in notes[0]
    if HERE in CI_SESSIONS:  # nox's own Python is one of the CI set's: that set runs
        assert notes[0].endswith(": skipped")
        assert f"Session tests({CI_SESSIONS[HERE]}) was successful" in out, out[-4000:]
    else:  # none of them runs: the suite runs on nox's own Python instead
        assert notes[0].endswith(f"(Python {HERE}) instead")
        assert re.search(rf"tests\(py{re.escape(HERE)}-flask3-", out), out[-4000:]
    passed = re.search(r"(\d+) passed", out)
    assert passed is not None, out[-4000:]
    assert int(passed.group(1)) > 0
    assert "skipped (Python interpreter" not in out


def test_a_run_that_tests_nothing_fails(fresh: Path, tmp_path: Path) -> None:
    env = newcomer_env(tmp_path)
    nothing = nox(fresh, env, "-s", "tests", "--", "tests/test_public_api.py", "-k", "no_such")
    assert nothing.returncode != 0
    # Everything selected is skipped: pytest itself exits 0, the session must not.
    skipped = nox(fresh, env, "-s", "tests", "--", "-q", "-m", "soak", "tests/test_memory.py")
    out = skipped.stdout + skipped.stderr
    assert skipped.returncode != 0, out[-4000:]
    assert "pytest ran no test" in out


def test_on_ci_a_missing_interpreter_fails_instead_of_shrinking_the_matrix(
    fresh: Path, tmp_path: Path
) -> None:
    env = newcomer_env(tmp_path, CI="true")
    argv = ["--error-on-missing-interpreters", "-s", "tests", "--", "tests/test_public_api.py"]
    done = nox(fresh, env, *argv)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out[-4000:]
    # Not shrunk to what runs here: each CI Python that is not nox's own was tried and
    # failed (not found, or not fetched where nox asks uv for interpreters).
    assert "not found or not runnable" not in out
    for version, session in CI_SESSIONS.items():
        if version != HERE:
            assert f"* tests({session}): failed" in out, out[-4000:]
