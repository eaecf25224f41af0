import errno
import logging
import os
from pathlib import Path

import pytest

from imgpipe import atomic
from imgpipe.cli import run_main


def _full(filename: str | None = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)


def test_a_full_disk_keeps_the_old_output_and_names_what_it_needed(tmp_path):
    target = tmp_path / "prepared"
    target.mkdir()
    (target / "old.tar").write_bytes(b"old")
    with pytest.raises(atomic.DiskFullError) as err, atomic.atomic_dir(target) as scratch:
        (scratch / "shard-0.tar").write_bytes(b"x" * 5000)
        try:
            raise _full(str(scratch / "shard-1.tar"))
        except OSError as cause:
            # as a pool or writer re-raises it: the full disk is the cause, two levels down
            try:
                raise RuntimeError("worker failed") from cause
            except RuntimeError as wrapped:
                raise ValueError("cleanup failed too") from wrapped
    message = str(err.value)
    assert f"the disk holding {target} is full" in message
    assert "shard-1.tar" in message
    assert "had reached 5.0 kB" in message and "needs more than 5.0 kB" in message
    assert "dvc gc --workspace" in message
    assert (target / "old.tar").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]  # no scratch left behind


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(KeyError), atomic.atomic_dir(tmp_path / "out"):
        raise KeyError("a bug keeps its traceback")
    assert atomic.disk_full_cause(OSError(errno.EACCES, "denied")) is None


def test_a_full_disk_while_writing_one_file_leaves_no_partial(tmp_path, monkeypatch):
    def full(self, data):
        Path.open(self, "wb").close()  # the file was created, then the disk filled
        raise _full(str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(atomic.DiskFullError, match=r"metrics\.json is full"):
        atomic.write_json(tmp_path / "metrics.json", {"accuracy": 1})
    assert list(tmp_path.iterdir()) == []


def test_a_stage_that_fills_the_disk_outside_an_output_exits_with_one_message(caplog):
    def body():
        try:
            raise _full("/project/.train-backup/latest.weights.h5")
        except OSError as cause:
            raise RuntimeError("h5py could not write") from cause

    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_:
        run_main("train", body)
    assert exit_.value.code == 2
    (record,) = caplog.records
    assert "no space left on the disk holding /project/.train-backup" in record.getMessage()
    assert "free now" in record.getMessage()
