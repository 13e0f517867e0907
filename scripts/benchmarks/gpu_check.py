"""GPU check of the selective-scan paths and of fusion on the GPU (run by scripts/benchmarks/gpu_check.sh).

    scripts/benchmarks/gpu_check.sh               # a CUDA machine; under 5 minutes; installs nothing
    scripts/benchmarks/gpu_check.sh --cpu-smoke   # tiny sizes on the CPU, Triton under its interpreter

1. The scan paths (mamba-ssm where it imports, Triton, chunked PyTorch) on one model-sized
   grouped scan: relative error of y and of all eight gradients against the chunked scan in
   float64, first-call time (Triton compiles then), forward and forward+backward times.
2. The bundled 3D network on a full 240x240x155 pair (T2 + FLAIR of TCGA-DU-7294 from
   ../shared/data, else a random head-shaped pair), with each path: seconds, M voxels/s, peak
   GPU memory, and the largest difference from the chunked path's fusion.
3. The bundled 2D network on a batch of 256x256 pairs and on one pair, with each path.

Prints every measurement and the Triton-vs-chunked ratios. Missing optional packages
(safetensors, SimpleITK) make a section use random weights or a random volume, and it says so.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATHS = ("mamba", "triton", "chunked")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny sizes on the CPU (TRITON_INTERPRET=1): checks the script runs")
    parser.add_argument("--data", type=Path,
                        default=ROOT.parent / "shared" / "data" / "brain3d" / "TCGA-DU-7294")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the first")
    return parser.parse_args()


ARGS = parse_args()
if ARGS.cpu_smoke:
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: kernels run on the CPU
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ClinicalFMambaLib.networks.scan import dispatch  # noqa: E402

DEVICE = torch.device("cpu" if ARGS.cpu_smoke else "cuda")
# (batch, directions, channels per direction, N, L): the 3D network's widest scan is 6
# directions x 64 channels over a 32^3 token grid.
SCAN_SHAPE = (1, 6, 2, 4, 40) if ARGS.cpu_smoke else (1, 6, 64, 8, 32 ** 3)
VOLUME_SHAPE = (12, 16, 12) if ARGS.cpu_smoke else (155, 240, 240)
PAIRS_2D = (2, 16) if ARGS.cpu_smoke else (64, 256)   # (batch, side)
REPEATS = 1 if ARGS.cpu_smoke else ARGS.repeats


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats):
    """(first call seconds, best of ``repeats`` further calls, last result)."""
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    first = time.perf_counter() - start
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return first, best, out


def reset_peak():
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(DEVICE)


def peak_gib() -> str:
    if DEVICE.type != "cuda":
        return "-"
    return f"{torch.cuda.max_memory_allocated(DEVICE) / 2 ** 30:.2f}"


def available_paths():
    paths = []
    for path in PATHS:
        try:
            dispatch.scan_path(DEVICE, path)
            paths.append(path)
        except RuntimeError as error:
            print(f"  {path}: skipped ({error})")
    return paths


def environment():
    print(f"torch {torch.__version__}, device {DEVICE}"
          + (f" ({torch.cuda.get_device_name(DEVICE)})" if DEVICE.type == "cuda" else ""))
    try:
        import triton
        print(f"triton {triton.__version__}"
              + (", interpreter" if os.environ.get("TRITON_INTERPRET") == "1" else ""))
    except ImportError:
        print("triton: not importable")


def rel(a, b):
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def check_scans(paths):
    batch, groups, per_group, n, length = SCAN_SHAPE
    dim = groups * per_group
    print(f"\n== 1. selective scan, batch {batch}, {groups} groups x {per_group} channels, "
          f"N {n}, L {length} (float32 inputs, delta softplus, D, z, delta_bias)")
    g = torch.Generator().manual_seed(0)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(DEVICE)

    x = dict(u=rand(batch, dim, length), delta=rand(batch, dim, length, scale=0.5),
             A=-torch.exp(rand(dim, n, scale=0.5)), B=rand(batch, groups, n, length),
             C=rand(batch, groups, n, length), D=rand(dim), z=rand(batch, dim, length),
             delta_bias=rand(dim, scale=0.5) - 2)
    weight = rand(batch, dim, length)
    ref_in = {k: v.double().requires_grad_() for k, v in x.items()}
    y_ref = dispatch.selective_scan_fn(**ref_in, delta_softplus=True, scan="chunked")
    (y_ref * weight.double()).sum().backward()
    times = {}
    print(f"  {'path':8} {'first s':>8} {'fwd ms':>9} {'fwd+bwd ms':>11} {'y rel err':>10} "
          f"{'grad rel err':>12} {'peak GiB':>9}")
    for path in paths:
        ours = {k: v.clone().requires_grad_() for k, v in x.items()}

        def forward():
            with torch.no_grad():
                return dispatch.selective_scan_fn(**ours, delta_softplus=True, scan=path)

        def train_step():
            for v in ours.values():
                v.grad = None
            (dispatch.selective_scan_fn(**ours, delta_softplus=True, scan=path) * weight).sum() \
                .backward()

        reset_peak()
        first, fwd, y = timed(forward, REPEATS)
        _, step, _ = timed(train_step, REPEATS)
        grad_err = max(rel(ours[k].grad, ref_in[k].grad) for k in ours)
        times[path] = fwd
        print(f"  {path:8} {first:8.2f} {fwd * 1e3:9.2f} {step * 1e3:11.2f} "
              f"{rel(y, y_ref.detach()):10.1e} {grad_err:12.1e} {peak_gib():>9}")
    return times


def load_pair():
    """The two volumes (k, j, i) and where they come from."""
    reason = "smoke sizes"
    if not ARGS.cpu_smoke:
        try:
            import SimpleITK as sitk
            return ([sitk.GetArrayFromImage(sitk.ReadImage(str(ARGS.data / f"{c}.nii.gz")))
                     for c in ("t2", "flair")], f"T2 + FLAIR of {ARGS.data.name}")
        except Exception as error:  # data or SimpleITK absent on this machine
            reason = f"{type(error).__name__}: {str(error)[:80]}"
    # A head-shaped (ellipsoid) random pair with zero background, as skull-stripped MRI.
    rng = np.random.default_rng(0)
    axes = np.meshgrid(*(np.linspace(-1, 1, s) for s in VOLUME_SHAPE), indexing="ij")
    inside = sum(a ** 2 for a in axes) < 0.8
    return ([rng.random(VOLUME_SHAPE, np.float32) * inside * 1000 for _ in range(2)],
            f"random ellipsoid pair ({reason})")


def load_network(dims):
    from ClinicalFMambaLib.networks.fusion_net import DEFAULT_CONFIGS, FusionNet
    try:
        from ClinicalFMambaLib.fusion.inference import load_fusion_model
        return load_fusion_model(dims=dims, device=str(DEVICE)), "bundled weights"
    except ImportError as error:  # e.g. safetensors absent: the same network, random weights
        return FusionNet(DEFAULT_CONFIGS[dims]).eval().to(DEVICE), f"random weights ({error})"


def volume_fuser():
    """(fuse(model, a, b) -> fused array, what it does): the library's fuse_volumes, else,
    where its imports are missing, the network on the whole volume in one piece."""
    try:
        from ClinicalFMambaLib.fusion.volumes import fuse_volumes
        return (lambda model, a, b: fuse_volumes(model, a, b).fused,
                "fuse_volumes: normalise, signal box, sliding window")
    except ImportError as error:
        from ClinicalFMambaLib.fusion.gpu import run_network

        def whole(model, a, b):
            ta, tb = (torch.from_numpy(v / v.max()).float()[None, None].to(DEVICE) for v in (a, b))
            return run_network(model, ta, tb)[0, 0].cpu().numpy()
        return whole, f"the network on the whole volume (fuse_volumes: {error})"


def fuse_volume_per_path(paths):
    (a, b), source = load_pair()
    model, weights = load_network(3)
    fuse, how = volume_fuser()
    voxels = a.size / 1e6
    print(f"\n== 2. 3D network, {weights}, {how}\n  pair {a.shape} = {voxels:.2f} M voxels: "
          f"{source}")
    if DEVICE.type == "cuda":
        print(f"  free GPU memory {torch.cuda.mem_get_info(DEVICE)[0] / 2 ** 30:.1f} GiB "
              "(the sliding window's patch is chosen from it)")
    times, fused = {}, {}
    print(f"  {'path':8} {'first s':>8} {'fuse s':>8} {'M vox/s':>8} {'peak GiB':>9} "
          f"{'max |diff| vs chunked':>22}")
    for path in paths:
        os.environ[dispatch.SCAN_ENV] = path
        reset_peak()
        first, best, out = timed(lambda: fuse(model, a, b), max(1, REPEATS - 1))
        times[path], fused[path] = best, out
        print(f"  {path:8} {first:8.2f} {best:8.3f} {voxels / best:8.1f} {peak_gib():>9} "
              f"{np.abs(out - fused['chunked']).max():22.2e}")
    from ClinicalFMambaLib.fusion.gpu import AUTOCAST_ENV
    os.environ[AUTOCAST_ENV] = "0"  # what autocast costs in accuracy (none on the CPU: off there)
    _, full, exact = timed(lambda: fuse(model, a, b), 1)
    os.environ.pop(AUTOCAST_ENV)
    print(f"  {path} without autocast (float32): {full:.3f} s; autocast's fusion differs by "
          f"max {np.abs(out - exact).max():.2e}, mean {np.abs(out - exact).mean():.2e}")
    return times


def fuse_slices_per_path(paths):
    from ClinicalFMambaLib.fusion.gpu import run_network

    batch, side = PAIRS_2D
    model, weights = load_network(2)
    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(batch, 1, side, side, generator=g).to(DEVICE) for _ in range(2))
    print(f"\n== 3. 2D network, {weights}, random {side}x{side} pairs")
    print(f"  {'path':8} {'first s':>8} {f'batch {batch} ms':>13} {'ms/pair':>8} "
          f"{'1 pair ms':>10} {'peak GiB':>9} {'max |diff| vs chunked':>22}")
    times, fused = {}, {}
    for path in paths:
        os.environ[dispatch.SCAN_ENV] = path
        reset_peak()
        first, best, fused[path] = timed(lambda: run_network(model, a, b), REPEATS)
        _, single, _ = timed(lambda: run_network(model, a[:1], b[:1]), REPEATS)
        times[path] = single
        print(f"  {path:8} {first:8.2f} {best * 1e3:13.1f} {best * 1e3 / batch:8.2f} "
              f"{single * 1e3:10.2f} {peak_gib():>9} "
              f"{(fused[path] - fused['chunked']).abs().max().item():22.2e}")
    return times


def ratios(name, times):
    if "triton" in times and "chunked" in times:
        print(f"  {name}: Triton {times['chunked'] / times['triton']:.3g}x the chunked scan's speed"
              + (f", {times['triton'] / times['mamba']:.2f}x mamba-ssm's time"
                 if "mamba" in times else ""))


def main():
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here; run with --cpu-smoke to check the script on the CPU")
    start = time.perf_counter()
    environment()
    if ARGS.cpu_smoke:
        print("--cpu-smoke: tiny sizes, Triton in its interpreter; the times say nothing about "
              "GPU speed, the errors and differences are real")
    paths = sorted(available_paths(), key=lambda p: p != "chunked")  # the baseline first
    results = {"scan forward": check_scans(paths),
               "3D full pair": fuse_volume_per_path(paths),
               "2D single pair": fuse_slices_per_path(paths)}
    print("\n== ratios (best times)")
    for name, times in results.items():
        ratios(name, times)
    os.environ.pop(dispatch.SCAN_ENV, None)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
