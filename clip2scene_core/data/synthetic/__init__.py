"""The synthetic world: procedural streets, ray-cast sensors and a simulated 2D teacher.

``scene`` builds a street from analytic primitives, ``render`` ray-casts the LiDAR and cameras against
them, ``teacher`` simulates MaskCLIP-like pixel labels and features with documented errors, and
``dataset`` turns it all into ``Frame`` sequences (generated on demand or stored by ``clip2scene synth``).
The dataset's public names are re-exported here.
"""
from .dataset import (
    DEFAULT_FRAMES_PER_SCENE, DEFAULT_NUM_SCENES, FORMAT, META_FILE, SyntheticConfig, SyntheticDataset, SyntheticWorld,
    write_synthetic_dataset,
)

__all__ = [
    "DEFAULT_FRAMES_PER_SCENE", "DEFAULT_NUM_SCENES", "FORMAT", "META_FILE", "SyntheticConfig", "SyntheticDataset",
    "SyntheticWorld", "write_synthetic_dataset",
]
