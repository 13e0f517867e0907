"""Selective scan in Triton: the ``mamba_ssm`` contract without a CUDA compiler.

Runs natively on CUDA tensors, and on CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1`` set before this module is imported), which is how it is tested.

Each program owns a block of channels of one batch element (all in one B/C group) and keeps
their (channels, N) state in float32 registers while it steps through time:

* forward, chunk-parallel: the sequence is cut into chunks of ``chunk`` positions, one program
  per (channel block, chunk). Pass 1 runs each chunk from a zero state and writes its end state
  and its delta sum; a carry kernel walks the chunks in order,
  ``start[c+1] = exp(A * sum(delta over c)) * start[c] + end[c]``; pass 2 reruns every chunk
  from its true start and writes y. Only ``exp(delta * A) <= 1`` factors are multiplied, as in
  the chunked PyTorch scan.
* backward, one program per channel block walking the chunks in reverse: it recomputes the
  chunk's states from the saved chunk start into a per-program scratch of ``chunk`` states,
  then runs the adjoint ``g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1}`` backwards through it.

Memory besides inputs and outputs: the chunk starts, (batch, dim, N, L / chunk) floats, and
the backward scratch, (batch, dim, N, chunk) floats; never an (L, dim, N) tensor.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from .contract import grouped_shapes

# Kernels are decorated for the interpreter or the GPU when this module is imported (read as
# Triton reads it; triton.knobs only exists from Triton 3.4, older ones ship with PyTorch).
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


@triton.jit
def _delta_at(delta_ptr, bias, row, t, d_ok, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """(raw delta + bias, effective delta) at position t; 0 for padding channels."""
    x = tl.load(delta_ptr + row + t, mask=d_ok, other=0.0).to(tl.float32)
    if HAS_BIAS:
        x += bias
    dt = x
    if SOFTPLUS:
        dt = tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))
    return x, tl.where(d_ok, dt, 0.0)


@triton.jit
def _channel_block(pid, A_ptr, D_ptr, bias_ptr, length, dim, per_group, groups, n_state,
                   n_dblocks, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, HAS_D: tl.constexpr,
                   HAS_BIAS: tl.constexpr):
    """What program ``pid`` works on: batch element b, channels d (masked by d_ok) of one
    group, states n (n_ok), offsets of (b, d, n) states (dn), of u/delta/z rows (row) and of
    B/C rows (bc_row), and the channels' A, delta bias and D in float32."""
    b = (pid // (groups * n_dblocks)).to(tl.int64)  # offsets can pass 2**31 elements
    g = (pid // n_dblocks) % groups
    d_local = (pid % n_dblocks) * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = d_local < per_group
    d = g * per_group + d_local
    n = tl.arange(0, BLOCK_N)
    n_ok = n < n_state
    dn_ok = d_ok[:, None] & n_ok[None, :]
    A = tl.load(A_ptr + d[:, None] * n_state + n[None, :], mask=dn_ok, other=0.0).to(tl.float32)
    bias = tl.zeros([BLOCK_D], tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=d_ok, other=0.0).to(tl.float32)
    Dv = tl.zeros([BLOCK_D], tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=d_ok, other=0.0).to(tl.float32)
    dn = (b * dim + d)[:, None] * n_state + n[None, :]
    row = (b * dim + d) * length
    bc_row = ((b * groups + g) * n_state + n) * length
    return b, d, d_ok, n, n_ok, dn_ok, dn, row, bc_row, A, bias, Dv


@triton.jit
def _chunk_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr,
                  start_ptr, end_ptr, dsum_ptr, length, dim, per_group, groups, n_state,
                  n_dblocks, chunk, n_chunks,
                  BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, HAS_D: tl.constexpr,
                  HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                  EMIT: tl.constexpr):
    """One chunk of one channel block. EMIT=False: from zero, write end state and delta sum.
    EMIT=True: from the true start state, write y (with D and the z gate) and the end state."""
    c = tl.program_id(1)
    b, d, d_ok, n, n_ok, dn_ok, dn, row, bc_row, A, bias, Dv = _channel_block(
        tl.program_id(0), A_ptr, D_ptr, bias_ptr, length, dim, per_group, groups, n_state,
        n_dblocks, BLOCK_D, BLOCK_N, HAS_D, HAS_BIAS)
    state_at = dn * n_chunks + c
    if EMIT:
        h = tl.load(start_ptr + state_at, mask=dn_ok, other=0.0)
    else:
        h = tl.zeros([BLOCK_D, BLOCK_N], tl.float32)
    dsum = tl.zeros([BLOCK_D], tl.float32)
    # The loop stops at the sequence end (time masks combined with channel masks are avoided:
    # the interpreter mistypes a vector mask and-ed with a scalar one).
    for s in range(0, tl.minimum(chunk, length - c * chunk)):
        t = c * chunk + s
        _, dt = _delta_at(delta_ptr, bias, row, t, d_ok, HAS_BIAS, SOFTPLUS)
        u = tl.load(u_ptr + row + t, mask=d_ok, other=0.0).to(tl.float32)
        Bt = tl.load(B_ptr + bc_row + t, mask=n_ok, other=0.0).to(tl.float32)
        h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]
        if EMIT:
            Ct = tl.load(C_ptr + bc_row + t, mask=n_ok, other=0.0).to(tl.float32)
            y = tl.sum(h * Ct[None, :], axis=1) + Dv * u
            if HAS_Z:
                z = tl.load(z_ptr + row + t, mask=d_ok, other=0.0).to(tl.float32)
                y = y * z * tl.sigmoid(z)
            tl.store(out_ptr + row + t, y.to(out_ptr.dtype.element_ty), mask=d_ok)
        else:
            dsum += dt
    tl.store(end_ptr + state_at, h, mask=dn_ok)
    if not EMIT:
        tl.store(dsum_ptr + (b * dim + d) * n_chunks + c, dsum, mask=d_ok)


@triton.jit
def _carry_kernel(A_ptr, end_ptr, dsum_ptr, start_ptr, total, dim, n_state, n_chunks,
                  BLOCK: tl.constexpr):
    """True chunk start states from the zero-start end states, for each (b, d, n)."""
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = idx < total
    A = tl.load(A_ptr + idx % (dim * n_state), mask=ok, other=0.0).to(tl.float32)
    h = tl.zeros([BLOCK], tl.float32)
    for c in range(0, n_chunks):
        tl.store(start_ptr + idx * n_chunks + c, h, mask=ok)
        dsum = tl.load(dsum_ptr + (idx // n_state) * n_chunks + c, mask=ok, other=0.0)
        h = tl.exp(A * dsum) * h + tl.load(end_ptr + idx * n_chunks + c, mask=ok, other=0.0)


@triton.jit
def _backward_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr,
                     start_ptr, dlast_ptr, scratch_ptr, du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr,
                     dA_ptr, dD_ptr, dbias_ptr, batch, length, dim, per_group, groups,
                     n_state, n_dblocks, chunk, n_chunks,
                     BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, HAS_D: tl.constexpr,
                     HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Gradients for one channel block of one batch element, chunks in reverse order.

    dB/dC are written per channel block (summed by the caller); dA, dD and dbias per batch
    element (likewise). ddelta is the gradient of the raw delta (before bias and softplus)."""
    pid = tl.program_id(0)
    b, d, d_ok, n, n_ok, dn_ok, dn, row, bc_row, A, bias, Dv = _channel_block(
        pid, A_ptr, D_ptr, bias_ptr, length, dim, per_group, groups, n_state, n_dblocks,
        BLOCK_D, BLOCK_N, HAS_D, HAS_BIAS)
    part_row = bc_row + (pid % n_dblocks).to(tl.int64) * batch * groups * n_state * length
    scratch = scratch_ptr + pid.to(tl.int64) * chunk * BLOCK_D * BLOCK_N \
        + tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + n[None, :]
    g_carry = tl.load(dlast_ptr + dn, mask=dn_ok, other=0.0)  # dL/dh flowing in from t + 1
    dA = tl.zeros([BLOCK_D, BLOCK_N], tl.float32)
    dD = tl.zeros([BLOCK_D], tl.float32)
    dbias = tl.zeros([BLOCK_D], tl.float32)
    for back_c in range(0, n_chunks):
        c = n_chunks - 1 - back_c
        h = tl.load(start_ptr + dn * n_chunks + c, mask=dn_ok, other=0.0)
        steps = tl.minimum(chunk, length - c * chunk)
        for s in range(0, steps):             # recompute: scratch[s] = state before step s
            t = c * chunk + s
            tl.store(scratch + s * BLOCK_D * BLOCK_N, h)
            _, dt = _delta_at(delta_ptr, bias, row, t, d_ok, HAS_BIAS, SOFTPLUS)
            u = tl.load(u_ptr + row + t, mask=d_ok, other=0.0).to(tl.float32)
            Bt = tl.load(B_ptr + bc_row + t, mask=n_ok, other=0.0).to(tl.float32)
            h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]
        tl.debug_barrier()
        for back_s in range(0, steps):
            s = steps - 1 - back_s
            t = c * chunk + s
            x, dt = _delta_at(delta_ptr, bias, row, t, d_ok, HAS_BIAS, SOFTPLUS)
            u = tl.load(u_ptr + row + t, mask=d_ok, other=0.0).to(tl.float32)
            Bt = tl.load(B_ptr + bc_row + t, mask=n_ok, other=0.0).to(tl.float32)
            Ct = tl.load(C_ptr + bc_row + t, mask=n_ok, other=0.0).to(tl.float32)
            dy = tl.load(dout_ptr + row + t, mask=d_ok, other=0.0).to(tl.float32)
            h_prev = tl.load(scratch + s * BLOCK_D * BLOCK_N)
            decay = tl.exp(dt[:, None] * A)
            h = decay * h_prev + (dt * u)[:, None] * Bt[None, :]
            if HAS_Z:
                z = tl.load(z_ptr + row + t, mask=d_ok, other=0.0).to(tl.float32)
                sig = tl.sigmoid(z)
                y = tl.sum(h * Ct[None, :], axis=1) + Dv * u
                tl.store(dz_ptr + row + t, dy * y * sig * (1.0 + z * (1.0 - sig)), mask=d_ok)
                dy = dy * z * sig
            grad_h = g_carry + dy[:, None] * Ct[None, :]
            grad_h = tl.where(dn_ok, grad_h, 0.0)
            gB = tl.sum(grad_h * Bt[None, :], axis=1)
            w = grad_h * decay * h_prev
            ddt = u * gB + tl.sum(w * A, axis=1)
            if SOFTPLUS:
                ddt = ddt * tl.sigmoid(x)
            tl.store(du_ptr + row + t, dy * Dv + dt * gB, mask=d_ok)
            tl.store(ddelta_ptr + row + t, ddt, mask=d_ok)
            tl.store(dB_ptr + part_row + t, tl.sum(grad_h * (dt * u)[:, None], axis=0), mask=n_ok)
            tl.store(dC_ptr + part_row + t,
                     tl.sum(tl.where(dn_ok, h, 0.0) * dy[:, None], axis=0), mask=n_ok)
            dA += w * dt[:, None]
            dD += dy * u
            dbias += tl.where(d_ok, ddt, 0.0)
            g_carry = decay * grad_h
        tl.debug_barrier()                     # scratch is rewritten by the next chunk
    tl.store(dA_ptr + dn, dA, mask=dn_ok)
    tl.store(dD_ptr + b * dim + d, dD, mask=d_ok)
    tl.store(dbias_ptr + b * dim + d, dbias, mask=d_ok)


# State values (channels x N) held by one program; more channels per program mean fewer,
# wider programs. The interpreter runs programs one after another at a cost per operation
# nearly independent of the block size, so there one block takes a whole group.
STATES_PER_PROGRAM = 1 << 14 if INTERPRETED else 512


def _blocks(per_group: int, n_state: int) -> tuple[int, int, int]:
    """(BLOCK_D, BLOCK_N, channel blocks per group)."""
    block_n = triton.next_power_of_2(n_state)
    block_d = min(triton.next_power_of_2(per_group), max(1, STATES_PER_PROGRAM // block_n))
    return block_d, block_n, -(-per_group // block_d)


MAX_CHUNKS = 65535  # CUDA's limit on the second grid dimension


def default_chunk(length: int) -> int:
    """Chunk length: about sqrt(L), at least 16 positions (short chunks cost carry steps);
    under the interpreter the whole sequence (chunks only pay off in parallel)."""
    return length if INTERPRETED else max(16, math.isqrt(max(length, 1)))


def _check(u, delta, A, B, C):
    Bg, Cg, groups = grouped_shapes(u, delta, A, B, C)
    if not u.is_cuda and not INTERPRETED:
        raise RuntimeError("the Triton selective scan needs CUDA tensors, or CPU tensors with "
                           "TRITON_INTERPRET=1 set before ClinicalFMambaLib is imported")
    return Bg.contiguous(), Cg.contiguous(), groups, B.dim() == 4


class _TritonScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, chunk):
        Bg, Cg, groups, grouped = _check(u, delta, A, B, C)
        u, delta, A = u.contiguous(), delta.contiguous(), A.contiguous()
        z = z.contiguous() if z is not None else None
        batch, dim, length = u.shape
        n_state = A.shape[1]
        per_group = dim // groups
        block_d, block_n, n_dblocks = _blocks(per_group, n_state)
        chunk = max(chunk or default_chunk(length), -(-length // MAX_CHUNKS))
        n_chunks = -(-length // chunk)
        f32 = dict(dtype=torch.float32, device=u.device)
        end = torch.empty(batch, dim, n_state, n_chunks, **f32)
        starts = torch.empty_like(end)
        out = torch.empty_like(u)
        programs = batch * groups * n_dblocks
        flags = dict(BLOCK_D=block_d, BLOCK_N=block_n, HAS_D=D is not None, HAS_Z=z is not None,
                     HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(softplus))
        dsum = torch.empty(batch, dim, n_chunks, **f32)
        args = (u, delta, A, Bg, Cg, D, z, delta_bias, out, starts, end, dsum, length, dim,
                per_group, groups, n_state, n_dblocks, chunk, n_chunks)
        if n_chunks > 1:
            _chunk_kernel[(programs, n_chunks)](*args, **flags, EMIT=False)
            total = batch * dim * n_state
            _carry_kernel[(triton.cdiv(total, 128),)](A, end, dsum, starts, total, dim, n_state,
                                                      n_chunks, BLOCK=128)
        else:
            starts.zero_()
        _chunk_kernel[(programs, n_chunks)](*args, **flags, EMIT=True)
        ctx.save_for_backward(u, delta, A, Bg, Cg, D, z, delta_bias, starts)
        ctx.config = (softplus, chunk, grouped, B.dtype, C.dtype)
        return out, end[..., -1].contiguous()

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, Bg, Cg, D, z, delta_bias, starts = ctx.saved_tensors
        softplus, chunk, grouped, B_dtype, C_dtype = ctx.config
        batch, dim, length = u.shape
        groups, n_state = Bg.shape[1], A.shape[1]
        per_group = dim // groups
        block_d, block_n, n_dblocks = _blocks(per_group, n_state)
        n_chunks = starts.shape[-1]
        programs = batch * groups * n_dblocks
        f32 = dict(dtype=torch.float32, device=u.device)
        dlast = (torch.zeros(batch, dim, n_state, **f32) if dlast is None
                 else dlast.float().contiguous())
        scratch = torch.empty(programs, chunk, block_d, block_n, **f32)
        du, ddelta = torch.empty(u.shape, **f32), torch.empty(u.shape, **f32)
        dz = torch.empty(u.shape, **f32) if z is not None else None
        dB = torch.empty(n_dblocks, *Bg.shape, **f32)
        dC = torch.empty(n_dblocks, *Cg.shape, **f32)
        dA = torch.empty(batch, dim, n_state, **f32)
        dD, dbias = torch.empty(batch, dim, **f32), torch.empty(batch, dim, **f32)
        _backward_kernel[(programs,)](
            u, delta, A, Bg, Cg, D, z, delta_bias, dout.contiguous(), starts, dlast, scratch,
            du, ddelta, dz, dB, dC, dA, dD, dbias, batch, length, dim, per_group, groups, n_state,
            n_dblocks, chunk, n_chunks, BLOCK_D=block_d, BLOCK_N=block_n, HAS_D=D is not None,
            HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(softplus))
        dB, dC = dB.sum(0), dC.sum(0)
        if not grouped:
            dB, dC = dB.squeeze(1), dC.squeeze(1)
        return (du.to(u.dtype), ddelta.to(delta.dtype), dA.sum(0).to(A.dtype), dB.to(B_dtype),
                dC.to(C_dtype), None if D is None else dD.sum(0).to(D.dtype),
                None if z is None else dz.to(z.dtype),
                None if delta_bias is None else dbias.sum(0).to(delta_bias.dtype), None, None)


def selective_scan_triton(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,
                          B: torch.Tensor, C: torch.Tensor, D: torch.Tensor | None = None,
                          z: torch.Tensor | None = None, delta_bias: torch.Tensor | None = None,
                          delta_softplus: bool = False, return_last_state: bool = False,
                          chunk: int | None = None):
    """Selective scan with ``mamba_ssm``'s signature, in Triton; differentiable in every input.

    Shapes as ``dispatch.selective_scan_fn``. Inputs may be float32, float16 or bfloat16
    (the state is accumulated in float32); y has u's dtype, the last state is float32.
    ``chunk`` sets the positions per chunk (default about sqrt(L)).
    """
    y, last = _TritonScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk)
    return (y, last) if return_last_state else y
