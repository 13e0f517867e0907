"""The classification record of one image or volume file: the JSON-ready result shared by
``classify``, ``fuse --classify`` and the worker, and where its heatmap is written."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .classifier import ImageResult
from .volume_verdict import VolumeResult


def result_record(result: ImageResult | VolumeResult, slices: bool = False) -> dict:
    """The JSON-ready verdict shared by the CLI, fusion reports and the Slicer module."""
    record = {"in_scope": result.in_scope, "reason": result.reason,
              "prediction": result.prediction,
              "probabilities": ({name: round(float(p), 6) for name, p in
                                 zip(result.classes, result.probabilities)}
                                if result.in_scope else None)}
    if isinstance(result, VolumeResult):
        record.update({"tumour_probability": (None if result.tumour_probability is None
                                              else round(result.tumour_probability, 6)),
                       "tumour_type": result.tumour_type,
                       "heatmap_class": result.heatmap_class,
                       "slices": int(len(result.slice_probabilities)),
                       "eligible_slices": int(result.eligible.sum())})
        if slices and result.in_scope:
            record["slice_probabilities"] = [
                {name: round(float(p), 6) for name, p in zip(result.classes, row)}
                for row in result.slice_probabilities]
    return record


def free_path(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/stem+suffix``, or ``stem_2``, ``stem_3``, ... when that file exists: a heatmap
    never overwrites a file."""
    target, number = folder / f"{stem}{suffix}", 2
    while target.exists():
        target, number = folder / f"{stem}_{number}{suffix}", number + 1
    return target


def heatmap_stems(files: list[Path]) -> dict[Path, str]:
    """Heatmap name stem per input: its file name without extension, prefixed by its
    folder's name where several inputs share a file name (the case/flair.nii.gz layout)."""
    stems = {path: sibling_name(path, "") for path in files}
    shared = Counter(stems.values())
    return {path: f"{path.parent.name}_{stem}" if shared[stem] > 1 else stem
            for path, stem in stems.items()}


def classification_record(model, path: Path, heatmap_dir: Path | None = None,
                          batch_size: int = 32, slices: bool = False,
                          heatmap_stem: str | None = None) -> dict:
    """Prediction and class probabilities of one image or volume file, as a JSON-ready dict;
    with ``heatmap_dir``, its Grad-CAM heatmap is written there (PNG or NIfTI) and named:
    ``heatmap_stem`` (default: the input's name) + _heatmap, never over an existing file."""
    stem = heatmap_stem or sibling_name(path, "")
    from .classifier import classify_image, gradcam
    from .heatmaps import save_heatmap_png, save_heatmap_volume
    from .images import is_volume_file, read_image
    from .volume_verdict import classify_volume
    from .volumes import read_volume

    if is_volume_file(path):
        volume, direction, spacing = read_volume(path)
        result = classify_volume(model, volume, batch_size=batch_size, direction=direction,
                                     spacing=spacing)
        record = {"input": str(path), "kind": "volume", **result_record(result, slices)}
        if heatmap_dir and result.heatmap is not None:
            record["heatmap"] = str(save_heatmap_volume(
                result.heatmap, path, free_path(heatmap_dir, stem, "_heatmap.nii.gz")))
        return record
    image = read_image(path, grey=False)
    result = classify_image(model, image)
    record = {"input": str(path), "kind": "image", **result_record(result)}
    if heatmap_dir and result.in_scope:
        target = free_path(heatmap_dir, stem, "_heatmap.png")
        save_heatmap_png(image, gradcam(model, image), target)
        record["heatmap"] = str(target)
    return record


def sibling_name(path: Path, suffix: str) -> str:
    """File name of ``path`` with its extension (.nii.gz counts as one) replaced by ``suffix``."""
    name = path.name
    for ending in (".nii.gz", *(path.suffixes[-1:] or [""])):
        if name.lower().endswith(ending.lower()):
            return name[: len(name) - len(ending)] + suffix
    return name + suffix
