import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))
import check_python


def test_the_supported_range_comes_from_pyproject_and_includes_this_python():
    lowest, beyond = check_python.supported_range()
    assert lowest <= sys.version_info[:2] < beyond
    result = subprocess.run([sys.executable, str(REPO_ROOT / "tools/check_python.py")])
    assert result.returncode == 0


@pytest.mark.parametrize("version", [(3, 10, 13), (3, 14, 0)])
def test_another_python_is_stopped_with_the_versions_and_the_command(monkeypatch, version):
    monkeypatch.setattr(check_python.sys, "version_info", (*version, "final", 0))
    with pytest.raises(SystemExit) as stopped:
        check_python.main()
    message = str(stopped.value.code)
    assert f"is {version[0]}.{version[1]}" in message
    assert "needs Python 3.11, 3.12, 3.13" in message
    assert "make setup PYTHON=python3.11" in message
