"""params.yaml parsed once into typed, validated objects.

Every section forbids unknown keys, so a typo stops the stage with a message naming the key
instead of silently falling back to a default. Numbers that arrive as strings (DVC writes
``-S train.lr=1e-4`` so that YAML reads a string) are coerced by pydantic's lax mode.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from imgpipe import bounded_yaml
from imgpipe.errors import ParamsError
from imgpipe.export_formats import FORMATS, TFLITE_VARIANTS
from imgpipe.images import (
    ColorMode,
    ColorValue,
    Fit,
    LumaChoice,
    Resample,
    Standard,
    pixel_size,
)
from imgpipe.near_duplicates import MOST_DISTANCE
from imgpipe.quality import Flag
from imgpipe.sources import SOURCES

PARAMS_FILE = Path("params.yaml")


def class_names_as_text(value: Any) -> Any:
    """Class names are folder names, always text; YAML reads a class named 6 as a number."""
    if isinstance(value, dict):
        return {str(key): item for key, item in value.items()}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseParams(Section):
    seed: int = Field(42, ge=0, description="seed shared by split, augment and train")


# download: each source's params model lives in its module (imgpipe.sources); `source` picks
# the model, and each model refuses keys its source does not read.
DEFAULT_SOURCE = "digits"
DownloadParams = Annotated[
    Union[tuple(source.Params for source in SOURCES.values())],  # noqa: UP007 (from a registry)
    Field(discriminator="source"),
]


ImageSize = pixel_size(4096)


class QualityParams(Section):
    """Thresholds of the image-quality flags in reports/prepare.json (imgpipe.quality)."""

    # 100 is the usual cut for photos (OpenCV's Laplacian on 0-255 grey); CIFAR-10's sharpest
    # 99% of 32x32 images are above 300.
    blurry_below: float = Field(
        100.0, ge=0, description="variance of the Laplacian of the decoded grey image"
    )
    dark_below: float = Field(30.0, ge=0, le=255, description="mean grey level, 0-255")
    bright_above: float = Field(225.0, ge=0, le=255, description="mean grey level, 0-255")
    # 1 bit: near-constant frames only. Small images hold few grey levels by nature (the 8x8
    # digits: 1.4 to 4 bits, median 2.8), so a cut meant for photos would flag a whole dataset.
    entropy_below: float = Field(
        1.0, ge=0, le=8, description="bits of the grey-level histogram (8 at most)"
    )
    aspect_above: float = Field(3.0, ge=1, description="longer side over shorter side")
    colourless_below: float = Field(
        2.0, ge=0, le=255, description="mean spread of R, G, B per pixel: below it an image is grey"
    )
    exclude: list[Flag] = Field(
        default_factory=list,
        description="flags whose images are rejected (listed with the flag as reason)",
    )


class CacheParams(Section):
    """Where a stage keeps the per-image results it may reuse on its next run, and how much.

    Outside DVC's outputs, so it changes no output: not listed in dvc.yaml's params.
    """

    dir: str | None = Field(
        None, description="cache folder, relative to the project; null turns the cache off"
    )
    max_mb: float = Field(2000, gt=0, description="most megabytes the cache folder may hold")

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1_000_000)


class PrepareParams(Section):
    size: ImageSize = Field((32, 32), description="width, height in pixels")
    fit: Fit = Field(
        "stretch", description="stretch to size, crop the centre, or pad (letterbox) with fill"
    )
    fill: ColorValue = Field((0, 0, 0), description="colour of the bars of fit: pad")
    background: ColorValue = Field(
        (255, 255, 255), description="colour that transparent pixels are composited on"
    )
    color: ColorMode = "grayscale"
    luma: LumaChoice = Field(
        "bt601", description="weights of R, G, B in a grey level: a name or three numbers"
    )
    resample: Resample = "lanczos"
    draft: bool = Field(True, description="JPEG DCT scaling where it stays near a full decode")
    min_side: int = Field(1, ge=1, description="images with a shorter side are rejected")
    min_per_class: int = Field(1, ge=1)
    shard_size: int = Field(4096, ge=1, description="images per shard file")
    workers: int = Field(0, ge=0, description="worker processes; 0 means one per core")
    timeout: float = Field(
        30.0,
        gt=0,
        le=86400,
        description="seconds one file may take to decode before it is rejected as timeout",
    )
    quality: QualityParams = QualityParams()
    # Standardized images by content hash: after adding a few files only those are decoded.
    cache: CacheParams = CacheParams()

    def standard(self) -> Standard:
        """The image standard these params describe: what prepare and predict turn images into."""
        return Standard(
            width=self.size[0],
            height=self.size[1],
            **{name: getattr(self, name) for name in STANDARD_FIELDS},
        )


# The params that are fields of the image standard under the same name (size is split in two).
STANDARD_FIELDS = ("color", "resample", "fit", "fill", "background", "luma", "draft")


class SplitParams(Section):
    val: float = Field(0.15, gt=0, lt=1, description="fraction of samples for validation")
    test: float = Field(0.15, gt=0, lt=1, description="fraction of samples for testing")
    keep_source_test: bool = Field(
        False,
        description="use the source's own test set (manifest column source_split) as the test "
        "split; val is then a fraction of the rest and test is not used",
    )
    keep_source_val: bool = Field(
        False,
        description="use the source's own val set (a val/ folder: source_split 'val') as the "
        "val split when it has one; otherwise val is cut from the rest",
    )
    # 4 from looking at CIFAR-10's pairs: at 0-4 bits nearly every pair is one photo twice,
    # from 6 bits on different photos of plain backgrounds start to match (README).
    near_duplicate_distance: int | None = Field(
        4,
        ge=0,
        le=MOST_DISTANCE,
        description="images whose perceptual hashes differ in at most this many of 64 bits "
        "are near duplicates and stay on one side of the split; null: exact copies only",
    )
    drop_train_near_duplicates: bool = Field(
        False,
        description="with a source's own test (or val) set: leave out of train the images "
        "that are near duplicates of one of its images (listed in data/split/leakage.json)",
    )

    @field_validator("test")
    @classmethod
    def _leaves_training_data(cls, test: float, info) -> float:
        val = info.data.get("val")
        if val is not None and val + test >= 1:
            raise ValueError(f"val + test must be below 1 (got {val} + {test})")
        return test


class AugmentOperation(BaseModel):
    """One Augmentor operation: its name, its probability, and its own arguments."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    probability: float = Field(1.0, ge=0, le=1)

    @property
    def arguments(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OperationChange(BaseModel):
    """A per-class change to one operation: a new probability and/or new arguments."""

    model_config = ConfigDict(extra="allow", frozen=True)

    probability: float | None = Field(None, ge=0, le=1)

    @property
    def arguments(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class AugmentParams(Section):
    per_image: int = Field(0, ge=0, description="augmented samples made from each training image")
    per_class: int = Field(
        0, ge=0, description="fill each class up to this many training images (balances classes)"
    )
    operations: list[AugmentOperation] = Field(default_factory=list)
    # class name -> operation name -> None (written false: skip it for that class) or changes
    class_overrides: dict[str, dict[str, OperationChange | None]] = Field(default_factory=dict)
    preview: int = Field(8, ge=0, description="originals shown in reports/augment_preview.png")
    shard_size: int = Field(4096, ge=1, description="images per shard file")
    workers: int = Field(0, ge=0, description="worker processes; 0 means one per core")
    # Samples by their source image's content, operations and seed: reused when they recur.
    cache: CacheParams = CacheParams()

    @field_validator("class_overrides", mode="before")
    @classmethod
    def _false_or_changes(cls, overrides: Any) -> Any:
        # Checked here so the message says what to write, not which union member failed.
        if not isinstance(overrides, dict):
            return overrides
        result = {}
        for label, changes in overrides.items():
            if not isinstance(changes, dict):
                raise ValueError(f"{label}: give a mapping of operation name to false or changes")
            for name, change in changes.items():
                if change is not False and not isinstance(change, dict):
                    raise ValueError(
                        f"{label}.{name}: write false to skip {name} for {label}, or a mapping "
                        f"of what changes (probability and/or arguments), not {change!r}"
                    )
            result[label] = {n: None if c is False else c for n, c in changes.items()}
        return class_names_as_text(result)

    @model_validator(mode="after")
    def _one_amount(self) -> AugmentParams:
        if self.per_image and self.per_class:
            raise ValueError(
                "set either per_image (samples from each training image) or per_class (a "
                f"target count per class), not both (got per_image={self.per_image}, "
                f"per_class={self.per_class}); set the other to 0"
            )
        names = [op.name for op in self.operations]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(
                f"operations lists {', '.join(repeated)} more than once; give each operation "
                "once (class_overrides refer to operations by name)"
            )
        return self


class EarlyStopping(Section):
    patience: int = Field(0, ge=0, description="epochs without improvement; 0 turns it off")
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"


def _known_layers(model: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    from imgpipe.layers import LayerListError, resolve

    try:
        resolve(model)
    except LayerListError as err:
        raise ValueError(str(err)) from None
    return model


def _known_augmentation(augmentation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from imgpipe.layers import LayerListError, check_augmentation

    try:
        check_augmentation(augmentation)
    except LayerListError as err:
        raise ValueError(str(err)) from None
    return augmentation


# A network and its training-only Keras augmentation, as `train` and `audit` both take them.
ModelChoice = Annotated[str | list[dict[str, Any]], AfterValidator(_known_layers)]
AugmentationLayers = Annotated[list[dict[str, Any]], AfterValidator(_known_augmentation)]
DEFAULT_MODEL = "three_conv"


class FineTune(Section):
    """Two phases for a pretrained network (a backbone with weights, or a warm start)."""

    frozen_epochs: int = Field(
        0, ge=0, description="first epochs with the pretrained layers frozen; 0: no frozen phase"
    )
    unfreeze: Literal["all"] | Annotated[int, Field(ge=1)] = Field(
        "all", description="after the frozen phase: all pretrained layers, or the last N"
    )
    lr_factor: float = Field(
        0.1, gt=0, le=1, description="the lr after the frozen phase is train.lr times this"
    )


class TrainParams(Section):
    model: ModelChoice = Field(
        DEFAULT_MODEL, description="a preset name or a layer list (see imgpipe/layers.py)"
    )
    lr: float = Field(0.001, gt=0, le=10)
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(64, ge=1)
    augmentation: AugmentationLayers = Field(
        default_factory=list, description="Keras random layers applied in training only"
    )
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    schedule: Literal["constant", "cosine", "reduce_on_plateau"] = "constant"
    plateau_factor: float = Field(0.5, gt=0, lt=1, description="reduce_on_plateau: lr factor")
    plateau_patience: int = Field(2, ge=1, description="reduce_on_plateau: epochs to wait")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: Literal["none", "balanced"] | dict[str, float] = "none"
    early_stopping: EarlyStopping = EarlyStopping()
    mixed_precision: bool = False
    tensorboard: bool = False
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    warm_start: str | None = Field(
        None,
        description="a model.keras this pipeline trained: its matching layers start this run",
    )
    fine_tune: FineTune = FineTune()

    @field_validator("class_weights", mode="before")
    @classmethod
    def _class_names_as_text(cls, weights: Any) -> Any:
        return class_names_as_text(weights)

    @field_validator("class_weights")
    @classmethod
    def _positive_weights(cls, weights: str | dict[str, float]) -> str | dict[str, float]:
        if isinstance(weights, dict) and any(w <= 0 for w in weights.values()):
            raise ValueError("every class weight must be above 0")
        return weights


class EvaluateParams(Section):
    batch_size: int = Field(256, ge=1, le=65536, description="test images per model call")
    top_k: int | None = Field(
        None,
        ge=1,
        le=100,
        description="k of top-k accuracy and of the labels kept per prediction; null: 3, or "
        "one less than the number of classes when that is smaller",
    )

    def k_for(self, classes: int) -> int:
        """The k to use with this many classes: top_k as set, or the default above."""
        return self.top_k if self.top_k is not None else max(1, min(3, classes - 1))

    gallery_per_class: int = Field(
        4, ge=0, le=20, description="most confident mistakes shown for each true class"
    )
    positive_class: str | None = Field(
        None,
        description="two-class problems: the class ROC and PR curves score; default the second",
    )

    @field_validator("positive_class", mode="before")
    @classmethod
    def _class_name_as_text(cls, name: Any) -> Any:
        return class_names_as_text(name)


ExportFormat = Literal[FORMATS]  # type: ignore[valid-type]
TfliteVariant = Literal[TFLITE_VARIANTS]  # type: ignore[valid-type]


class ExportParams(Section):
    formats: list[ExportFormat] = Field(
        default_factory=lambda: list(FORMATS), min_length=1, description="formats to write"
    )
    tflite: list[TfliteVariant] = Field(
        default_factory=lambda: list(TFLITE_VARIANTS),
        description="TFLite weights: float32 as trained, float16, int8 (dynamic range)",
    )
    max_difference: float = Field(
        1e-4,
        gt=0,
        le=1,
        description="float exports (SavedModel, ONNX, TFLite float32): the largest absolute "
        "difference from the Keras model's probability allowed on any test image and class",
    )
    min_agreement: float = Field(
        0.99,
        ge=0,
        le=1,
        description="quantized exports (TFLite float16, int8): the smallest share of test "
        "images whose top-1 class must equal the Keras model's",
    )
    batch_size: int = Field(256, ge=1, le=65536, description="test images per model call")
    timing_runs: int = Field(5, ge=1, le=100, description="latency: the median of this many")
    timing_batch: int = Field(32, ge=1, le=4096, description="images in the batch timed")

    @model_validator(mode="after")
    def _each_once(self) -> ExportParams:
        for key in ("formats", "tflite"):
            values = getattr(self, key)
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"{key} lists {', '.join(repeated)} more than once")
        if "tflite" in self.formats and not self.tflite:
            raise ValueError(
                "formats has tflite but tflite lists no variant; give at least one of "
                + ", ".join(TFLITE_VARIANTS)
                + " or drop tflite from formats"
            )
        return self


class AuditParams(Section):
    """Label-issue audit: k models, each trained without one fold, score the images left out."""

    folds: int = Field(
        4, ge=2, le=20, description="train+val is cut into this many group-keeping folds"
    )
    model: ModelChoice = Field(
        DEFAULT_MODEL, description="the network of each fold, as train.model takes it"
    )
    lr: float = Field(0.001, gt=0, le=10)
    epochs: int = Field(8, ge=1, description="epochs of each fold's model")
    batch_size: int = Field(64, ge=1)
    augmentation: AugmentationLayers = Field(
        default_factory=list, description="Keras random layers, as in train.augmentation"
    )
    filter_by: Literal[
        "prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given"
    ] = Field("prune_by_noise_rate", description="cleanlab's rule for which images are flagged")
    rank_by: Literal["self_confidence", "normalized_margin", "confidence_weighted_entropy"] = Field(
        "self_confidence", description="cleanlab's label-quality score: low = suspect"
    )
    gallery: int = Field(30, ge=0, le=200, description="top suspects shown in the picture")


class CheckParams(Section):
    """What ``repro-check`` demands of a rerun of the pipeline."""

    exact_stages: list[str] = Field(
        default_factory=lambda: ["download", "prepare", "split", "augment"],
        description="stages whose outputs must hash exactly as dvc.lock records",
    )
    metric_tolerance: float = Field(0.02, ge=0, description="largest absolute metric change")


class Params(Section):
    base: BaseParams = BaseParams()
    download: DownloadParams = SOURCES[DEFAULT_SOURCE].Params()
    prepare: PrepareParams = PrepareParams()
    split: SplitParams = SplitParams()
    augment: AugmentParams = AugmentParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()
    audit: AuditParams = AuditParams()
    check: CheckParams = CheckParams()

    @field_validator("download", mode="before")
    @classmethod
    def _default_source(cls, download: Any) -> Any:
        # `download:` without `source` means the default source, as no `download:` does.
        if isinstance(download, dict) and "source" not in download:
            return {"source": DEFAULT_SOURCE, **download}
        return download


def _download_source(loc: tuple[Any, ...]) -> str | None:
    """The source a ``download`` error is about: pydantic puts the union's tag second."""
    if len(loc) > 1 and loc[0] == "download" and loc[1] in SOURCES:
        return loc[1]
    return None


def _source_keys(model: type[BaseModel]) -> list[str]:
    """The keys a source reads: its own first, then those it shares with other sources."""
    shared = {key for base in model.__mro__[1:] for key in getattr(base, "model_fields", {})}
    keys = [key for key in model.model_fields if key != "source"]
    return [k for k in keys if k not in shared] + [k for k in keys if k in shared]


def _describe_source_keys(error: dict[str, Any], tag: str) -> str:
    """Which keys the chosen source reads, or what a missing one is for."""
    if len(error["loc"]) != 3:
        return ""
    model = SOURCES[tag].Params
    if error["type"] == "extra_forbidden":
        return f"source {tag!r} reads: " + (", ".join(_source_keys(model)) or "no other keys")
    if error["type"] == "missing":
        description = model.model_fields[error["loc"][2]].description
        return f"source {tag!r} needs it" + (f": {description}" if description else "")
    return ""


def _describe_allowed(error: dict[str, Any]) -> str:
    """What the user may write instead, for the kinds of mistakes people actually make."""
    tag = _download_source(error["loc"])
    if tag:
        return _describe_source_keys(error, tag)
    if error["type"] == "extra_forbidden":
        model = Params
        for part in error["loc"][:-1]:
            field = model.model_fields.get(str(part)) if isinstance(part, str) else None
            annotation = field.annotation if field else None
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return ""
            model = annotation
        return "allowed keys: " + ", ".join(model.model_fields)
    return ""


def _describe_problem(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "missing"
    if error["type"] == "union_tag_invalid":
        ctx = error["ctx"]
        return f"unknown {ctx['discriminator'].strip(chr(39))} {ctx['tag']!r}; one of: " + (
            ctx["expected_tags"].replace("'", "")
        )
    # pydantic prefixes the text of a ValueError raised by a validator; the text is ours.
    message = error["msg"].removeprefix("Value error, ")
    if isinstance(error.get("input"), dict):
        return message  # a whole section: the key already says which
    shown = repr(error.get("input"))
    shown = shown if len(shown) <= 120 else shown[:117] + "..."  # long layer lists
    return f"{message} (got {shown})"


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source} has {err.error_count()} problem(s):"]
    for error in err.errors():
        loc = error["loc"]
        if _download_source(loc):
            loc = (loc[0], *loc[2:])  # the union's tag repeats download.source
        elif error["type"] == "union_tag_invalid":
            loc = (*loc, error["ctx"]["discriminator"].strip("'"))
        key = ".".join(str(part) for part in loc)
        allowed = _describe_allowed(error)
        lines.append(f"  {key}: {_describe_problem(error)}" + (f"; {allowed}" if allowed else ""))
    return "\n".join(lines)


def parse_params(raw: dict[str, Any] | None, source: str = "params.yaml") -> Params:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source} must hold a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(format_validation_error(err, source)) from None


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    path = Path(os.fspath(path))
    try:
        raw = bounded_yaml.load(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise ParamsError(f"{path} not found: run stages from the project's top folder") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from None
    except UnicodeDecodeError as err:
        raise ParamsError(
            f"{path} is not UTF-8 text (byte {err.start}); save it as UTF-8"
        ) from None
    return parse_params(raw, str(path))
