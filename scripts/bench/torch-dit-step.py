#!/usr/bin/python3
"""
PyTorch's side of `pnpm bench dit`: the official DiT model (models.py), its
diffusion training loss (ε-MSE + vb), AdamW, clip_grad_norm_(1.0) and an EMA
update of 0.9999, on the mini teacher's shape (8×8×4 latents, patch 2, 4 heads,
10 classes, learn_sigma), timed as `bench dit` times ours: median ms per step
and per no-grad forward, wall and process CPU.

Run it under Debian's python3-torch, beside `pnpm bench dit --backends wasm`,
on the same machine at the same time of day. None of the reference code is
committed: point --refs at a checkout of facebookresearch/DiT (models.py and
diffusion/). DiT imports three timm modules; Debian has no timm, so the stand-ins
below (same math and parameter names as timm 0.6's) are installed first.

--threads N pins every thread pool to N before torch loads: torch.set_num_threads
alone leaves OpenBLAS's own pool running (Debian's torch uses the system BLAS),
which then takes a second core, and "one thread" is not one core.

Usage (from the repository root):
  /usr/bin/python3 scripts/bench/torch-dit-step.py --refs /tmp/DiT --hidden 128 --threads 1
"""
import argparse
import os
import sys
import types

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--refs", required=True, help="a checkout of facebookresearch/DiT")
parser.add_argument("--hidden", type=int, default=128)
parser.add_argument("--depth", type=int, default=28)
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--steps", type=int, default=8, help="timed steps (and forwards), after one untimed of each")
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
if not os.path.isfile(os.path.join(args.refs, "models.py")):
    sys.exit(f"--refs {args.refs}: no models.py there (expected a checkout of facebookresearch/DiT)")
for pool in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[pool] = str(args.threads)

import copy  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402


class PatchEmbed(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, bias=True):
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim, num_heads=8, qkv_bias=False, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = self.attn_drop(((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, n, c)))


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features or in_features)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features or in_features, out_features or in_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x):
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


timm = types.ModuleType("timm")
timm.models = types.ModuleType("timm.models")
timm.models.vision_transformer = types.ModuleType("timm.models.vision_transformer")
for module in (PatchEmbed, Attention, Mlp):
    setattr(timm.models.vision_transformer, module.__name__, module)
sys.modules.update({"timm": timm, "timm.models": timm.models, "timm.models.vision_transformer": timm.models.vision_transformer})
sys.path.insert(0, args.refs)
from diffusion import create_diffusion  # noqa: E402
from models import DiT  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(0)
model = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=args.hidden, depth=args.depth, num_heads=4,
            mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=10, learn_sigma=True)
ema = copy.deepcopy(model).requires_grad_(False)
diffusion = create_diffusion(timestep_respacing="")
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
x = torch.randn(args.batch, 4, 8, 8)
y = torch.arange(args.batch) % 10


def step():
    t = torch.randint(0, diffusion.num_timesteps, (args.batch,))
    loss = diffusion.training_losses(model, x, t, dict(y=y))["loss"].mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.mul_(0.9999).add_(p, alpha=1 - 0.9999)


def forward():
    with torch.no_grad():
        model(x, torch.randint(0, 1000, (args.batch,)), y)


for f in (step, forward):
    f()
wall = {"train": [], "forward": []}
cpu = {"train": [], "forward": []}
for _ in range(args.steps):
    for name, f in (("train", step), ("forward", forward)):
        t0, c0 = time.perf_counter(), time.process_time()
        f()
        wall[name].append(1000 * (time.perf_counter() - t0))
        cpu[name].append(1000 * (time.process_time() - c0))
med = statistics.median
print(f"pytorch {torch.__version__}, {args.threads} thread(s), DiT(depth {args.depth}, hidden {args.hidden}), batch {args.batch}, "
      f"median of {args.steps}:")
print(f"  train   {med(wall['train']):7.1f} ms/step (fastest {min(wall['train']):.1f}), cpu {med(cpu['train']):.1f} ms/step")
print(f"  forward {med(wall['forward']):7.1f} ms      (fastest {min(wall['forward']):.1f}), cpu {med(cpu['forward']):.1f} ms")
