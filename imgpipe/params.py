"""params.yaml parsed once into typed, validated objects.

Every section forbids unknown keys, so a typo stops the stage with a message naming the key
instead of silently falling back to a default. Numbers that arrive as strings (DVC writes
``-S train.lr=1e-4`` so that YAML reads a string) are coerced by pydantic's lax mode.
"""

from __future__ import annotations

import os
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

PARAMS_FILE = Path("params.yaml")


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or holds a value the pipeline cannot use."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseParams(Section):
    seed: int = Field(42, ge=0, description="seed shared by split, augment and train")


class DownloadParams(Section):
    source: Literal["digits", "folder"] = "digits"
    path: str | None = Field(None, description="folder source: a folder of class folders")

    @model_validator(mode="after")
    def _path_for_folder(self) -> DownloadParams:
        if self.source == "folder" and not self.path:
            raise ValueError("source 'folder' needs download.path: a folder of class folders")
        return self


class PrepareParams(Section):
    size: tuple[int, int] = Field((32, 32), description="width, height in pixels")
    color: Literal["grayscale", "rgb"] = "grayscale"
    resample: Literal["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"] = "lanczos"
    min_per_class: int = Field(1, ge=1)
    shard_size: int = Field(4096, ge=1, description="images per shard file")
    workers: int = Field(0, ge=0, description="worker processes; 0 means one per core")

    @field_validator("size")
    @classmethod
    def _positive_size(cls, size: tuple[int, int]) -> tuple[int, int]:
        if min(size) < 1 or max(size) > 4096:
            raise ValueError("width and height must be between 1 and 4096")
        return size


class SplitParams(Section):
    val: float = Field(0.15, gt=0, lt=1, description="fraction of samples for validation")
    test: float = Field(0.15, gt=0, lt=1, description="fraction of samples for testing")

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


class AugmentParams(Section):
    per_class: int = Field(0, ge=0, description="extra augmented samples made for each class")
    operations: list[AugmentOperation] = Field(default_factory=list)
    workers: int = Field(0, ge=0, description="worker processes; 0 means one per core")


class TrainParams(Section):
    model: str = "three_conv"
    lr: float = Field(0.001, gt=0, le=10)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    shuffle_buffer: int = Field(4096, ge=1)


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
            message = f"{error['msg']} (got {error.get('input')!r})"
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
