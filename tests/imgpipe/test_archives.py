import io
import random
import tempfile
import zipfile

import pytest

from imgpipe import archives
from imgpipe.archive_rules import (
    ArchiveError,
    Limits,
    MemberTooLarge,
    UnsafeArchive,
    archive_format,
)
from imgpipe.archives import Archive
from tests.archive_makers import (
    encrypted_zip,
    make_tar,
    make_zip,
    overlap_zip,
    tar_with,
    tar_with_size,
    zip_with,
    zip_with_size,
)

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


# --- archives built to mislead, and damaged ones ------------------------------------------------

# 25 members of 4 kB each: a silently shortened listing would show.
PETS = {f"pets/cat/{i:02d}.png": bytes([i + 1]) * 4000 for i in range(25)}


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_overlapping_zip_entries_are_refused_as_a_bomb(tmp_path):
    data = overlap_zip(8, 2_000_000)
    # zipfile alone unpacks every entry: 16 MB out of a 2 kB file.
    with zipfile.ZipFile(io.BytesIO(data)) as plain:
        assert sum(len(plain.read(info)) for info in plain.infolist()) > 16_000_000
    assert len(data) < 5_000
    path = _write(tmp_path, "bomb.zip", data)
    message = r"bomb.zip: members 'cat/0000.png' and 'cat/0001.png' overlap .*zip bomb"
    with pytest.raises(ArchiveError, match=message):
        Archive(path)


@pytest.mark.parametrize("suffix", ["tar", "tar.gz"])
def test_a_size_field_too_small_stops_at_the_member_instead_of_dropping_the_rest(tmp_path, suffix):
    # The next header would be read from inside the member's data; tarfile stops there quietly.
    data = tar_with_size(PETS, "pets/cat/12.png", 10, "gz" if suffix == "tar.gz" else "")
    path = _write(tmp_path, f"pets.{suffix}", data)
    message = (
        rf"pets.{suffix}: .*after member 'pets/cat/12.png' "
        r"\(whose header declares 10 bytes\).*13 files were listed"
    )
    with pytest.raises(ArchiveError, match=message):
        Archive(path)


@pytest.mark.parametrize("suffix", ["tar", "tar.gz"])
def test_a_size_field_too_large_is_found_before_it_hides_members(tmp_path, suffix):
    # Member 12 claims every byte up to the end marker: members 13-24 become its "data".
    hidden = 12 * (512 + 4096)
    data = tar_with_size(PETS, "pets/cat/12.png", 4096 + hidden - 96, "gz" * (suffix == "tar.gz"))
    path = _write(tmp_path, f"pets.{suffix}", data)
    message = r"member 'pets/cat/12.png' declares .* a tar header sits inside them"
    with pytest.raises(ArchiveError, match=message), Archive(path) as archive:
        archive.test_integrity()  # download does this; a .tar.gz is checked while listed
    # Past the end of the file instead: a truncation, named as such.
    path.write_bytes(tar_with_size(PETS, "pets/cat/24.png", 40_000))
    with pytest.raises(ArchiveError, match=r"ends inside member 'pets/cat/24.png'.*truncated"):
        Archive(path)


@pytest.mark.parametrize("suffix", ["zip", "tar", "tar.gz"])
@pytest.mark.parametrize("where", ["half", "end"])
def test_truncated_archives_say_so_and_name_the_archive(tmp_path, suffix, where):
    whole = make_zip(PETS) if suffix == "zip" else make_tar(PETS, "gz" * (suffix == "tar.gz"))
    # "end": a .tar cut just where its end marker begins (after that, padding only), the
    # others just before their last bytes.
    end = -(-len(whole.rstrip(b"\0")) // 512) * 512 if suffix == "tar" else len(whole) - 5
    path = _write(tmp_path, f"cut.{suffix}", whole[: len(whole) // 2 if where == "half" else end])
    with pytest.raises(ArchiveError, match=r"cut\.(zip|tar|tar\.gz)\b.*truncated"):
        Archive(path)


def test_a_zip_end_record_is_checked_before_and_after_its_directory_is_read(tmp_path):
    data = bytearray(make_zip(PETS))
    end = data.rfind(b"PK\x05\x06")
    data[end + 8 : end + 12] = (26).to_bytes(2, "little") * 2  # one member more than listed
    path = _write(tmp_path, "count.zip", bytes(data))
    message = r"count.zip: its end record counts 26 members but its central directory lists 25"
    with pytest.raises(ArchiveError, match=message):
        Archive(path)
    # The member limit applies to the count the end record declares, before any entry is read.
    with pytest.raises(ArchiveError, match=r"count.zip has more than 20 members"):
        Archive(path, Limits(max_members=20))


def test_encrypted_and_lying_zip_members_are_named(tmp_path):
    path = _write(tmp_path, "locked.zip", encrypted_zip(PETS, "pets/cat/03.png"))
    with pytest.raises(ArchiveError, match=r"locked.zip: member 'pets/cat/03.png' is encrypted"):
        Archive(path)
    # Declaring less than it holds: reading stops at the declared size, and the CRC fails.
    path = _write(tmp_path, "short.zip", zip_with_size(PETS, "pets/cat/05.png", 100))
    with Archive(path) as archive:
        assert archive.total_bytes() == 24 * 4000 + 100
        with pytest.raises(ArchiveError, match=r"short.zip: member 'pets/cat/05.png' cannot be "):
            archive.test_integrity()
    # Declaring more (with the right CRC): fewer bytes than declared are not a whole member.
    path = _write(tmp_path, "long.zip", zip_with_size(PETS, "pets/cat/05.png", 9000))
    with Archive(path) as archive:
        message = r"'pets/cat/05.png' declares 9000 bytes but holds 4000"
        with pytest.raises(ArchiveError, match=message):
            archive.read("pets/cat/05.png")


@pytest.mark.parametrize("suffix", ["zip", "tar.gz"])
def test_dot_and_double_slash_names_are_one_name_for_listing_and_reading(tmp_path, suffix):
    members = {"pets/cat/./dot.png": b"dot", "pets/cat//two.png": b"two", "./pets/dog/a.png": b"a"}
    data = make_zip(members) if suffix == "zip" else make_tar(members)
    with Archive(_write(tmp_path, f"names.{suffix}", data)) as archive:
        assert archive.names == ["pets/cat/dot.png", "pets/cat/two.png", "pets/dog/a.png"]
        assert [archive.read(n) for n in archive.names] == [b"dot", b"two", b"a"]
    twice = {"pets/cat/./dot.png": b"one", "pets/cat/dot.png": b"other"}
    data = make_zip(twice) if suffix == "zip" else make_tar(twice)
    message = r"members 'pets/cat/./dot.png' and 'pets/cat/dot.png' both name the file"
    with pytest.raises(UnsafeArchive, match=message):
        Archive(_write(tmp_path, f"twice.{suffix}", data))


@pytest.mark.parametrize("suffix", ["zip", "tar", "tar.gz"])
def test_member_and_total_limits_hold_for_what_is_read(tmp_path, suffix):
    members = {"cat/small.png": b"s" * 1000, "cat/big.png": b"b" * 5000}
    data = make_zip(members) if suffix == "zip" else make_tar(members, "gz" * (suffix == "tar.gz"))
    path = _write(tmp_path, f"a.{suffix}", data)
    limits = Limits(max_member_bytes=4096, max_total_bytes=8000)
    with Archive(path, limits) as archive:
        archive.test_integrity()  # the whole archive is still checked, the large member too
    with Archive(path, limits) as archive:
        message = (
            r"a\.\S+: member 'cat/big.png' is 4.9 KiB, more "
            r"than download.max_member_mb \(4.0 KiB\)"
        )
        with pytest.raises(MemberTooLarge, match=message):
            archive.read("cat/big.png")
        # Each read counts: the total limit holds for bytes read, not only for those declared.
        for _ in range(8):
            assert archive.read("cat/small.png") == b"s" * 1000
        message = r"a\.\S+: reading member 'cat/small.png' took the bytes read past 7.8 KiB"
        with pytest.raises(ArchiveError, match=message):
            archive.read("cat/small.png")


def test_a_tar_gz_is_streamed_in_a_planned_order_and_inflated_only_when_it_must(
    tmp_path, monkeypatch
):
    names = [f"{split}/{c}/{i}.png" for split in ("test", "train") for c in "abc" for i in range(3)]
    path = _write(tmp_path, "t.tar.gz", make_tar({n: n.encode() for n in names}))
    inflated = []
    real = tempfile.TemporaryFile

    def temporary_file(*args, **kwargs):
        inflated.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(archives.tempfile, "TemporaryFile", temporary_file)
    # Class by class across split folders, as prepare reads: two forward passes, no copy.
    by_class = sorted(names, key=lambda n: (n.split("/")[1], n))
    with Archive(path) as archive:
        archive.expect_reads(by_class)
        assert [archive.read(n) for n in by_class] == [n.encode() for n in by_class]
    assert inflated == []
    # Shuffled: one inflation into the temporary folder, planned before the first read.
    shuffled = random.Random(0).sample(names, len(names))
    with Archive(path) as archive:
        archive.expect_reads(shuffled)
        assert [archive.read(n) for n in shuffled] == [n.encode() for n in shuffled]
    assert inflated == [1]
    # Unplanned reads backwards go the same way once the passes are used up.
    with Archive(path) as archive:
        assert [archive.read(n) for n in reversed(names)] == [n.encode() for n in names[::-1]]
    assert inflated == [1, 1]
    # And only where the room is there: the size needed is known exactly from the listing.
    monkeypatch.setattr(archives.shutil, "disk_usage", lambda _: type("U", (), {"free": 10**6}))
    message = r"t.tar.gz: .*inflated into .*which has 976.6 KiB free; set TMPDIR"
    with Archive(path) as archive, pytest.raises(ArchiveError, match=message):
        archive.expect_reads(shuffled)
        archive.read(shuffled[0])
