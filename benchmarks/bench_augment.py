"""augment: our stage against Augmentor's own multi-threaded ``Pipeline.sample()``.

Both make the same number of samples with the same operations (same arguments and
probabilities) from the same training images: the training split of a prepared photo corpus,
which Augmentor reads as PNG files from class folders and our stage reads from its shards.
Ours is the whole stage (``stages.augment.run``: shards in, shards, manifest and preview out);
Augmentor's is ``sample(n)`` writing its files.

A second row gives the CPU time each side spends per image, all processes and threads
counted: on a shared machine it moves much less than the wall-clock rates. A third row shows
reproducibility: each side runs again with the same seed (Augmentor
via ``Pipeline.set_seed``) and we count how many output images of the rerun are byte-identical
to an image of the first run. Our stage also reruns with one worker instead of all.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import resource
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from Augmentor import Pipeline

from benchmarks.corpus import make_raw_dir
from benchmarks.harness import Comparison, median, time_call
from imgpipe.layout import Layout
from imgpipe.params import AugmentOperation, AugmentParams, PrepareParams, SplitParams
from imgpipe.shards import read_images, read_manifest, read_split
from stages import augment, prepare, split

log = logging.getLogger("benchmarks.augment")

IMAGES = 600  # photos in the corpus at scale 1; about 70% of them are training images
SIZE = (64, 64)
PER_IMAGE = 5
SEED = 7
OPERATIONS = [
    AugmentOperation(name="rotate", probability=0.7, max_left_rotation=10, max_right_rotation=10),
    AugmentOperation(name="flip_left_right", probability=0.5),
    AugmentOperation(name="zoom", probability=0.5, min_factor=1.0, max_factor=1.2),
    AugmentOperation(
        name="random_distortion", probability=0.3, grid_width=4, grid_height=4, magnitude=2
    ),
    AugmentOperation(name="random_brightness", probability=0.5, min_factor=0.8, max_factor=1.2),
]


def prepared_corpus(root: Path, images: int) -> tuple[Path, Path]:
    raw, prepared, split_dir = root / "raw", root / "prepared", root / "split"
    make_raw_dir(raw, images, seed=SEED)
    params = PrepareParams(size=SIZE, color="rgb", workers=0)
    layout = replace(Layout.under(root), raw=raw, prepared=prepared, split=split_dir)
    prepare.run(params, layout)
    split.run(SplitParams(val=0.15, test=0.15), SEED, layout)
    return prepared, split_dir


def export_training_images(prepared: Path, split_dir: Path, folder: Path) -> int:
    """The training split as PNG files in class folders, the layout Augmentor reads."""
    train = read_split(split_dir, "train").set_index("id")
    manifest = read_manifest(prepared)
    rows = manifest[manifest["id"].isin(train.index)]
    for sample, data in read_images(prepared, rows):
        target = folder / train.loc[sample, "label"] / f"{sample}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return len(rows)


def augmentor_pipeline(source: Path, output: Path) -> Pipeline:
    with contextlib.redirect_stdout(io.StringIO()):  # it prints how many images it found
        pipeline = Pipeline(str(source), output_directory=str(output))
    for config in OPERATIONS:
        getattr(pipeline, config.name)(probability=config.probability, **config.arguments)
    return pipeline


def augmentor_sample(source: Path, output: Path, count: int, seed: int | None = None) -> None:
    shutil.rmtree(output, ignore_errors=True)
    pipeline = augmentor_pipeline(source, output)
    if seed is not None:
        Pipeline.set_seed(seed)
    pipeline.sample(count, multi_threaded=True)


def our_stage(prepared: Path, split_dir: Path, out: Path, preview: Path, workers: int) -> None:
    params = AugmentParams(per_image=PER_IMAGE, operations=OPERATIONS, workers=workers)
    layout = replace(
        Layout.under(out.parent),
        prepared=prepared,
        split=split_dir,
        augmented=out,
        augment_preview=preview,
    )
    augment.run(params, SEED, layout)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (our worker processes)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(
    contenders: dict[str, Callable[[], object]], count: int, repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Images/s and CPU ms per image of each contender, alternating them like median_rates.

    CPU time is reported beside throughput because the machine is shared: other processes
    slow both sides' wall-clock rates, much less the CPU each side spends per image.
    """
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            started = cpu_seconds()
            rates[name].append(count / time_call(fn))
            cpu[name].append(1000 * (cpu_seconds() - started) / count)
    return rates, cpu


def _digests(images: list[bytes]) -> Counter:
    return Counter(hashlib.sha256(data).hexdigest() for data in images)


def reproduced_percent(first: list[bytes], second: list[bytes]) -> float:
    """Share of ``second`` that is byte-identical to images of ``first`` (as a multiset)."""
    if not second:
        return 0.0
    return 100.0 * sum((_digests(first) & _digests(second)).values()) / len(second)


def augmentor_outputs(output: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted(output.rglob("*")) if path.is_file()]


def our_outputs(out: Path) -> list[bytes]:
    return [data for _, data in read_images(out, read_manifest(out))]


def run(scale: float = 1.0, repeats: int = 3) -> list[Comparison]:
    with tempfile.TemporaryDirectory(prefix="bench-augment-") as tmp:
        root = Path(tmp)
        prepared, split_dir = prepared_corpus(root, max(12, int(IMAGES * scale)))
        source = root / "augmentor-source"
        count = export_training_images(prepared, split_dir, source) * PER_IMAGE
        ours_out, theirs_out, preview = root / "ours", root / "theirs", root / "preview.png"
        log.info("augment: %d samples of %dx%d from the same training images", count, *SIZE)
        rates, cpu = measure(
            {
                "ours": lambda: our_stage(prepared, split_dir, ours_out, preview, workers=0),
                "augmentor": lambda: augmentor_sample(source, theirs_out, count),
            },
            count,
            repeats,
        )

        our_stage(prepared, split_dir, ours_out, preview, workers=0)
        first_ours = our_outputs(ours_out)
        our_stage(prepared, split_dir, ours_out, preview, workers=1)
        ours_again = reproduced_percent(first_ours, our_outputs(ours_out))
        augmentor_sample(source, theirs_out, count, seed=SEED)
        first_theirs = augmentor_outputs(theirs_out)
        augmentor_sample(source, theirs_out, count, seed=SEED)
        theirs_again = reproduced_percent(first_theirs, augmentor_outputs(theirs_out))
    log.info(
        "seeded rerun reproduced %.1f%% of ours (1 worker vs all) and %.1f%% of Augmentor's",
        ours_again,
        theirs_again,
    )
    return [
        Comparison(
            "augment",
            f"augmented {SIZE[0]}x{SIZE[1]} images/s, {count} samples",
            "img/s",
            ours=median(rates["ours"]),
            plain=median(rates["augmentor"]),
            plain_name="Augmentor Pipeline.sample(), multi-threaded, same ops and count",
            goal=2,
            samples=rates,
        ),
        Comparison(
            "augment",
            "CPU time per image (all processes)",
            "CPU ms/img",
            ours=median(cpu["ours"]),
            plain=median(cpu["augmentor"]),
            plain_name="Augmentor Pipeline.sample(), multi-threaded",
            higher_is_better=False,
            samples=cpu,
        ),
        Comparison(
            "augment",
            "output byte-identical on a seeded rerun",
            "%",
            ours=ours_again,
            plain=theirs_again,
            plain_name="Augmentor Pipeline.sample() after Pipeline.set_seed(), twice",
        ),
    ]
