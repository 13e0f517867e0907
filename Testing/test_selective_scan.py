"""The pure-PyTorch chunked selective scan against a float64 sequential reference."""

import pytest
import torch

from ClinicalFMambaLib.networks.scan import chunked, dispatch


def _inputs(batch=2, dim=8, n=4, length=157, groups=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    B = rand(batch, groups, n, length) if groups else rand(batch, n, length)
    C = rand(batch, groups, n, length) if groups else rand(batch, n, length)
    return dict(u=rand(batch, dim, length), delta=0.5 * rand(batch, dim, length),
                A=-2 * torch.rand(dim, n, generator=g, dtype=dtype), B=B, C=C, D=rand(dim),
                z=rand(batch, dim, length), delta_bias=rand(dim))


def _rel(a, b):
    """Largest error relative to the reference's scale (exact zeros must stay zero)."""
    scale = max(b.double().abs().max().item(), 1e-12)
    return (a.double() - b.double()).abs().max().item() / scale


@pytest.mark.parametrize("groups", [0, 1, 4])
@pytest.mark.parametrize("length,chunk", [(157, None), (64, 8), (5, None), (1, None), (100, 7)])
def test_outputs_and_gradients_match_float64_reference(groups, length, chunk, monkeypatch):
    # A tiny block budget makes the backward pass go through several blocks of chunks.
    monkeypatch.setattr(chunked._ChunkedScan, "BLOCK_BUDGET", 300)
    ref_in = {k: v.requires_grad_() for k, v in _inputs(length=length, groups=groups).items()}
    y_ref, last_ref = chunked.selective_scan_reference(**ref_in, delta_softplus=True,
                                                    return_last_state=True)
    weight_y, weight_last = torch.randn_like(y_ref), torch.randn_like(last_ref)
    ((y_ref * weight_y).sum() + (last_ref * weight_last).sum()).backward()

    ours = {k: v.detach().float().requires_grad_() for k, v in ref_in.items()}
    y, last = chunked.selective_scan_chunked(**ours, delta_softplus=True, return_last_state=True,
                                          chunk=chunk)
    assert y.dtype == torch.float32
    assert _rel(y, y_ref) < 1e-5 and _rel(last, last_ref) < 1e-5
    ((y * weight_y.float()).sum() + (last * weight_last.float()).sum()).backward()
    for name, tensor in ours.items():
        assert _rel(tensor.grad, ref_in[name].grad) < 1e-5, name


def test_plain_call_without_optional_terms_matches_reference():
    x = _inputs(groups=0, dtype=torch.float32)
    args = [x[k] for k in ("u", "delta", "A", "B", "C")]
    y = dispatch.selective_scan_fn(*args)
    assert _rel(y, chunked.selective_scan_reference(*(a.double() for a in args))) < 1e-5


def test_no_overflow_on_two_million_steps():
    length, dim, n = 2_000_000, 2, 4
    g = torch.Generator().manual_seed(1)
    u = torch.randn(1, dim, length, generator=g)
    delta = torch.rand(1, dim, length, generator=g) * 2  # long decays: the trap for cumprod tricks
    A = -torch.rand(dim, n, generator=g) * 4 - 0.1
    B, C = torch.randn(1, n, length, generator=g), torch.randn(1, n, length, generator=g)
    y, last = chunked.selective_scan_chunked(u, delta, A, B, C, return_last_state=True)
    assert torch.isfinite(y).all() and torch.isfinite(last).all()
    # The tail of the sequence only depends on recent inputs: scanning the last 1,000 steps
    # alone from a zero state agrees with the full scan (the earlier state has decayed away).
    tail = slice(length - 1000, None)
    y_tail = chunked.selective_scan_reference(u[..., tail].double(), delta[..., tail].double(),
                                           A.double(), B[..., tail].double(), C[..., tail].double())
    assert _rel(y[..., -500:], y_tail[..., -500:]) < 1e-5


def test_bad_shapes_raise_clear_errors():
    x = _inputs(groups=0, dtype=torch.float32)
    with pytest.raises(ValueError, match="delta"):
        dispatch.selective_scan_fn(x["u"], x["delta"][..., :-1], x["A"], x["B"], x["C"])
    with pytest.raises(ValueError, match="B and C"):
        dispatch.selective_scan_fn(x["u"], x["delta"], x["A"], x["B"][:, :3], x["C"])
    with pytest.raises(ValueError, match="A must be"):
        dispatch.selective_scan_fn(x["u"], x["delta"], x["A"][:3], x["B"], x["C"])


def test_cpu_never_uses_the_cuda_kernel():
    x = _inputs(groups=0, dtype=torch.float32)
    assert not x["u"].is_cuda
    if not torch.cuda.is_available():
        assert not dispatch.fused_kernel_available()
