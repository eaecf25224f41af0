"""Seeded, deterministic TensorFlow: the same inputs and seed train the same weights.

Shared by every stage that trains (``train``, ``audit``), so a run repeats on the same machine.
"""

from __future__ import annotations

from imgpipe.quiet_tf import import_tensorflow


def make_deterministic(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and ask TensorFlow for deterministic kernels."""
    tf = import_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
