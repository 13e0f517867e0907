"""Time of the tumour classifier per slice: the bundled ensemble against the single network
bundled before it, side by side in one process; and a whole sample volume through
``classify_volume``.

    python scripts/benchmarks/benchmark_classifier.py [--reference-commit c8f1318] [--threads 2]
        [--repeats 5]

Both classifiers take the prepared axial slices of the bundled sample FLAIR volume
(Resources/sample/volume) through ``clinical.classifier.prepared_probabilities``, the forward pass that
``classify_volume`` and ``classify_image`` use (each image with its left-right mirror), in
interleaved repeats (the order alternates), so that a change in the machine's load hits both
alike. The reference defaults to the classifier bundled at commit c8f1318 (one network; taken
from git with its manifest entry). Then the bundled classifier, with its scope guard and
tumour-evidence network, classifies the whole sample volume (``classify_volume``, the path of
``clinicalfmamba classify`` and of the Slicer module's worker). Prints median seconds, the
ratio and the load average (os.getloadavg) before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
from benchmark_fusion2d import side_by_side_arguments, weights_at_commit

from ClinicalFMambaLib.clinical.classifier import (BUNDLED_NAME, load_classifier,
                                                   prepared_probabilities)
from ClinicalFMambaLib.clinical.volume_verdict import classify_volume
from ClinicalFMambaLib.clinical.volumes import prepare_volume
from ClinicalFMambaLib.evaluation.demo import SAMPLE_VOLUMES
from ClinicalFMambaLib.io.weights import WeightsError
from ClinicalFMambaLib.networks.fusion_net import parameter_count


def seconds_of(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    args = side_by_side_arguments(parser, "c8f1318", repeats=5)
    with tempfile.TemporaryDirectory() as folder:
        try:
            reference = weights_at_commit(args.reference_commit, Path(folder), BUNDLED_NAME)
            models = {"reference": load_classifier(reference, companions=False),
                      "bundled": load_classifier(companions=False)}
        except subprocess.CalledProcessError as error:
            sys.exit(f"benchmark_classifier: no classifier at commit {args.reference_commit} "
                     f"({error.stderr.decode().strip()})")
        except WeightsError as error:
            sys.exit(f"benchmark_classifier: {error}")
    image = sitk.ReadImage(str(SAMPLE_VOLUMES["FLAIR"]))
    volume = sitk.GetArrayFromImage(image)
    slices = prepare_volume(volume, models["bundled"].input_size, image.GetDirection(),
                            spacing=image.GetSpacing()).images
    runs = {name: (lambda m=model: prepared_probabilities(m, slices))
            for name, model in models.items()}
    for run in runs.values():
        run()  # warm-up
    load_before = os.getloadavg()
    seconds = {name: [] for name in runs}
    for repeat in range(args.repeats):
        for name in (list(runs) if repeat % 2 == 0 else reversed(list(runs))):
            seconds[name].append(seconds_of(runs[name]) / len(slices))
    for name, model in models.items():
        print(f"{name:<9} {statistics.median(seconds[name]) * 1000:.2f} ms per slice (median of "
              f"{args.repeats}; min {min(seconds[name]) * 1000:.2f}); "
              f"{parameter_count(model.net):,} parameters")
    ratio = statistics.median(seconds["bundled"]) / statistics.median(seconds["reference"])
    print(f"ratio bundled / reference: {ratio:.3f} ({len(slices)} slices of "
          f"{models['bundled'].input_size}x{models['bundled'].input_size}, each with its "
          f"mirror, {args.threads} torch threads, {args.repeats} interleaved repeats)")
    full = load_classifier()
    whole = [seconds_of(lambda: classify_volume(full, volume, direction=image.GetDirection(),
                                                spacing=image.GetSpacing()))
             for _ in range(args.repeats)]
    print(f"classify_volume, bundled classifier with scope guard and tumour evidence, sample "
          f"volume {'x'.join(map(str, image.GetSize()))}: {statistics.median(whole):.2f} s "
          f"(median of {args.repeats})")
    print("load average (1, 5, 15 min) before: " + ", ".join(f"{x:.2f}" for x in load_before)
          + "; after: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
