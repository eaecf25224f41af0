import pytest

from imgpipe.archives import Archive, ArchiveError, Limits, UnsafeArchive, archive_format
from tests.archive_makers import make_tar, make_zip, tar_with, zip_with

MEMBERS = {"pets/cat/a.png": b"A" * 100, "pets/dog/b.png": b"B" * 50, "pets/readme.txt": b"hi"}


@pytest.mark.parametrize(
    "suffix,data",
    [
        ("zip", make_zip(MEMBERS)),
        ("tar.gz", make_tar(MEMBERS, "gz")),
        ("tar", make_tar(MEMBERS, "")),
    ],
)
def test_members_are_listed_and_read_without_extracting(tmp_path, suffix, data):
    path = tmp_path / f"a.{suffix}"
    path.write_bytes(data)
    with Archive(path) as archive:
        assert archive.format == suffix
        assert archive.names == sorted(MEMBERS)
        # Backwards order on purpose: random access must work, also into a gzip stream.
        for name in reversed(archive.names):
            assert archive.read(name) == MEMBERS[name]
        assert archive.total_bytes() == 152
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_format_comes_from_content_not_name(tmp_path):
    path = tmp_path / "really-a-zip.tar.gz"
    path.write_bytes(make_zip(MEMBERS))
    assert archive_format(path) == "zip"
    path.write_bytes(b"just text")
    with pytest.raises(ArchiveError, match=r"not a .zip, .tar or .tar.gz"):
        archive_format(path)


@pytest.mark.parametrize(
    "kind,message",
    [
        ("traversal", "climbs out"),
        ("absolute", "absolute path"),
        ("symlink", "link"),
        ("hardlink", "link"),
        ("device", "device"),
        ("fifo", "device or other special"),
    ],
)
def test_hostile_tar_members_refuse_the_whole_archive(tmp_path, kind, message):
    path = tmp_path / "evil.tar.gz"
    path.write_bytes(tar_with(kind))
    with pytest.raises(UnsafeArchive, match=message):
        Archive(path)


@pytest.mark.parametrize(
    "kind,message",
    [
        ("traversal", "climbs out"),
        ("absolute", "absolute path"),
        ("symlink", "symbolic link"),
        ("device", "device"),
    ],
)
def test_hostile_zip_members_refuse_the_whole_archive(tmp_path, kind, message):
    path = tmp_path / "evil.zip"
    path.write_bytes(zip_with(kind))
    with pytest.raises(UnsafeArchive, match=message):
        Archive(path)


def test_backslash_names_are_refused(tmp_path):
    path = tmp_path / "win.zip"
    path.write_bytes(make_zip({"..\\..\\evil.png": b"x"}))
    with pytest.raises(UnsafeArchive, match=r"backslash"):
        Archive(path)


def test_member_count_and_size_limits_stop_archive_bombs(tmp_path):
    path = tmp_path / "bomb.zip"
    # 4 MB of zeros compress to a few kB: the declared sizes are what count.
    path.write_bytes(make_zip({f"cat/{i}.png": bytes(1_000_000) for i in range(4)}))
    assert path.stat().st_size < 50_000
    with pytest.raises(ArchiveError, match=r"more than 3000000 bytes"):
        Archive(path, Limits(max_total_bytes=3_000_000))
    with pytest.raises(ArchiveError, match=r"more than 3 members"):
        Archive(path, Limits(max_members=3))
    gz = tmp_path / "bomb.tar.gz"
    gz.write_bytes(make_tar({"cat/zeros.png": bytes(5_000_000)}))
    with pytest.raises(ArchiveError, match=r"bomb"):
        Archive(gz, Limits(max_total_bytes=1_000_000))


def test_crc_error_is_found_before_use_and_on_read(tmp_path):
    data = bytearray(make_zip({"cat/a.png": b"hello world" * 50}))
    # Flip a byte of the deflated data just past the 30-byte local header and the name.
    offset = 30 + len("cat/a.png") + 5
    data[offset] ^= 0xFF
    path = tmp_path / "bad.zip"
    path.write_bytes(bytes(data))
    with Archive(path) as archive:
        with pytest.raises(ArchiveError, match=r"CRC|corrupt"):
            archive.test_integrity()
        with pytest.raises(ArchiveError, match=r"corrupt"):
            archive.read("cat/a.png")
