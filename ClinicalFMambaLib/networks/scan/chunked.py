"""The chunked pure-PyTorch selective scan (the S6 recurrence of Mamba), ``mamba_ssm`` contract.

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t = <C_t, h_t> + D * u_t            (then y * silu(z) when z is given)

Three implementations give the same numbers (``dispatch.scan_path`` picks one): mamba-ssm's
fused CUDA kernel, a Triton kernel (``triton_scan.py``; Triton ships with Linux CUDA
builds of PyTorch, so it covers GPUs where mamba-ssm does not install), and the pure PyTorch
*chunked two-pass* scan, which runs everywhere:

1. split L into ``n_chunks`` chunks of T positions (T ~ sqrt(L));
2. pass 1 steps through the T positions updating every chunk at once from a zero state, which
   gives each chunk's end state as if it had started from zero;
3. the true start state of chunk c+1 is ``exp(A * sum(delta over chunk c)) * start_c + end_c``;
4. pass 2 reruns the chunks from their true start states and emits y.

Only factors ``exp(delta * A) <= 1`` (A < 0, delta >= 0) are ever multiplied, so long sequences
cannot overflow float32 (unlike dividing by a cumulative exponential), and no (L, D, N) tensor is
built: the work is 2T + n_chunks vectorised steps over tensors of D * N * n_chunks elements.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .contract import grouped_shapes


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """Validate shapes, apply bias/softplus and return grouped views."""
    B, C, groups = grouped_shapes(u, delta, A, B, C)
    dtype = torch.promote_types(u.dtype, torch.float32)  # half inputs are scanned in float32
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u.to(dtype), delta, A.to(dtype), B.to(dtype), C.to(dtype), groups


def _to_steps(x: torch.Tensor, n_chunks: int, steps: int) -> torch.Tensor:
    """(batch, G, K, L) -> (T, batch, G, K, n_chunks): one slice per position within a chunk."""
    pad = n_chunks * steps - x.shape[-1]
    if pad:
        x = F.pad(x, (0, pad))  # delta = 0 and u = 0 past the end leave the state unchanged
    return x.unflatten(-1, (n_chunks, steps)).movedim(-1, 0).contiguous()


def _from_steps(steps_list: list[torch.Tensor], length: int) -> torch.Tensor:
    """Inverse of _to_steps for a list of T slices (batch, G, K, n_chunks) -> (batch, G, K, L)."""
    return torch.stack(steps_list, dim=-1).flatten(-2)[..., :length]


class _ChunkedScan(torch.autograd.Function):
    """Core recurrence y_t = <C_t, h_t> with grouped B/C; delta already positive.

    Forward keeps only the chunk start states (D*N*n_chunks numbers); backward recomputes the
    states block by block and runs the adjoint recurrence g_t = C_t dy_t + exp(delta_{t+1} A)
    g_{t+1} with the same chunked scheme, so training memory stays O(L*D) too.
    """

    # Largest number of stored states (floats) while back-propagating one block of chunks.
    BLOCK_BUDGET = 1 << 24

    @staticmethod
    def forward(ctx, u, delta, A, B, C, steps):
        batch, groups, per_group, length = u.shape
        n_chunks = -(-length // steps)
        u_s, d_s = _to_steps(u, n_chunks, steps), _to_steps(delta, n_chunks, steps)
        B_s = _to_steps(B, n_chunks, steps).unsqueeze(3)              # (T, b, G, 1, N, nc)
        C_s = _to_steps(C, n_chunks, steps).unsqueeze(3)
        A_g = A.view(groups, per_group, -1, 1)                         # (G, dg, N, 1)
        du_s = d_s * u_s
        decay = torch.empty(batch, groups, per_group, A.shape[1], n_chunks, dtype=u.dtype,
                            device=u.device)
        h = torch.zeros_like(decay)
        for t in range(steps):                  # pass 1: chunk end states from zero starts
            torch.mul(d_s[t].unsqueeze(-2), A_g, out=decay).exp_()
            h.mul_(decay).addcmul_(du_s[t].unsqueeze(-2), B_s[t])
        chunk_decay = torch.exp(d_s.sum(0).unsqueeze(-2) * A_g)
        starts = torch.zeros_like(h)
        for c in range(n_chunks - 1):           # carry the true start states across chunks
            torch.addcmul(h[..., c], chunk_decay[..., c], starts[..., c], out=starts[..., c + 1])
        h.copy_(starts)
        ys = []
        for t in range(steps):                  # pass 2: rerun from true starts, emit y
            torch.mul(d_s[t].unsqueeze(-2), A_g, out=decay).exp_()
            h.mul_(decay).addcmul_(du_s[t].unsqueeze(-2), B_s[t])
            ys.append((h * C_s[t]).sum(-2))
        ctx.save_for_backward(u, delta, A, B, C, starts)
        ctx.steps = steps
        return _from_steps(ys, length), h[..., -1]

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, B, C, starts = ctx.saved_tensors
        steps = ctx.steps
        batch, groups, per_group, length = u.shape
        n_state, n_chunks = A.shape[1], starts.shape[-1]
        u_s, d_s = _to_steps(u, n_chunks, steps), _to_steps(delta, n_chunks, steps)
        B_s = _to_steps(B, n_chunks, steps).unsqueeze(3)
        C_s = _to_steps(C, n_chunks, steps).unsqueeze(3)
        dy_s = _to_steps(dy.contiguous(), n_chunks, steps)
        A_g = A.view(groups, per_group, -1, 1)
        du_s = d_s * u_s

        def decay_at(t, chunks=slice(None)):
            return torch.exp(d_s[t][..., chunks].unsqueeze(-2) * A_g)

        # Adjoint pass 1 (reverse, zero incoming adjoint) and carry across chunks backwards.
        r = torch.zeros_like(starts)
        for t in reversed(range(steps)):
            r = decay_at(t) * (r + C_s[t] * dy_s[t].unsqueeze(-2))
        chunk_decay = torch.exp(d_s.sum(0).unsqueeze(-2) * A_g)
        incoming = torch.zeros_like(starts)     # adjoint flowing into each chunk's last step
        incoming[..., -1] = dlast.view_as(incoming[..., -1]) if dlast is not None else 0
        for c in reversed(range(n_chunks - 1)):
            incoming[..., c] = chunk_decay[..., c + 1] * incoming[..., c + 1] + r[..., c + 1]

        per_chunk = batch * groups * per_group * n_state * steps
        block = max(1, _ChunkedScan.BLOCK_BUDGET // per_chunk)
        grads = {"u": [], "delta": [], "B": [], "C": []}
        dA = torch.zeros_like(A_g.squeeze(-1))
        for c0 in range(0, n_chunks, block):
            cs = slice(c0, min(c0 + block, n_chunks))
            h = starts[..., cs]
            states = []
            for t in range(steps):              # recompute this block's states
                h = decay_at(t, cs) * h + du_s[t][..., cs].unsqueeze(-2) * B_s[t][..., cs]
                states.append(h)
            g_next = incoming[..., cs]
            parts = {k: [None] * steps for k in grads}
            for t in reversed(range(steps)):
                dy_t = dy_s[t][..., cs].unsqueeze(-2)
                g = g_next + C_s[t][..., cs] * dy_t            # dL/dh_t
                beta = du_s[t][..., cs].unsqueeze(-2) * B_s[t][..., cs]
                w = g * (states[t] - beta)                      # dL/da_t * a_t
                q = (g * B_s[t][..., cs]).sum(-2)               # (b, G, dg, m)
                d_t, u_t = d_s[t][..., cs], u_s[t][..., cs]
                parts["u"][t] = q * d_t
                parts["delta"][t] = q * u_t + (w * A_g).sum(-2)
                parts["B"][t] = (g * (d_t * u_t).unsqueeze(-2)).sum(2)
                parts["C"][t] = (states[t] * dy_t).sum(2)
                dA += (w * d_t.unsqueeze(-2)).sum((0, -1))
                g_next = decay_at(t, cs) * g
            for k in grads:
                grads[k].append(torch.stack(parts[k]))        # (T, ..., m)
        full = {k: torch.cat(v, dim=-1) for k, v in grads.items()}  # (T, ..., nc)

        def to_seq(x):
            return x.movedim(0, -1).flatten(-2)[..., :length]

        return (to_seq(full["u"]), to_seq(full["delta"]), dA.view_as(A), to_seq(full["B"]),
                to_seq(full["C"]), None)


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                           delta_softplus=False, return_last_state=False, chunk: int | None = None):
    """Pure-PyTorch chunked two-pass selective scan (see module docstring); differentiable."""
    u_in = u
    u, delta, A, B, C, groups = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, dim, length = u.shape
    steps = chunk or max(1, math.isqrt(length))
    grouped = (batch, groups, dim // groups, length)
    y, last = _ChunkedScan.apply(u.reshape(grouped), delta.reshape(grouped), A,
                                 B.contiguous(), C.contiguous(), steps)
    y = y.reshape(batch, dim, length)
    if D is not None:
        y = y + u * D.to(u.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(u.dtype))
    y = y.to(u_in.dtype)
    if return_last_state:
        return y, last.reshape(batch, dim, -1)
    return y


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                             delta_softplus=False, return_last_state=False):
    """Plain per-position loop: the ground truth for tests and the baseline for benchmarks."""
    u, delta, A, B, C, groups = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, dim, length = u.shape
    B = B.repeat_interleave(dim // groups, dim=1)  # (b, dim, N, L)
    C = C.repeat_interleave(dim // groups, dim=1)
    h = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] \
            * B[:, :, :, t]
        ys.append((h * C[:, :, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D.to(u.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(u.dtype))
    return (y, h) if return_last_state else y
