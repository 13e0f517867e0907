"""Training of the tumour-evidence network on labelled brain volumes (see docs/classifier.md).

Samples: axial slices of every contrast (T1, T1c, T2, FLAIR) and of fused pairs (the
bundled 3D fusion model's output) of the cases with a tumour segmentation, prepared as
``classify_volume`` prepares them; CarveMix copies (a segmented tumour pasted with its mask
into a tumour-free slice of the same kind of image); and tumour-free JPEG slices of the
4-class set as extra negatives. A case without a segmentation takes part with the pseudo mask
of its FLAIR (``tumour_pseudo_labels``), a ring around it left unlabelled. Loss: per-pixel
binary cross-entropy plus soft Dice over the pixels of known label.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from ..clinical.volumes import brain_mask
from ..networks.tumour_net import TumourSegNet, slice_logits
from .classifier_augment import augment
from .classifier_datasets import list_class_folders, load_images
from .tumour_labels import (SEGMENTATION_NAME, LabelledSlices, flair_lesion_mask, labelled_slices,
                            read_array, to_tensor, unknown_ring)

CONTRASTS = ("t1", "t1c", "t2", "flair")
FUSED_PAIRS = (("t2", "flair"), ("t1c", "flair"), ("t1", "t2"))
FUSED_CACHE = Path("/tmp/clinicalfmamba-fused-cases")
# Slices with less brain than this share of the largest slice's are not sampled.
MIN_TRAIN_BRAIN = 0.05


def fused_volume(case: Path, a: str, b: str, cache: Path = FUSED_CACHE) -> sitk.Image:
    """``a`` and ``b`` of a case fused by the bundled 3D model (cached on disk)."""
    from ..fusion.volumes import fuse_volumes, load_volume_model

    path = cache / f"{case.name}_{a}_{b}.nii.gz"
    if not path.exists():
        image_a = sitk.ReadImage(str(case / f"{a}.nii.gz"))
        image_b = sitk.ReadImage(str(case / f"{b}.nii.gz"))
        fused = fuse_volumes(load_volume_model("3d", "cpu"), sitk.GetArrayFromImage(image_a),
                             sitk.GetArrayFromImage(image_b)).luma
        out = sitk.GetImageFromArray(fused.astype(np.float32))
        out.CopyInformation(image_a)
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial.nii.gz")
        sitk.WriteImage(out, str(partial), useCompression=True)
        partial.replace(path)
    return sitk.ReadImage(str(path))


def case_images(case: Path) -> dict[str, sitk.Image]:
    """Every contrast of a case and its fused pairs, by name ("flair", "t2+flair", ...)."""
    images = {c: sitk.ReadImage(str(case / f"{c}.nii.gz")) for c in CONTRASTS}
    images.update({f"{a}+{b}": fused_volume(case, a, b) for a, b in FUSED_PAIRS})
    return images


def case_slices(case: Path, size: int) -> list[LabelledSlices]:
    """Labelled slices of every image of a case: masks from its tumour segmentation or,
    without one, the pseudo mask of its FLAIR (``tumour_pseudo_labels``)."""
    if (case / SEGMENTATION_NAME).exists():
        segmentation, unknown = read_array(case / SEGMENTATION_NAME) > 0, None
    else:
        flair = read_array(case / "flair.nii.gz")
        segmentation = flair_lesion_mask(flair, brain_mask(flair))
        unknown = unknown_ring(segmentation)
    return [labelled_slices(f"{case.name}/{kind}", sitk.GetArrayFromImage(image),
                            segmentation, size, image.GetDirection(), unknown)
            for kind, image in case_images(case).items()]


class SlicePool:
    """Training slices of labelled volumes, grouped by kind of image for CarveMix."""

    def __init__(self, volumes: list[LabelledSlices]) -> None:
        images, masks, known, kinds = [], [], [], []
        for volume in volumes:
            keep = volume.brain_area >= MIN_TRAIN_BRAIN * volume.brain_area.max()
            images.append(volume.images[keep])
            masks.append(volume.masks[keep])
            known.append(volume.known[keep])
            kinds += [volume.name.split("/")[-1]] * int(keep.sum())
        self.images = to_tensor(np.concatenate(images))
        self.masks = to_tensor(np.concatenate(masks))
        self.known = to_tensor(np.concatenate(known))
        self.kinds = np.array(kinds)
        self.tumour = self.masks.flatten(1).amax(1) > 0

    def sample(self, n: int, generator: torch.Generator, carvemix: float,
               synthetic: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images, masks and known-label maps: half tumour slices, half others; a
        ``carvemix`` share of the others gets a pasted tumour of a slice of the same kind, a
        ``synthetic`` share a synthetic lesion (both labelled where pasted)."""
        positives = torch.nonzero(self.tumour).flatten()
        negatives = torch.nonzero(~self.tumour).flatten()
        def draw(pool: torch.Tensor, count: int) -> torch.Tensor:
            return pool[torch.randint(len(pool), (count,), generator=generator)]

        pick = torch.cat([draw(positives, n // 2), draw(negatives, n - n // 2)])
        images, masks = self.images[pick].clone(), self.masks[pick].clone()
        known = self.known[pick].clone()
        for row in range(n // 2, n):
            draw = torch.rand(1, generator=generator).item()
            if draw >= carvemix + synthetic:
                continue
            if draw >= carvemix:
                images[row], masks[row] = synthetic_lesion(images[row], generator)
                known[row] = torch.maximum(known[row], masks[row])
                continue
            same = positives[torch.from_numpy(self.kinds[positives.numpy()]
                                              == self.kinds[int(pick[row])])]
            if len(same) == 0:
                continue
            source = int(same[torch.randint(len(same), (1,), generator=generator)])
            images[row], masks[row] = carve_mix(images[row], self.images[source],
                                                self.masks[source], generator)
            known[row] = torch.maximum(known[row], masks[row])
        return images, masks, known


def carve_mix(target: torch.Tensor, source: torch.Tensor, source_mask: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste the segmented tumour of ``source`` (randomly mirrored) into ``target``'s brain."""
    if torch.rand(1, generator=generator).item() < 0.5:
        source, source_mask = source.flip(-1), source_mask.flip(-1)
    mask = source_mask * (target > 0).float()
    soft = F.avg_pool2d(mask[None], 3, 1, 1)[0]  # a one-pixel soft edge
    return target * (1 - soft) + source * soft, mask


def smooth_noise(shape: tuple[int, int], cells: int, generator: torch.Generator) -> torch.Tensor:
    """Low-frequency noise in [-1, 1]: a coarse random grid upsampled bicubically."""
    coarse = torch.rand(1, 1, cells, cells, generator=generator) * 2 - 1
    return F.interpolate(coarse, size=shape, mode="bicubic", align_corners=False)[0, 0]


def synthetic_lesion(image: torch.Tensor, generator: torch.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """A random focal lesion in a (1, S, S) brain slice: an irregular core, brighter or
    darker than the brain, inside a brighter oedema-like halo that is part of the label
    (as the whole-tumour segmentations are). Teaches what a tumour does to a slice (a focal,
    one-sided change of intensity) beyond the few real tumours there are to copy."""
    size = image.shape[-1]
    brain = image[0] > 0
    inner = -F.max_pool2d(-brain.float()[None, None], 9, 1, 4)[0, 0] > 0  # away from the edge
    candidates = torch.nonzero(inner)
    if len(candidates) == 0:
        return image, torch.zeros_like(image)

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * torch.rand(1, generator=generator).item()

    cy, cx = candidates[torch.randint(len(candidates), (1,), generator=generator)][0].tolist()
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    angle = uniform(0, math.pi)
    ry, rx = uniform(0.025, 0.12) * size, uniform(0.025, 0.12) * size
    u = ((ys - cy) * math.cos(angle) + (xs - cx) * math.sin(angle)) / ry
    v = (-(ys - cy) * math.sin(angle) + (xs - cx) * math.cos(angle)) / rx
    radius = (u ** 2 + v ** 2).sqrt() * (1 + 0.3 * smooth_noise((size, size), 6, generator))
    halo_scale = uniform(1.0, 2.5)
    core = torch.sigmoid((1 - radius) * 8)
    halo = torch.sigmoid((halo_scale - radius) * 6) if halo_scale > 1.2 else torch.zeros_like(core)
    darker = torch.rand(1, generator=generator).item() >= 0.7  # most tumours are brighter
    brightness = uniform(0.15, 0.6) * (-1 if darker else 1)
    texture = 1 + 0.15 * smooth_noise((size, size), 16, generator)
    halo_gain = uniform(0.1, 0.4)
    lesioned = image[0] + (halo * halo_gain + core * (brightness - halo * halo_gain)) * texture
    lesioned = torch.where(brain, lesioned.clamp(0.02, 1), image[0])
    mask = ((torch.maximum(core, halo) > 0.5) & brain).float()
    return lesioned[None], mask[None]


def augment_labelled(images: torch.Tensor, masks: torch.Tensor, known: torch.Tensor,
                     generator: torch.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Geometry (flip, rotation, scale, shift) on images, masks and known-label maps;
    intensity on images."""
    n = images.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    angle = uniform(-12, 12) * math.pi / 180
    scale = uniform(0.9, 1.1)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, uniform(-0.04, 0.04)], 1),
                         torch.stack([sin * flip, cos, uniform(-0.04, 0.04)], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", align_corners=False)
    masks = (F.grid_sample(masks, grid, mode="bilinear", align_corners=False) >= 0.5).float()
    known = (F.grid_sample(known, grid, mode="bilinear", align_corners=False,
                           padding_mode="border") >= 0.5).float()
    brain = images > 0
    gamma = torch.exp(uniform(math.log(0.7), math.log(1.4))).view(n, 1, 1, 1)
    images = images.clamp_min(0) ** gamma
    images = images * uniform(0.85, 1.15).view(n, 1, 1, 1)
    noise = torch.randn(images.shape, generator=generator) * uniform(0, 0.03).view(n, 1, 1, 1)
    return ((images + noise) * brain).clamp(0, 1), masks, torch.maximum(known, masks)


def jpeg_negatives(tumor_mri_training: Path, size: int) -> torch.Tensor:
    """Prepared tumour-free JPEGs of the 4-class set (no pixel is tumour)."""
    paths, labels, classes = list_class_folders(tumor_mri_training)
    keep = [p for p, label in zip(paths, labels) if classes[label] == "notumor"]
    return to_tensor(load_images(keep, size).astype(np.float32) / 255)


def seg_loss(logits: torch.Tensor, masks: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice over the batch's pixels of known label."""
    bce = F.binary_cross_entropy_with_logits(logits, masks, weight=known, reduction="sum")
    probs = torch.sigmoid(logits) * known
    dice = 1 - (2 * (probs * masks).sum() + 1) / (probs.sum() + masks.sum() + 1)
    return bce / known.sum().clamp_min(1) + dice


def train_seg(pool: SlicePool, negatives: torch.Tensor, steps: int, batch_size: int = 24,
              lr: float = 2e-3, carvemix: float = 0.3, synthetic: float = 0.4, seed: int = 0,
              log: Callable[[str], None] = print) -> TumourSegNet:
    """Train a TumourSegNet from scratch; a third of each batch is JPEG negatives."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = TumourSegNet().to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=steps,
                                                   pct_start=0.1)
    n_jpeg = batch_size // 3
    start, running = time.time(), 0.0
    for step in range(steps):
        images, masks, known = pool.sample(batch_size - n_jpeg, generator, carvemix, synthetic)
        images, masks, known = augment_labelled(images, masks, known, generator)
        jpegs = augment(negatives[torch.randint(len(negatives), (n_jpeg,), generator=generator)],
                        generator)
        images = torch.cat([images, jpegs])
        masks = torch.cat([masks, torch.zeros_like(jpegs)])
        known = torch.cat([known, torch.ones_like(jpegs)])
        net.train()
        # bf16 autocast and channels-last convolutions: about 2x faster on CPUs with AVX512-BF16.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(images.contiguous(memory_format=torch.channels_last))
        loss = seg_loss(logits.float(), masks, known)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            log(f"step {step + 1}/{steps} loss {running:.4f} ({time.time() - start:.0f} s)")
    return net.eval()


@torch.no_grad()
def predict_slices(net: TumourSegNet, images: np.ndarray, batch_size: int = 32
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Slice logits (Z,) and pixel probabilities (Z, S, S) of prepared slices."""
    logits, maps = [], []
    for start in range(0, len(images), batch_size):
        pixel = net(to_tensor(images[start:start + batch_size]))
        logits.append(slice_logits(pixel))
        maps.append(torch.sigmoid(pixel[:, 0]))
    return torch.cat(logits).numpy(), torch.cat(maps).numpy()


def save_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
