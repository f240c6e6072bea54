"""Dataset splits for training and evaluation: a configured dataset kind + a frame selection.

The ``data`` config section (shared by pretraining, fine-tuning and evaluation)::

    kind: synthetic | nuscenes | semantickitti | scannet
    root: dataset folder (synthetic: None = generated procedurally)
    options: loader keyword arguments for every split
    train: {options: {...}, frames: None | "start:stop:step" | [indices]}
    val:   {options: {...}, frames: ...}
    in_memory: load the selected frames once and keep them (pretraining then also keeps each
               frame's point-pixel pairs and grid cells, computed once)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

from tqdm import tqdm

from clip2scene_core.data import open_dataset
from clip2scene_core.frame import Frame

DEFAULT_DATA_CONFIG: dict[str, Any] = {
    "kind": "synthetic",
    "root": None,
    "options": {},
    "train": {"options": {}, "frames": None},
    "val": {"options": {}, "frames": None},
    "in_memory": False,
}


def select_frames(num_frames: int, selection: Union[None, str, Sequence[int]]) -> list[int]:
    """Dataset indices chosen by ``selection``: None = all, ``"start:stop:step"`` or explicit indices."""
    if selection is None:
        return list(range(num_frames))
    if isinstance(selection, str):
        parts = [int(p) if p.strip() else None for p in selection.split(":")]
        if not 1 <= len(parts) <= 3 or (len(parts) == 1 and parts[0] is None):
            raise ValueError(f"frame selection {selection!r} must look like 'start:stop:step'")
        chosen = list(range(num_frames))[slice(*parts)] if len(parts) > 1 else [parts[0]]
    else:
        chosen = [int(i) for i in selection]
    bad = [i for i in chosen if not 0 <= i < num_frames]
    if bad:
        raise ValueError(f"frame selection {selection!r} names frames {bad[:5]} outside 0..{num_frames - 1}")
    if not chosen:
        raise ValueError(f"frame selection {selection!r} selects no frame of {num_frames}")
    return chosen


class FrameSelection(Sequence[Frame]):
    """A lazy view of ``dataset[i] for i in indices`` (frames load on access)."""

    def __init__(self, dataset: Sequence[Frame], indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Frame:
        return self.dataset[self.indices[position]]


@dataclass
class Split:
    """One split of a dataset: ``frames`` (a lazy view or, with ``in_memory``, a list) of ``dataset``."""

    dataset: Sequence[Frame]
    frames: Sequence[Frame]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.dataset.class_names)


def open_split(data_config: Mapping[str, Any], split: str) -> Split:
    """Open the ``split`` ("train" / "val") of the configured dataset (``data`` config section)."""
    options = {**data_config["options"], **data_config[split]["options"]}
    if data_config["kind"] == "synthetic" and isinstance(options.get("config"), Mapping):
        from clip2scene_core.data.synthetic import SyntheticConfig

        options["config"] = SyntheticConfig.from_dict(dict(options["config"]), f"data.{split}.options.config")
    try:
        dataset = open_dataset(data_config["kind"], data_config["root"], **options)
    except TypeError as error:  # an option the loader does not take
        raise ValueError(f"data options {sorted(options)} do not fit the {data_config['kind']} loader: "
                         f"{error}") from error
    frames = FrameSelection(dataset, select_frames(len(dataset), data_config[split]["frames"]))
    if data_config["in_memory"]:
        frames = [frame for frame in tqdm(frames, desc=f"load {split}", unit="frame")]
    return Split(dataset, frames)
