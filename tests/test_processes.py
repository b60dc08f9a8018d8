"""The session check of ``tests/conftest.py`` (issue 25, item 7): a process that a test
leaves behind, running as its child or re-parented after its parent ended, fails the
session, is named, and is killed; one that ends in time does not fail it."""

from __future__ import annotations

from tests import processes
from tests.helpers import REPO

pytest_plugins = ["pytester"]

# The inner session's conftest: the check of tests/conftest.py, with a short grace.
CONFTEST = """
import tests.conftest

tests.conftest.GRACE_S = 1.0
from tests.conftest import _no_process_left_behind  # noqa: E402,F401
"""


def _run_session(pytester, monkeypatch, test_body: str):
    """Run a one-test session whose test is ``test_body``; its result."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_body)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)


def test_a_process_left_behind_fails_the_session_and_is_killed(pytester, monkeypatch, tmp_path):
    pids = tmp_path / "pids"
    result = _run_session(
        pytester,
        monkeypatch,
        f"""
import subprocess

def test_leaks():
    child = subprocess.Popen(["sleep", "300"])
    # sh ends at once: its sleep is re-parented, no longer a descendant of the session
    orphan = subprocess.run(
        ["sh", "-c", "sleep 301 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True
    )
    open({str(pids)!r}, "w").write(f"{{child.pid}} {{orphan.stdout.strip()}}")
""",
    )
    left = [processes.read(int(pid)) for pid in pids.read_text().split()]
    processes.kill([p for p in left if p is not None])  # should the check have missed them
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*2 process(es) started by the tests still ran 1 s after the last test ended*",
            "PID * sleep 300",
            "PID * sleep 301",
        ]
    )
    assert left == [None, None]  # killed by the check


def test_a_process_that_ends_within_the_grace_passes(pytester, monkeypatch):
    result = _run_session(
        pytester,
        monkeypatch,
        """
import subprocess

def test_leaves_a_short_one():
    subprocess.Popen(["sleep", "0.3"])
""",
    )
    result.assert_outcomes(passed=1)
