"""The Triton selective scan, run on the CPU by Triton's interpreter, against an independent
float64 loop; and the choice between the scan implementations."""

import importlib
import logging
import os
import subprocess
import sys

import pytest
import torch

# Kernels are built for the interpreter when TRITON_INTERPRET is set as they are defined, and
# Triton reads it again when it launches them (the fixture below); the variable is put back
# after import and after this module's tests so that no other test sees it.
_previous = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"
try:
    triton_scan = pytest.importorskip("ClinicalFMambaLib.networks.scan.triton_scan")
    if not triton_scan.INTERPRETED:  # defined earlier in this process for the GPU: again
        importlib.reload(triton_scan)
finally:
    if _previous is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = _previous

from ClinicalFMambaLib.networks.scan import chunked, dispatch  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def interpreter():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        yield


NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def loop_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """(y, last state): the recurrence step by step in float64, written from its definition."""
    batch, dim, length = u.shape
    if B.dim() == 3:
        B, C = B[:, None], C[:, None]
    per_group = dim // B.shape[1]
    dt = delta + (delta_bias[:, None] if delta_bias is not None else 0)
    if delta_softplus:
        dt = torch.log1p(torch.exp(dt))
    group_of = torch.arange(dim) // per_group
    B, C = B[:, group_of], C[:, group_of]             # (batch, dim, N, L)
    h = torch.zeros(batch, dim, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(length):
        h = torch.exp(dt[:, :, t, None] * A) * h + (dt[:, :, t] * u[:, :, t])[..., None] * B[..., t]
        ys.append((h * C[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * z * torch.sigmoid(z)
    return y, h


def make_inputs(batch, dim, n, length, groups, optional=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    bc_shape = (batch, groups, n, length) if groups else (batch, n, length)
    x = dict(u=rand(batch, dim, length), delta=0.5 * rand(batch, dim, length),
             A=-2 * torch.rand(dim, n, generator=g, dtype=torch.float64),
             B=rand(*bc_shape), C=rand(*bc_shape))
    if optional:
        x.update(D=rand(dim), z=rand(batch, dim, length), delta_bias=rand(dim))
    return x


def rel(a, b):
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("batch,dim,n,length,groups,optional,softplus,chunk,per_program", [
    (2, 8, 4, 33, 2, True, True, 16, 512),     # two full chunks of 16 and one of 1
    (1, 4, 4, 1, 0, True, True, None, 512),    # a single position
    (1, 4, 4, 12, 0, True, True, None, 512),   # the default chunks
    (2, 4, 3, 7, 0, False, False, 3, 512),     # plain call, odd N, chunks of 3, 3, 1
    (1, 9, 3, 20, 3, True, True, 8, 8),        # 3 channels a group in blocks of 2 (padded)
])
def test_outputs_last_state_and_gradients_match_float64_loop(
        batch, dim, n, length, groups, optional, softplus, chunk, per_program, monkeypatch):
    monkeypatch.setattr(triton_scan, "STATES_PER_PROGRAM", per_program)
    x = make_inputs(batch, dim, n, length, groups, optional)
    ref = {k: v.clone().requires_grad_() for k, v in x.items()}
    y_ref, last_ref = loop_reference(**ref, delta_softplus=softplus)
    w_y, w_last = torch.randn_like(y_ref), torch.randn_like(last_ref)
    ((y_ref * w_y).sum() + (last_ref * w_last).sum()).backward()

    ours = {k: v.float().requires_grad_() for k, v in x.items()}
    y, last = triton_scan.selective_scan_triton(**ours, delta_softplus=softplus,
                                                return_last_state=True, chunk=chunk)
    assert y.dtype == last.dtype == torch.float32
    assert rel(y, y_ref.detach()) < 1e-5 and rel(last, last_ref.detach()) < 1e-5
    ((y * w_y.float()).sum() + (last * w_last.float()).sum()).backward()
    for name in ours:
        assert ours[name].grad.shape == x[name].shape
        assert rel(ours[name].grad, ref[name].grad) < 1e-5, name
    assert set(ours) == set(NAMES if optional else NAMES[:5])  # all eight when all are given


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_half_inputs_keep_a_float32_state(dtype, tol):
    x = make_inputs(1, 4, 4, 24, 2)
    half = {k: v.to(dtype) if k in ("u", "delta", "B", "C", "z") else v.float()
            for k, v in x.items()}
    # The reference sees exactly the rounded inputs: what is left is the scan's own error.
    y_ref, last_ref = loop_reference(**{k: v.double() for k, v in half.items()},
                                     delta_softplus=True)
    half = {k: v.requires_grad_() for k, v in half.items()}
    y, last = triton_scan.selective_scan_triton(**half, delta_softplus=True,
                                                return_last_state=True)
    assert y.dtype == dtype and last.dtype == torch.float32
    assert rel(last, last_ref) < 1e-5          # accumulated in float32
    assert rel(y, y_ref) < tol                 # y itself is rounded to the input dtype
    y.float().sum().backward()
    assert all(half[k].grad.dtype == half[k].dtype for k in half)
    assert all(torch.isfinite(half[k].grad.float()).all() for k in half)


def test_every_available_path_can_be_forced_and_agrees(monkeypatch, caplog):
    x = {k: v.float() for k, v in make_inputs(1, 4, 4, 9, 2).items()}
    monkeypatch.setattr(dispatch, "_logged_paths", set())
    with caplog.at_level(logging.INFO, logger=dispatch.__name__):
        chunked = dispatch.selective_scan_fn(**x, delta_softplus=True, scan="chunked")
        triton = dispatch.selective_scan_fn(**x, delta_softplus=True, scan="triton")
        dispatch.selective_scan_fn(**x, delta_softplus=True, scan="triton")
    assert rel(triton, chunked.double()) < 1e-5
    assert sum("cpu: triton" in r.getMessage() for r in caplog.records) == 1  # logged once
    monkeypatch.setenv(dispatch.SCAN_ENV, "triton")
    assert dispatch.scan_path("cpu") == "triton"
    monkeypatch.setenv(dispatch.SCAN_ENV, "auto")
    assert dispatch.scan_path("cpu") == "chunked"          # the CPU default
    with pytest.raises(RuntimeError, match="mamba-ssm"):
        dispatch.selective_scan_fn(**x, scan="mamba")      # needs CUDA tensors
    with pytest.raises(ValueError, match="auto, mamba, triton, chunked"):
        dispatch.scan_path("cpu", "fast")


def test_triton_on_cpu_without_the_interpreter_is_a_clear_error():
    code = ("from ClinicalFMambaLib.networks.scan.dispatch import scan_path\n"
            "try:\n    scan_path('cpu', 'triton')\n"
            "except RuntimeError as e:\n    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         encoding="utf-8", timeout=120, check=True).stdout
    assert "TRITON_INTERPRET=1" in out


def test_automatic_triton_that_fails_falls_back_to_chunked(monkeypatch):
    # On a GPU machine without a C compiler Triton cannot build its launcher: the automatic
    # choice must then warn and scan with the chunked implementation instead of failing.
    def broken(*args, **kwargs):
        raise RuntimeError("Failed to find C compiler")

    x = {k: v.float() for k, v in make_inputs(1, 4, 4, 9, 2).items()}
    monkeypatch.setattr(dispatch, "scan_path", lambda device, requested=None: "triton")
    monkeypatch.setattr(dispatch, "_triton_module", triton_scan)
    monkeypatch.setattr(triton_scan, "selective_scan_triton", broken)
    with pytest.warns(UserWarning, match="C compiler"):
        y = dispatch.selective_scan_fn(**x)
    assert rel(y, chunked.selective_scan_chunked(**x).double()) == 0
    assert dispatch._triton() is None
