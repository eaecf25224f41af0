import os
import subprocess
import sys

from imgpipe.quiet_tf import native_stderr_muted

PROBE = """
from imgpipe.quiet_tf import import_tensorflow
tf = import_tensorflow()
print(int(tf.constant(2) + 3))
"""


def _run(extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "IMGPIPE_"))}
    return subprocess.run(
        [sys.executable, "-c", PROBE], env={**env, **extra_env}, capture_output=True, text=True
    )


def test_tensorflow_loads_without_its_start_up_lines_unless_asked():
    quiet = _run({})
    assert quiet.returncode == 0 and quiet.stdout.strip() == "5"
    assert "absl::InitializeLog" not in quiet.stderr and "oneDNN" not in quiet.stderr
    loud = _run({"IMGPIPE_LOG_LEVEL": "DEBUG"})
    assert loud.returncode == 0 and loud.stdout.strip() == "5"
    assert "absl::InitializeLog" in loud.stderr or "oneDNN" in loud.stderr


def test_stderr_is_given_back_after_muting(capfd):
    with native_stderr_muted():
        os.write(2, b"hidden\n")
    os.write(2, b"shown\n")
    assert capfd.readouterr().err == "shown\n"
