"""Semantic segmentation metrics: confusion matrix, per-class IoU, mIoU, tables and plots, and the
mapping of an open-vocabulary class list onto a dataset's labels.

Labels follow the one convention of ``clip2scene_core/frame.py``: ground truth ``1..C`` with 0 = ignore
(not counted). Predictions ``1..C`` name classes; any other prediction (0, ``0xFFFF`` "unknown" under a
score threshold, ...) is counted as wrong, in an extra "unknown" column, so it lowers the IoU of the
true class. The Segmenter and the node give class *indices* into their current class list (0-based,
`clip2scene_core.segmenter.UNKNOWN_LABEL` = unknown, PCL's ``PointXYZL`` convention);
`dataset_label_table` + `to_dataset_labels` turn those into labels of a dataset by class name.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)


def _as_labels(name: str, values: Any) -> torch.Tensor:
    """Flat int64 tensor from a tensor or array of any integer dtype (uint16 included)."""
    if isinstance(values, torch.Tensor):
        tensor = values
    else:
        array = np.asarray(values)
        if array.dtype.kind not in "iub":
            raise ValueError(f"{name} must hold integer labels, got dtype {array.dtype}")
        tensor = torch.from_numpy(array.astype(np.int64, copy=False))
    if tensor.is_floating_point() or tensor.is_complex():
        raise ValueError(f"{name} must hold integer labels, got dtype {tensor.dtype}")
    return tensor.reshape(-1).to(torch.int64)


class ConfusionMatrix:
    """Accumulates ``counts[true - 1, predicted - 1]`` over any number of updates.

    ``counts`` is (C, C + 1) int64 on the CPU: rows are ground-truth classes, the first C columns
    predicted classes, the last column predictions outside ``1..C`` ("unknown").
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.counts = torch.zeros(self.num_classes, self.num_classes + 1, dtype=torch.int64)

    def update(self, pred: Any, target: Any) -> None:
        """Add one batch of predictions.

        Args:
            pred: (N,) predicted labels (tensor on any device, or array; any integer dtype).
            target: (N,) ground-truth labels in ``0..C`` (0 = ignore).
        Raises:
            ValueError: shapes differ, or a target lies outside ``0..C``.
        """
        pred = _as_labels("pred", pred)
        target = _as_labels("target", target).to(pred.device)
        if pred.shape != target.shape:
            raise ValueError(
                f"pred and target must have the same size, got {pred.numel()} and {target.numel()}"
            )
        if target.numel() and (int(target.min()) < 0 or int(target.max()) > self.num_classes):
            raise ValueError(
                f"target labels must lie in 0..{self.num_classes} (0 = ignore), found "
                f"{int(target.min())}..{int(target.max())}"
            )
        valid = target > 0
        pred, target = pred[valid], target[valid]
        columns = self.num_classes + 1
        column = torch.where((pred >= 1) & (pred <= self.num_classes), pred - 1, self.num_classes)
        flat = (target - 1) * columns + column
        counts = torch.bincount(flat, minlength=self.num_classes * columns)
        self.counts += counts.view(self.num_classes, columns).cpu()

    def merge(self, other: "ConfusionMatrix") -> None:
        """Add another matrix's counts (e.g. from another worker)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self.counts += other.counts

    @property
    def matrix(self) -> torch.Tensor:
        """(C, C) int64 class-to-class counts (unknown predictions left out)."""
        return self.counts[:, : self.num_classes]

    def _tp_fp_fn(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        true_positive = self.matrix.diagonal()
        false_positive = self.matrix.sum(dim=0) - true_positive
        false_negative = self.counts.sum(dim=1) - true_positive  # unknown predictions are misses
        return true_positive, false_positive, false_negative

    def iou(self) -> torch.Tensor:
        """(C,) float64 IoU = TP / (TP + FP + FN); NaN for a class absent from truth and prediction."""
        tp, fp, fn = self._tp_fp_fn()
        union = (tp + fp + fn).double()
        nan = torch.tensor(math.nan, dtype=torch.float64)
        return torch.where(union > 0, tp.double() / union.clamp(min=1), nan)

    def present(self) -> torch.Tensor:
        """(C,) bool: classes with at least one ground-truth point."""
        return self.counts.sum(dim=1) > 0

    def miou(self) -> float:
        """Mean IoU over the classes present in the ground truth (NaN if no point was counted)."""
        present = self.present()
        if not present.any():
            return math.nan
        return float(self.iou()[present].mean())

    def accuracy(self) -> float:
        """Overall point accuracy over counted points (NaN if none)."""
        total = int(self.counts.sum())
        return float(self.matrix.diagonal().sum()) / total if total else math.nan

    def _check_names(self, class_names: Sequence[str]) -> list[str]:
        names = list(class_names)
        if len(names) != self.num_classes:
            raise ValueError(f"expected {self.num_classes} class names, got {len(names)}")
        return names

    def format_table(self, class_names: Sequence[str]) -> str:
        """Per-class text table: IoU %, ground-truth points, predicted points, TP/FP/FN, then mIoU.

        Classes absent from the ground truth are marked with ``*`` and left out of the mIoU.
        """
        names = self._check_names(class_names)
        tp, fp, fn = (v.tolist() for v in self._tp_fp_fn())
        iou = self.iou().tolist()
        present = self.present().tolist()
        width = max([len(n) for n in names] + [len("class")]) + 1
        header = f"{'class':<{width}} {'IoU %':>7}" + "".join(
            f" {title:>10}" for title in ("points", "predicted", "TP", "FP", "FN")
        )
        lines = [header, "-" * len(header)]
        for c, name in enumerate(names):
            value = "-" if math.isnan(iou[c]) else f"{100 * iou[c]:.1f}"
            mark = "" if present[c] else "*"
            lines.append(
                f"{name + mark:<{width}} {value:>7} {tp[c] + fn[c]:>10} {tp[c] + fp[c]:>10} "
                f"{tp[c]:>10} {fp[c]:>10} {fn[c]:>10}"
            )
        lines.append("-" * len(header))
        lines.append(f"{'mIoU':<{width}} {_percent(self.miou()):>7}   ({sum(present)} classes present)")
        lines.append(f"{'accuracy':<{width}} {_percent(self.accuracy()):>7}")
        lines.append(f"{'unknown':<{width}} {int(self.counts[:, -1].sum()):>7} points predicted unknown")
        return "\n".join(lines)

    def format_confusions(self, class_names: Sequence[str], top: int = 3) -> str:
        """Per true class, the ``top`` most frequent predictions and their shares of its points,
        e.g. ``road (4120 points): road 68 %, sidewalk 29 %, terrain 2 %``."""
        names = self._check_names(class_names)
        lines = []
        for c, name in enumerate(names):
            row = self.counts[c].double()
            total = float(row.sum())
            if total == 0:
                continue
            shares, columns = torch.sort(row / total, descending=True)
            entries = [f"{(names + ['unknown'])[k]} {100 * share:.0f} %"
                       for share, k in zip(shares[:top].tolist(), columns[:top].tolist()) if share > 0]
            lines.append(f"{name} ({int(total)} points): " + ", ".join(entries))
        return "\n".join(lines)

    def to_dict(self, class_names: Sequence[str]) -> dict[str, Any]:
        """JSON-ready summary (NaN written as ``None``): mIoU, accuracy, per-class IoU and counts, matrix."""
        names = self._check_names(class_names)
        tp, fp, fn = (v.tolist() for v in self._tp_fp_fn())
        iou = self.iou().tolist()
        present = self.present().tolist()
        return {
            "miou": json_number(self.miou()),
            "accuracy": json_number(self.accuracy()),
            "per_class": {
                name: {
                    "iou": json_number(iou[c]),
                    "present": present[c],
                    "tp": tp[c], "fp": fp[c], "fn": fn[c],
                }
                for c, name in enumerate(names)
            },
            "unknown_predictions": int(self.counts[:, -1].sum()),
            "class_names": names,
            "confusion": self.counts.tolist(),  # rows truth, columns predicted + unknown
        }

    def save_png(self, path: str | Path, class_names: Sequence[str]) -> Path:
        """Row-normalised confusion heat map (rows: truth, columns: prediction + unknown) as a PNG."""
        names = self._check_names(class_names)
        counts = self.counts.double()
        rows = counts.sum(dim=1, keepdim=True)
        normalised = torch.where(rows > 0, counts / rows.clamp(min=1), torch.zeros_like(counts)).numpy()
        size = 2.0 + 0.45 * (self.num_classes + 1)
        figure, axes = _new_figure((size + 1.5, size))
        image = axes.imshow(normalised, cmap="viridis", vmin=0.0, vmax=1.0)
        figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of true class")
        axes.set_xticks(range(self.num_classes + 1), names + ["unknown"], rotation=60, ha="right")
        axes.set_yticks(range(self.num_classes), names)
        axes.set_xlabel("predicted")
        axes.set_ylabel("ground truth")
        axes.set_title(f"confusion (mIoU {_percent(self.miou())} %)")
        if self.num_classes <= 25:
            for row in range(self.num_classes):
                for col in range(self.num_classes + 1):
                    if normalised[row, col] >= 0.005:
                        colour = "black" if normalised[row, col] > 0.6 else "white"
                        axes.text(col, row, f"{100 * normalised[row, col]:.0f}", ha="center",
                                  va="center", fontsize=7, color=colour)
        return _save_figure(figure, path)

    def save_iou_bars_png(
        self,
        path: str | Path,
        class_names: Sequence[str],
        compare: Optional["ConfusionMatrix"] = None,
        run_names: Sequence[str] = ("before", "after"),
    ) -> Path:
        """Per-class IoU bars of this matrix, or of ``compare`` (first) and this one side by side."""
        names = self._check_names(class_names)
        runs = {run_names[0]: self} if compare is None else {run_names[0]: compare, run_names[1]: self}
        return save_iou_bars_png(path, names, {name: m.iou().numpy() for name, m in runs.items()},
                                 {name: m.miou() for name, m in runs.items()})


def save_iou_bars_png(
    path: str | Path,
    class_names: Sequence[str],
    ious: Mapping[str, Sequence[float]],
    mious: Optional[Mapping[str, float]] = None,
) -> Path:
    """Grouped bar chart of per-class IoU for one or more runs.

    Args:
        path: PNG file to write.
        class_names: C names, label order.
        ious: run name -> (C,) IoU in [0, 1] (NaN bars are left empty).
        mious: optional run name -> mIoU, shown in the legend.
    Returns:
        The path written.
    """
    names = list(class_names)
    if not ious:
        raise ValueError("ious must name at least one run")
    for run, values in ious.items():
        if len(values) != len(names):
            raise ValueError(f"run {run!r} has {len(values)} IoU values for {len(names)} classes")
    figure, axes = _new_figure((max(6.0, 0.55 * len(names) * max(1, len(ious)) + 2.0), 4.5))
    width = 0.8 / len(ious)
    positions = np.arange(len(names))
    for k, (run, values) in enumerate(ious.items()):
        label = run if mious is None or run not in mious else f"{run} (mIoU {_percent(mious[run])} %)"
        heights = 100.0 * np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
        axes.bar(positions + (k - (len(ious) - 1) / 2) * width, heights, width, label=label)
    axes.set_xticks(positions, names, rotation=60, ha="right")
    axes.set_ylabel("IoU %")
    axes.set_ylim(0, 100)
    axes.grid(axis="y", alpha=0.3)
    axes.legend()
    return _save_figure(figure, path)


def canonical_class_name(name: str) -> str:
    """Spelling-insensitive form of a class name: lower case, ``_``/``-`` as spaces, single spaces."""
    return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def dataset_label_table(predicted_names: Sequence[str], dataset_names: Sequence[str],
                        mapping: Optional[Mapping[str, str]] = None) -> np.ndarray:
    """(K,) int64: dataset label (1..C) of each predicted class index, 0 where a name is no dataset class.

    A predicted name goes through ``mapping`` (predicted name -> dataset class, e.g. ``automobile ->
    car``) when listed there, else it must name a dataset class itself. Names compare by
    :func:`canonical_class_name`. Raises ValueError when ``mapping`` names a class the dataset lacks.
    """
    dataset = {canonical_class_name(name): label for label, name in enumerate(dataset_names, start=1)}
    targets = {canonical_class_name(k): canonical_class_name(v) for k, v in (mapping or {}).items()}
    unknown = sorted(v for v in targets.values() if v not in dataset)
    if unknown:
        raise ValueError(f"class mapping targets {unknown} are not dataset classes {list(dataset_names)}")
    table = np.zeros(len(predicted_names), np.int64)
    for index, name in enumerate(predicted_names):
        key = canonical_class_name(name)
        table[index] = dataset.get(targets.get(key, key), 0)
    return table


def to_dataset_labels(labels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(N,) predicted class indices (uint16; `clip2scene_core.segmenter.UNKNOWN_LABEL` = unknown) ->
    (N,) int64 dataset labels (0 = none), through a `dataset_label_table`."""
    labels = np.asarray(labels).astype(np.int64)
    inside = labels < len(table)
    return np.where(inside, table[np.where(inside, labels, 0)], 0)


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"


def json_number(value: float) -> Optional[float]:
    """A metric for JSON: NaN (an undefined mIoU or IoU) becomes None, anything else a float."""
    return None if math.isnan(value) else float(value)


def _new_figure(size: tuple[float, float]):
    # A bare Figure with the Agg canvas: no pyplot, so no global backend state and no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _save_figure(figure, path: str | Path) -> Path:
    from clip2scene_core.visualize import save_figure

    path = save_figure(figure, path, dpi=120)
    logger.info("wrote %s", path)
    return path
