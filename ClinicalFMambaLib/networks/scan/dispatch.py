"""Which selective scan runs: mamba-ssm's fused CUDA kernel, the Triton kernel or the chunked
PyTorch scan (``scan_path``), behind one function with the ``mamba_ssm`` signature
(``selective_scan_fn``). ``CLINICALFMAMBA_SCAN=mamba|triton|chunked`` forces a path.
"""

from __future__ import annotations

import logging
import os
import warnings

import torch

from .chunked import selective_scan_chunked

logger = logging.getLogger(__name__)
SCAN_ENV = "CLINICALFMAMBA_SCAN"
SCAN_CHOICES = ("auto", "mamba", "triton", "chunked")
_fused_kernel = None  # resolved on first CUDA call; None until then, False if unavailable
_triton_module = None  # likewise for the Triton scan module
_logged_paths: set[tuple[str, str]] = set()


def _cuda_kernel():
    global _fused_kernel
    if _fused_kernel is None:
        try:  # mamba-ssm only installs on CUDA machines: an optional extra
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as kernel
            _fused_kernel = kernel
        except ImportError:
            _fused_kernel = False
    return _fused_kernel or None


def fused_kernel_available() -> bool:
    """True when CUDA is present and mamba-ssm's fused kernel imports."""
    return torch.cuda.is_available() and _cuda_kernel() is not None


def _triton():
    """The Triton scan module, or None when triton does not import (it is optional)."""
    global _triton_module
    if _triton_module is None:
        try:
            from . import triton_scan as module
            _triton_module = module
        except Exception as error:  # absent, or an install that does not import
            logger.info("Triton selective scan unavailable: %s", error)
            _triton_module = False
    return _triton_module or None


def _requested(scan: str | None) -> str:
    return (scan or os.environ.get(SCAN_ENV) or "auto").strip().lower()


def scan_path(device: torch.device | str, requested: str | None = None) -> str:
    """The implementation that scans tensors on ``device``: 'mamba', 'triton' or 'chunked'.

    ``requested`` (else the CLINICALFMAMBA_SCAN environment variable, else 'auto'): 'auto'
    picks, on CUDA, mamba-ssm when it imports, else Triton when it imports, else the chunked
    scan, and on the CPU the chunked scan. A forced path that cannot run here is an error
    (Triton on CPU tensors only runs under its interpreter, TRITON_INTERPRET=1).
    """
    device = torch.device(device)
    requested = _requested(requested)
    if requested not in SCAN_CHOICES:
        raise ValueError(f"selective scan must be one of {', '.join(SCAN_CHOICES)} "
                         f"({SCAN_ENV} or scan=), not {requested!r}")
    cuda = device.type == "cuda"
    if requested == "auto":
        path = "chunked"
        if cuda:
            path = "mamba" if _cuda_kernel() else "triton" if _triton() else "chunked"
    else:
        path = requested
        if path == "mamba" and not (cuda and _cuda_kernel()):
            raise RuntimeError("selective scan 'mamba' needs CUDA tensors and the mamba-ssm "
                               "package" + ("" if cuda else f"; these tensors are on {device}"))
        if path == "triton":
            module = _triton()
            if module is None:
                raise RuntimeError("selective scan 'triton' needs the triton package, which "
                                   "does not import here")
            if not cuda and not module.INTERPRETED:
                raise RuntimeError("selective scan 'triton' on CPU tensors needs Triton's "
                                   "interpreter: set TRITON_INTERPRET=1 before importing "
                                   "ClinicalFMambaLib")
    if (device.type, path) not in _logged_paths:
        _logged_paths.add((device.type, path))
        logger.info("selective scan on %s: %s (%s)", device.type, path,
                    "forced" if requested != "auto" else "auto")
    return path


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, return_last_state=False, chunk=None):
    """The Triton kernel (``triton_scan.selective_scan_triton``); needs triton."""
    if _triton() is None:
        raise RuntimeError("the Triton selective scan needs the triton package")
    return _triton().selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                           return_last_state, chunk)


def selective_scan_fn(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                      C: torch.Tensor, D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                      delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
                      return_last_state: bool = False, scan: str | None = None):
    """Selective scan with the signature of ``mamba_ssm.ops.selective_scan_interface``.

    Shapes: u, delta, z (batch, dim, L); A (dim, N); B, C (batch, N, L) or grouped
    (batch, G, N, L) with dim divisible by G (channel d uses group d // (dim // G));
    D, delta_bias (dim,). Returns y (batch, dim, L) and, with ``return_last_state``,
    also the final state (batch, dim, N). ``scan`` forces an implementation (``scan_path``).
    """
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    path = scan_path(u.device, scan)
    if path == "mamba":
        return _cuda_kernel()(*args)
    if path == "triton":
        if _requested(scan) == "triton":
            return selective_scan_triton(*args)
        try:
            return selective_scan_triton(*args)
        except (ValueError, torch.cuda.OutOfMemoryError):
            raise
        except Exception as error:  # chosen automatically but cannot compile here (Triton
            _give_up_triton(error)    # builds its launcher with the system's C compiler)
    return selective_scan_chunked(*args)


def _give_up_triton(error: Exception) -> None:
    global _triton_module
    _triton_module = False
    warnings.warn(f"the Triton selective scan failed ({type(error).__name__}: {error}); "
                  "using the chunked PyTorch scan from now on", stacklevel=3)
