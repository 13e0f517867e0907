"""Selective-scan benchmark: chunked two-pass scan vs the naive per-step loop on the CPU.

    python scripts/benchmarks/benchmark_scan.py [--length 65536] [--dim 64] [--state 16] [--threads 2]

Prints seconds (best of --repeats), the speed-up and the relative error of both against a
float64 sequential reference, and the load average before and after.
"""

import argparse
import time

import torch
from load import load_average

from ClinicalFMambaLib.networks.scan.chunked import selective_scan_chunked, selective_scan_reference


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=65536)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--state", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    b, d, n, length = args.batch, args.dim, args.state, args.length
    u = torch.randn(b, d, length, generator=g)
    delta = torch.rand(b, d, length, generator=g) * 0.1
    A = -torch.rand(d, n, generator=g) - 0.1
    B, C = torch.randn(b, n, length, generator=g), torch.randn(b, n, length, generator=g)
    inputs = (u, delta, A, B, C)
    load_before = load_average()

    with torch.no_grad():
        t_loop, y_loop = best_time(lambda: selective_scan_reference(*inputs), 1)
        t_chunk, y_chunk = best_time(lambda: selective_scan_chunked(*inputs), args.repeats)
        y_ref = selective_scan_reference(*(x.double() for x in inputs))
    scale = y_ref.abs().max()
    grad_inputs = [x.clone().requires_grad_() for x in inputs]
    t_train, _ = best_time(lambda: selective_scan_chunked(*grad_inputs).sum().backward(),
                           args.repeats)
    print(f"shape B={b} D={d} N={n} L={length}, {args.threads} threads")
    print(f"naive per-step loop      {t_loop:8.3f} s   rel. error {((y_loop.double() - y_ref).abs().max() / scale).item():.2e}")
    print(f"chunked two-pass scan    {t_chunk:8.3f} s   rel. error {((y_chunk.double() - y_ref).abs().max() / scale).item():.2e}")
    print(f"speed-up                 {t_loop / t_chunk:8.1f} x")
    print(f"chunked forward+backward {t_train:8.3f} s")
    print(f"before: {load_before}; after: {load_average()}")


if __name__ == "__main__":
    main()
