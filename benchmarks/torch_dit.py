"""A PyTorch DiT of flowjax's architecture, for the speed comparison in ``dit_step.py --device``.

Same network as :class:`flowjax.models.DiT` (patchify + linear embedding, fixed 2-D sin-cos
positions, timestep MLP(s) + label table, adaLN-Zero blocks with ``qkv -> SDPA -> proj`` and a
tanh-GELU MLP, modulated final layer), written for the benchmark from the architecture
description; the same parameter count as flowjax's model (checked by ``dit_step.py``). The
training steps mirror flowjax's: flow matching (``x_t = t x1 + (1 - t) x0``, target
``x1 - x0``) and MeanFlow (one ``torch.func.jvp`` of ``u(x, s, e)`` along ``(v, 1, 0)``,
stop-gradient target, adaptive weight ``p = 1``), bf16 autocast, AdamW, an EMA of the
parameters.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _sincos_2d(dim: int, grid: int) -> torch.Tensor:
    omega = 1.0 / 10000.0 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")

    def axis(pos):
        a = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(a), np.cos(a)], 1)

    return torch.from_numpy(np.concatenate([axis(cols), axis(rows)], 1).astype(np.float32))


class TimeMLP(nn.Module):
    def __init__(self, d: int, freq: int = 256):
        super().__init__()
        self.freq = freq
        self.fc1, self.fc2 = nn.Linear(freq, d), nn.Linear(d, d)

    def forward(self, t):
        half = self.freq // 2
        f = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
        a = t.float()[:, None] * f[None]
        return self.fc2(F.silu(self.fc1(torch.cat([torch.cos(a), torch.sin(a)], -1))))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.mod = nn.Linear(d, 6 * d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, int(d * mlp_ratio)), nn.Linear(int(d * mlp_ratio), d)

    def forward(self, x, c):
        b, t, d = x.shape
        s1, g1, a1, s2, g2, a2 = self.mod(F.silu(c)).float().chunk(6, -1)
        h = F.layer_norm(x, (d,), eps=1e-6) * (1 + g1[:, None]) + s1[:, None]
        q, k, v = self.qkv(h).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + a1[:, None] * self.proj(o).float()
        h = F.layer_norm(x, (d,), eps=1e-6) * (1 + g2[:, None]) + s2[:, None]
        return x + a2[:, None] * self.fc2(F.gelu(self.fc1(h), approximate="tanh")).float()


class TorchDiT(nn.Module):
    def __init__(self, *, patch_size, hidden_size, depth, num_heads, image=32, channels=4,
                 num_classes=1000, use_end_time=False):  # fmt: skip
        super().__init__()
        p, d = patch_size, hidden_size
        self.p, self.c, self.image = p, channels, image
        self.x_embed = nn.Linear(p * p * channels, d)
        self.register_buffer("pos", _sincos_2d(d, image // p), persistent=False)
        self.t_embed = TimeMLP(d)
        self.h_embed = TimeMLP(d) if use_end_time else None
        self.y_embed = nn.Embedding(num_classes + 1, d)
        self.blocks = nn.ModuleList(Block(d, num_heads) for _ in range(depth))
        self.final_mod, self.final = nn.Linear(d, 2 * d), nn.Linear(d, p * p * channels)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in [self.final_mod, self.final, *(blk.mod for blk in self.blocks)]:
            nn.init.zeros_(m.weight)

    def forward(self, x, t, y, t_end=None):  # x [B, H, W, C] like flowjax
        b, h, w, c = x.shape
        p = self.p
        tok = x.reshape(b, h // p, p, w // p, p, c).permute(0, 1, 3, 2, 4, 5)
        tok = self.x_embed(tok.reshape(b, -1, p * p * c)).float() + self.pos
        cond = self.t_embed(t) + self.y_embed(y)
        if self.h_embed is not None:
            cond = cond + self.h_embed(t_end - t)
        cond = cond.float()
        for blk in self.blocks:
            tok = blk(tok, cond)
        s, g = self.final_mod(F.silu(cond)).float().chunk(2, -1)
        out = F.layer_norm(tok, (tok.shape[-1],), eps=1e-6) * (1 + g[:, None]) + s[:, None]
        out = self.final(out).float().reshape(b, h // p, w // p, p, p, c)
        return out.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def make_step(model: TorchDiT, objective: str, compile_: bool):
    """One training step ``step(x1, y)``: loss, backward, AdamW, EMA (bf16 autocast)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=True)
    params = [q for q in model.parameters()]
    ema = [q.detach().clone() for q in params]

    def fm_loss(x1, y):
        x0 = torch.randn_like(x1)
        t = torch.rand(x1.shape[0], device=x1.device)
        xt = t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * x0
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(xt, t, y)
        return ((out - (x1 - x0)) ** 2).mean()

    def mf_loss(x1, y):
        b = x1.shape[0]
        x0 = torch.randn_like(x1)
        a, c = torch.rand(b, device=x1.device), torch.rand(b, device=x1.device)
        s, e = torch.minimum(a, c), torch.maximum(a, c)
        e = torch.where(torch.arange(b, device=x1.device) < int(0.75 * b), s, e)
        xs = s[:, None, None, None] * x1 + (1 - s[:, None, None, None]) * x0
        v = x1 - x0

        def net(x_, s_):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return model(x_, s_, y, t_end=e)

        u, du = torch.func.jvp(net, (xs, s), (v, torch.ones_like(s)))
        tgt = (v + (e - s).clamp(0, 1)[:, None, None, None] * du).detach()
        delta = ((u - tgt) ** 2).flatten(1).sum(1)
        return (delta / (delta + 0.01).detach()).mean()

    loss_fn = fm_loss if objective == "fm" else mf_loss
    if compile_:
        loss_fn = torch.compile(loss_fn)

    def step(x1, y):
        loss = loss_fn(x1, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1e-4)
        return loss

    return step
