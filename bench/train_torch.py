"""Training throughput of the same Llama configuration in PyTorch on the CPU,
for a side-by-side comparison with `tritlm train` (bench/bench_train.sh).
Benchmark only: tritlm itself never uses PyTorch.

usage: python3 bench/train_torch.py --dim 64 --hidden 172 --layers 5 --heads 8
       --kv-heads 4 --vocab 512 --ctx 256 --batch 16 --steps 30 --threads 2
Prints one JSON line with tokens_per_s (steps after the first 3 warm-up steps).
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def rope_tables(head_size, ctx, theta=10000.0):
    inv = 1.0 / (theta ** (torch.arange(0, head_size, 2).float() / head_size))
    ang = torch.outer(torch.arange(ctx).float(), inv)
    return torch.cos(ang), torch.sin(ang)


def apply_rope(x, cos, sin):
    # x: (B, H, T, hs); rotate consecutive pairs
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.nh, self.nkv, self.hs = a.heads, a.kv_heads, a.dim // a.heads
        self.attn_norm, self.ffn_norm = RMSNorm(a.dim), RMSNorm(a.dim)
        self.wq = nn.Linear(a.dim, a.dim, bias=False)
        self.wk = nn.Linear(a.dim, self.nkv * self.hs, bias=False)
        self.wv = nn.Linear(a.dim, self.nkv * self.hs, bias=False)
        self.wo = nn.Linear(a.dim, a.dim, bias=False)
        self.w1 = nn.Linear(a.dim, a.hidden, bias=False)
        self.w2 = nn.Linear(a.hidden, a.dim, bias=False)
        self.w3 = nn.Linear(a.dim, a.hidden, bias=False)
        self.register_buffer("mask", torch.triu(torch.ones(a.ctx, a.ctx, dtype=torch.bool), diagonal=1))

    def forward(self, x, cos, sin):
        B, T, D = x.shape
        h = self.attn_norm(x)
        q = self.wq(h).view(B, T, self.nh, self.hs).transpose(1, 2)
        k = self.wk(h).view(B, T, self.nkv, self.hs).transpose(1, 2)
        v = self.wv(h).view(B, T, self.nkv, self.hs).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        rep = self.nh // self.nkv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.hs)
        att = att.masked_fill(self.mask[:T, :T], float("-inf"))
        o = F.softmax(att, dim=-1) @ v
        x = x + self.wo(o.transpose(1, 2).reshape(B, T, D))
        h = self.ffn_norm(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class Model(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.emb = nn.Embedding(a.vocab, a.dim)
        self.blocks = nn.ModuleList(Block(a) for _ in range(a.layers))
        self.norm = RMSNorm(a.dim)
        cos, sin = rope_tables(a.dim // a.heads, a.ctx)
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)

    def forward(self, idx, targets):
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x, self.cos, self.sin)
        logits = self.norm(x) @ self.emb.weight.t()  # shared classifier
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def main():
    p = argparse.ArgumentParser()
    for name, val in [("dim", 64), ("hidden", 172), ("layers", 5), ("heads", 8), ("kv-heads", 4), ("vocab", 512),
                      ("ctx", 256), ("batch", 16), ("steps", 30), ("threads", 2)]:
        p.add_argument("--" + name, type=int, default=val)
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    model = Model(a)
    for name, prm in model.named_parameters():  # the same initialization as tritlm
        if prm.dim() > 1:
            std = 0.02 / math.sqrt(2 * a.layers) if name.endswith(("wo.weight", "w2.weight")) else 0.02
            nn.init.normal_(prm, 0.0, std)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    data = torch.randint(0, a.vocab, (a.steps + 3, a.batch, a.ctx + 1))
    times = []
    for s in range(a.steps + 3):
        t0 = time.perf_counter()
        loss = model(data[s, :, :-1], data[s, :, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    measured = times[3:]
    tps = a.batch * a.ctx * len(measured) / sum(measured)
    print(json.dumps({"framework": "pytorch " + torch.__version__, "threads": a.threads, "tokens_per_s": round(tps, 1),
                      "params": sum(p.numel() for p in model.parameters()), "loss": float(loss)}))


if __name__ == "__main__":
    main()
