"""Time each stage of the fusion network on the CPU (forward pass, no gradients).

    python scripts/benchmarks/profile_blocks.py --dim 3 --size 96 [--paper] [--stem-stride S]
        [--pixel-mlp WIDTH] [--threads 2]

Prints seconds per stage (encoder for both inputs, latent Mamba stages, fusion, decoder) for
the shipped configuration, or the paper's with --paper, so that choices about where to spend
capacity rest on measurements. Each stage's share of the total is the ratio that compares
across runs; the load average is printed with it.
"""

import argparse
import dataclasses
import time
from collections import defaultdict

import torch
from load import load_average

from ClinicalFMambaLib.networks.fusion_net import (DEFAULT_CONFIGS, FusionConfig, FusionNet,
                                                   parameter_count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, choices=(2, 3), default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--paper", action="store_true", help="the paper's configuration")
    parser.add_argument("--stem-stride", type=int, default=None,
                        help="override the stem stride (1: full resolution, 2: half)")
    parser.add_argument("--pixel-mlp", type=int, default=None,
                        help="override the per-pixel MLP's hidden width (0: none)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = DEFAULT_CONFIGS[args.dim]
    if args.paper:
        cfg = FusionConfig(spatial_dims=args.dim, widths=(32, 64, 128), latent_blocks=5,
                           decoder_blocks=2)
    if args.stem_stride:
        cfg = dataclasses.replace(cfg, stem_stride=args.stem_stride)
    if args.pixel_mlp is not None:
        cfg = dataclasses.replace(cfg, pixel_mlp=args.pixel_mlp)
    model = FusionNet(cfg).eval()
    seconds, started = defaultdict(float), {}
    for name, module in model.named_children():
        module.register_forward_pre_hook(lambda m, i, n=name: started.__setitem__(n, time.perf_counter()))
        module.register_forward_hook(
            lambda m, i, o, n=name: seconds.__setitem__(n, seconds[n] + time.perf_counter() - started[n]))
    shape = (1, 1) + (args.size,) * args.dim
    a, b = torch.rand(shape), torch.rand(shape)
    with torch.no_grad():
        model(a, b)  # warm-up
        seconds.clear()
        start = time.perf_counter()
        for _ in range(args.repeats):
            model(a, b)
        total = (time.perf_counter() - start) / args.repeats
    print(f"{cfg}\n{parameter_count(model):,} parameters, input {shape[2:]}, "
          f"{args.threads} threads: {total:.3f} s per fusion")
    for name, value in seconds.items():
        print(f"  {name:<14} {value / args.repeats:8.3f} s  {100 * value / args.repeats / total:5.1f} %")
    print(load_average())


if __name__ == "__main__":
    main()
