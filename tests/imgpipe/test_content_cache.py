import os
import time

from imgpipe.content_cache import ContentCache, evict

KEY = "ab" * 32
OTHER = "cd" * 32


def test_entries_appear_on_commit_survive_damage_and_concurrent_writers(tmp_path):
    writer = ContentCache.open(tmp_path, "f" * 64)
    writer.put(KEY, b"first payload")
    # A pack is visible only once committed: a concurrent run sees nothing half-written.
    assert ContentCache.open(tmp_path, "f" * 64).get(KEY) is None
    other = ContentCache.open(tmp_path, "f" * 64)  # a second run, writing its own pack
    other.put(OTHER, b"second payload")
    other.put(KEY, b"first payload")
    writer.commit()
    other.commit()
    reader = ContentCache.open(tmp_path, "f" * 64)
    assert reader.get(KEY) == b"first payload" and reader.get(OTHER) == b"second payload"
    assert ContentCache.open(tmp_path, "e" * 64).get(KEY) is None  # another fingerprint
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]

    # A flipped byte or a truncated pack reads as missing, never as a wrong payload.
    for pack in sorted(tmp_path.rglob("*.pack")):
        data = bytearray(pack.read_bytes())
        data[0] ^= 0xFF
        pack.write_bytes(bytes(data[:-3]))
    damaged = ContentCache.open(tmp_path, "f" * 64)
    assert damaged.get(KEY) is None and damaged.get(OTHER) is None
    # A damaged index drops its pack; the others still load.
    index = sorted(tmp_path.rglob("*.index"))[0]
    index.write_bytes(index.read_bytes()[:-1])
    assert len(ContentCache.open(tmp_path, "f" * 64).known) == 2  # only the second pack's


def test_eviction_removes_oldest_packs_first_until_the_cache_fits(tmp_path):
    for number in range(4):
        cache = ContentCache.open(tmp_path, "f" * 64)
        cache.put(f"{number:064x}", bytes(1000))
        cache.commit()
    packs = sorted(tmp_path.rglob("*.pack"))
    for age, pack in enumerate(reversed(packs)):  # the first pack is the oldest
        stamp = time.time() - 100 * (age + 1)
        os.utime(pack, (stamp, stamp))
    stale = packs[0].parent / ".tmp-dead.pack"
    stale.write_bytes(b"x")
    os.utime(stale, (0, 0))
    assert evict(tmp_path, 2500) == 2
    left = ContentCache.open(tmp_path, "f" * 64)
    assert sorted(left.known) == [bytes.fromhex(f"{n:064x}") for n in (2, 3)]
    assert not stale.exists()
