"""Two-phase fine-tuning: first the new layers learn on a frozen pretrained part, then (some
of) the pretrained part learns too, at a lower learning rate.

The pretrained part is the backbone network when it has weights, else the layers a warm start
copied (all but the classifier, when even the classifier was copied). While it is frozen its
batch-norm layers run in inference mode (Keras does that for a non-trainable layer), so their
ImageNet statistics are not overwritten by a few batches of new data; a backbone with weights
is also called with ``training=False``, so they stay that way after unfreezing, as Keras'
transfer-learning guide advises.
"""

from __future__ import annotations

from dataclasses import dataclass

from imgpipe.errors import StageError
from imgpipe.params import FineTune

FROZEN, UNFROZEN = 0, 1  # the phase numbers dvclive logs as the `phase` metric


@dataclass(frozen=True)
class Phase:
    number: int  # FROZEN or UNFROZEN; a single-phase run is UNFROZEN throughout
    start: int  # first epoch (zero-based)
    end: int  # one past the last epoch


def phases(fine_tune: FineTune, epochs: int) -> list[Phase]:
    frozen = min(fine_tune.frozen_epochs, epochs)
    if not frozen:
        return [Phase(UNFROZEN, 0, epochs)]
    plan = [Phase(FROZEN, 0, frozen)]
    if frozen < epochs:
        plan.append(Phase(UNFROZEN, frozen, epochs))
    return plan


def pretrained_layers(model, backbone_weights: bool, copied: list[str] | None) -> list:
    """The layers to freeze: a backbone with weights, or what a warm start copied."""
    import keras

    networks = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if networks and (backbone_weights or copied):
        return networks
    if not copied:
        return []
    weighted = [layer for layer in model.layers if layer.weights]
    chosen = [layer for layer in weighted if layer.name in set(copied)]
    if len(chosen) == len(weighted):
        chosen = chosen[:-1]  # every layer matched: the classifier still learns while frozen
    return chosen


def check_pretrained(layers: list, fine_tune: FineTune) -> None:
    if fine_tune.frozen_epochs and not layers:
        raise StageError(
            "train.fine_tune.frozen_epochs needs a pretrained part to freeze: a backbone layer "
            "with weights (imagenet or a file), or train.warm_start; set frozen_epochs: 0 to "
            "train every layer from the start"
        )


def freeze(layers: list) -> None:
    for layer in layers:
        layer.trainable = False


def unfreeze(layers: list, how: str | int) -> None:
    """All of the pretrained part, or its last ``how`` layers (inside a backbone network)."""
    if how == "all":
        for layer in layers:
            layer.trainable = True
        return
    inner = [sub for layer in layers for sub in getattr(layer, "layers", [layer])]
    for layer in layers:
        layer.trainable = True
    for position, layer in enumerate(inner):
        layer.trainable = position >= len(inner) - how


def phase_marker(number: int):
    """A callback that adds the phase to each epoch's logs, so dvclive records it."""
    import keras

    class PhaseMarker(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["phase"] = float(number)

    return PhaseMarker()
