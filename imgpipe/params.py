"""params.yaml parsed once into typed, validated objects.

Every section forbids unknown keys, so a typo stops the stage with a message naming the key
instead of silently falling back to a default. Numbers that arrive as strings (DVC writes
``-S train.lr=1e-4`` so that YAML reads a string) are coerced by pydantic's lax mode.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from imgpipe.errors import ParamsError
from imgpipe.images import ColorMode, ColorValue, Fit, LumaChoice, Resample, Standard

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


CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"

# The keys each source reads (beyond `source` and the download limits); any other key set for
# a source is a mistake worth stopping on, since it would be silently ignored.
DOWNLOAD_KEYS = {
    "digits": set(),
    "folder": {"path", "label_pattern"},
    "archive": {"url", "path", "sha256", "label_pattern"},
    "cifar10": {"url", "sha256"},
    "kaggle": {"competition", "dataset", "file", "sha256", "label_pattern"},
    "crawl": {"classes", "engine", "max_per_class", "min_size"},
}
DOWNLOAD_NEEDS = {
    "folder": ("path",),  # a folder of class folders, or of files named by class
    "crawl": ("classes",),
}
DOWNLOAD_SOURCE_DEFAULTS = {"cifar10": {"url": CIFAR10_URL, "sha256": CIFAR10_SHA256}}
# Kaggle with neither a competition nor a dataset named: the dogs-vs-cats example.
KAGGLE_EXAMPLE = {
    "competition": "dogs-vs-cats",
    "file": "train.zip",
    "label_pattern": r"^(cat|dog)\.",
}


class DownloadParams(Section):
    source: Literal["digits", "folder", "archive", "cifar10", "kaggle", "crawl"] = "digits"
    path: str | None = Field(
        None, description="folder: a folder of images; archive: a local .zip/.tar/.tar.gz"
    )
    url: str | None = Field(None, description="archive, cifar10: where to download from")
    sha256: str | None = Field(None, description="expected sha256 of the downloaded file")
    label_pattern: str | None = Field(
        None, description="regular expression on file names; group 1 is the class"
    )
    competition: str | None = Field(None, description="kaggle: competition name")
    dataset: str | None = Field(None, description="kaggle: dataset as owner/name")
    file: str | None = Field(None, description="kaggle: one file of the competition or dataset")
    classes: dict[str, list[str]] | None = Field(
        None, description="crawl: class name -> search keywords"
    )
    engine: Literal["bing", "google"] = "bing"
    max_per_class: int = Field(100, ge=1, le=10_000)
    min_size: tuple[int, int] = Field((64, 64), description="crawl: smallest width, height kept")
    timeout: float = Field(60, gt=0, le=3600, description="seconds without data before a retry")
    retries: int = Field(5, ge=0, le=100)
    max_members: int = Field(1_000_000, ge=1, description="archives: most members accepted")
    max_total_gb: float = Field(64, gt=0, description="archives: most uncompressed bytes, in GB")

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("must be 64 hexadecimal digits, as printed by `sha256sum FILE`")
        return value.lower() if value else value

    @field_validator("label_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compiled = re.compile(value)
            except re.error as err:
                raise ValueError(f"not a valid regular expression: {err}") from None
            if compiled.groups > 1:
                raise ValueError("use at most one group (the class); make others (?:...)")
        return value

    @field_validator("classes")
    @classmethod
    def _keywords(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if value is not None:
            if len(value) < 2:
                raise ValueError("name at least two classes, each with its search keywords")
            for name, keywords in value.items():
                if not re.fullmatch(r"[\w][\w .-]*", name):
                    raise ValueError(f"class name {name!r} must be letters, digits, _ - . or space")
                if not keywords or not all(k.strip() for k in keywords):
                    raise ValueError(f"class {name!r} needs at least one non-empty keyword")
        return value

    @field_validator("min_size")
    @classmethod
    def _sane_size(cls, size: tuple[int, int]) -> tuple[int, int]:
        if min(size) < 1 or max(size) > 10_000:
            raise ValueError("width and height must be between 1 and 10000")
        return size

    @model_validator(mode="before")
    @classmethod
    def _source_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in DOWNLOAD_SOURCE_DEFAULTS.get(data.get("source"), {}).items():
                data = {**data, key: data.get(key) or value}
            if data.get("source") == "kaggle" and not (
                data.get("competition") or data.get("dataset")
            ):
                data = {**KAGGLE_EXAMPLE, **data}
        return data

    @model_validator(mode="after")
    def _keys_fit_the_source(self) -> DownloadParams:
        source = self.source
        allowed = DOWNLOAD_KEYS[source] | {"source", "timeout", "retries"}
        if source in ("archive", "cifar10", "kaggle"):
            allowed |= {"max_members", "max_total_gb"}
        stray = sorted(key for key in self.model_fields_set if key not in allowed)
        if stray:
            raise ValueError(
                f"{', '.join('download.' + k for k in stray)} not used by source {source!r}; "
                "it reads "
                f"{', '.join(sorted(DOWNLOAD_KEYS[source])) or 'no other keys'}"
            )
        for key in DOWNLOAD_NEEDS.get(source, ()):
            if not getattr(self, key):
                raise ValueError(f"source {source!r} needs download.{key}")
        if source == "archive":
            if bool(self.url) == bool(self.path):
                raise ValueError(
                    "source 'archive' needs exactly one of download.url, download.path"
                )
            if not self.sha256:
                raise ValueError(
                    "source 'archive' needs download.sha256, the archive's checksum "
                    "(`sha256sum FILE` prints it)"
                )
        if source == "kaggle":
            if bool(self.competition) == bool(self.dataset):
                raise ValueError(
                    "source 'kaggle' needs exactly one of download.competition (e.g. "
                    "dogs-vs-cats) and download.dataset (owner/name)"
                )
            if self.dataset and not re.fullmatch(r"[\w.-]+/[\w.-]+", self.dataset):
                raise ValueError("download.dataset must be owner/name, as in its Kaggle URL")
        return self


class PrepareParams(Section):
    size: tuple[int, int] = Field((32, 32), description="width, height in pixels")
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

    @field_validator("size", mode="before")
    @classmethod
    def _width_and_height(cls, size: Any) -> Any:
        # One number is the commonest mistake; say exactly what to write instead.
        if isinstance(size, int | float | str) and not isinstance(size, bool):
            raise ValueError(f"give width and height as a list, e.g. [{size}, {size}]")
        return size

    @field_validator("size")
    @classmethod
    def _positive_size(cls, size: tuple[int, int]) -> tuple[int, int]:
        if min(size) < 1 or max(size) > 4096:
            raise ValueError("width and height must be between 1 and 4096")
        return size

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


class TrainParams(Section):
    model: str | list[dict[str, Any]] = Field(
        "three_conv", description="a preset name or a layer list (see imgpipe/layers.py)"
    )
    lr: float = Field(0.001, gt=0, le=10)
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(64, ge=1)
    augmentation: list[dict[str, Any]] = Field(
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
    strategy: Literal["default", "mirrored"] = "default"

    @field_validator("model")
    @classmethod
    def _known_layers(cls, model: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        from imgpipe.layers import LayerListError, resolve

        try:
            resolve(model)
        except LayerListError as err:
            raise ValueError(str(err)) from None
        return model

    @field_validator("augmentation")
    @classmethod
    def _known_augmentation(cls, augmentation: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from imgpipe.layers import LayerListError, check_augmentation

        try:
            check_augmentation(augmentation)
        except LayerListError as err:
            raise ValueError(str(err)) from None
        return augmentation

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
    top_k: int = Field(
        3, ge=1, le=100, description="k of top-k accuracy and of the labels kept per prediction"
    )
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


class CheckParams(Section):
    """What ``repro-check`` demands of a rerun of the pipeline."""

    exact_stages: list[str] = Field(
        default_factory=lambda: ["download", "prepare", "split", "augment"],
        description="stages whose outputs must hash exactly as dvc.lock records",
    )
    metric_tolerance: float = Field(0.02, ge=0, description="largest absolute metric change")


class Params(Section):
    base: BaseParams = BaseParams()
    download: DownloadParams = DownloadParams()
    prepare: PrepareParams = PrepareParams()
    split: SplitParams = SplitParams()
    augment: AugmentParams = AugmentParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    check: CheckParams = CheckParams()


def _describe_allowed(error: dict[str, Any]) -> str:
    """What the user may write instead, for the kinds of mistakes people actually make."""
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


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source} has {err.error_count()} problem(s):"]
    for error in err.errors():
        key = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        else:
            shown = repr(error.get("input"))
            shown = shown if len(shown) <= 120 else shown[:117] + "..."  # long layer lists
            message = f"{error['msg']} (got {shown})"
        allowed = _describe_allowed(error)
        lines.append(f"  {key}: {message}" + (f"; {allowed}" if allowed else ""))
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
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path} not found: run stages from the project's top folder") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from None
    return parse_params(raw, str(path))
