#!/usr/bin/python3
"""
Writes the parity fixtures of the paper path: small files the TypeScript tests
read, made by the reference code run under Debian's python3-torch (and
python3-torchvision, python3-numpy). None of the reference code is committed:
point --refs at a folder holding checkouts of

  mseitzer+pytorch-fid        (src/pytorch_fid/inception.py)
  CompVis+latent-diffusion    (ldm/modules/diffusionmodules/model.py)
  diffusers                   (src/diffusers/pipelines/stable_diffusion/convert_from_ckpt.py)

Usage (from the repository root):  /usr/bin/python3 parity/write_fixtures.py --refs /tmp/ref17

Weights and inputs are not stored: every tensor is a hash of its state_dict key
and element index (`hashed`, mirrored by packages/tensor/src/fixtures/Hashed.ts),
so a fixture holds only the reference outputs and stays a few KB.
"""
import argparse
import ast
import collections
import json
import math
import os
import struct
import sys
import types

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- hashed values

def fnv1a(key):
    h = 0x811C9DC5
    for b in key.encode("utf-8"):
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def fmix32(x):
    x = x.astype(np.uint64)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    return x


def hashed(key, n, lo, hi):
    """n float32 values in [lo, hi): lo + (hi - lo) * fmix32(fnv1a(key) + i * 0x9E3779B9) / 2^32."""
    i = np.arange(n, dtype=np.uint64)
    x = fmix32((np.uint64(fnv1a(key)) + i * np.uint64(0x9E3779B9)) & np.uint64(0xFFFFFFFF))
    u = x.astype(np.float64) / 2.0**32
    return (lo + (hi - lo) * u).astype(np.float32)


def hashed_tensor(key, shape, lo, hi):
    return torch.from_numpy(hashed(key, int(np.prod(shape)), lo, hi).reshape(shape))


def nhwc_to_nchw(a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def to_nhwc(t):
    return np.ascontiguousarray(t.detach().numpy().transpose(0, 2, 3, 1))


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}}
    blobs, offset = [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")


# ---------------------------------------------------------------- SD-VAE (latent-diffusion's Encoder/Decoder)

def vae_value_range(key, shape):
    """The ranges packages/models/src/SdVae.test.ts draws each tensor from."""
    if "norm" in key.split(".")[-2]:
        return (0.5, 1.5) if key.endswith("weight") else (-0.1, 0.1)
    if key.endswith("bias"):
        return (-0.1, 0.1)
    fan_in = int(np.prod(shape[1:]))
    bound = math.sqrt(3.0 / fan_in)
    return (-bound, bound)


def load_functions(path, names, namespace):
    """Executes only the named top-level functions of a reference file (its imports need packages Debian lacks)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    body = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in names]
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), namespace)
    return namespace


def sd_vae(refs):
    # ldm imports einops at module level for layers the kl-f8 VAE does not use.
    einops = types.ModuleType("einops")
    einops.rearrange = einops.repeat = lambda *a, **k: (_ for _ in ()).throw(NotImplementedError())
    sys.modules["einops"] = einops
    sys.path.insert(0, os.path.join(refs, "CompVis+latent-diffusion"))
    from ldm.modules.diffusionmodules.model import Decoder, Encoder

    # kl-f8's ddconfig with narrow channels: 4 levels, 2 resnets per level, mid attention only.
    ddconfig = dict(double_z=True, z_channels=4, resolution=32, in_channels=3, out_ch=3, ch=32,
                    ch_mult=[1, 2, 2, 2], num_res_blocks=2, attn_resolutions=[], dropout=0.0)
    model = torch.nn.Module()
    model.encoder = Encoder(**ddconfig)
    model.decoder = Decoder(**ddconfig)
    model.quant_conv = torch.nn.Conv2d(8, 8, 1)
    model.post_quant_conv = torch.nn.Conv2d(4, 4, 1)
    state = collections.OrderedDict(
        (k, hashed_tensor(k, tuple(v.shape), *vae_value_range(k, tuple(v.shape)))) for k, v in model.state_dict().items()
    )
    model.load_state_dict(state)
    model.eval()

    x = hashed("input", 2 * 32 * 32 * 3, -1.0, 1.0).reshape(2, 32, 32, 3)
    z = hashed("latent", 2 * 4 * 4 * 4, -2.0, 2.0).reshape(2, 4, 4, 4)
    with torch.no_grad():
        moments = model.quant_conv(model.encoder(nhwc_to_nchw(x)))
        decoded = model.decoder(model.post_quant_conv(nhwc_to_nchw(z)))

    # diffusers' own converter of the original layout (convert_from_ckpt.py), run on these tensors:
    # which diffusers key holds which original tensor, and in what shape.
    names = {"shave_segments", "renew_vae_resnet_paths", "renew_vae_attention_paths", "assign_to_checkpoint",
             "conv_attn_to_linear", "convert_ldm_vae_checkpoint"}
    ns = load_functions(os.path.join(refs, "diffusers/src/diffusers/pipelines/stable_diffusion/convert_from_ckpt.py"),
                        names, {"torch": torch})
    converted = ns["convert_ldm_vae_checkpoint"](dict(state), {})
    by_storage = {v.data_ptr(): k for k, v in state.items()}
    diffusers = [[k, by_storage[v.data_ptr()], list(v.shape)] for k, v in converted.items()]
    assert len(diffusers) == len(state), "the converter dropped or added tensors"

    write_safetensors(
        os.path.join(ROOT, "packages/models/src/fixtures/sd-vae.safetensors"),
        {"moments": to_nhwc(moments), "decoded": to_nhwc(decoded)},
        {
            "format": "tinyfusion/parity",
            "reference": "latent-diffusion ldm/modules/diffusionmodules/model.py Encoder, Decoder; diffusers convert_ldm_vae_checkpoint",
            "ddconfig": ddconfig,
            "original": [[k, list(v.shape)] for k, v in state.items()],
            "diffusers": diffusers,
        },
    )


# ---------------------------------------------------------------- FID Inception-V3 (pytorch-fid)

def inception_value_range(key, shape):
    """The ranges packages/data/src/Inception.test.ts draws each tensor from."""
    leaf = key.split(".")[-1]
    if ".bn." in key:
        return {"weight": (0.5, 1.5), "bias": (-0.1, 0.1), "running_mean": (-0.1, 0.1), "running_var": (0.5, 1.5)}[leaf]
    if key == "fc.bias":
        return (-0.1, 0.1)
    fan_in = int(np.prod(shape[1:]))
    bound = math.sqrt(6.0 / fan_in)
    return (-bound, bound)


def inception(refs):
    sys.path.insert(0, os.path.join(refs, "mseitzer+pytorch-fid/src"))
    from pytorch_fid import inception as fid

    shapes = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None).state_dict()
    state = collections.OrderedDict()
    for k, v in shapes.items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.zeros((), dtype=torch.long)
        else:
            state[k] = hashed_tensor(k, tuple(v.shape), *inception_value_range(k, tuple(v.shape)))
    fid.load_state_dict_from_url = lambda *a, **k: state
    model = fid.InceptionV3([3], resize_input=False, normalize_input=True)
    model.eval()
    net = fid.fid_inception_v3()
    net.load_state_dict(state)

    spatial = {}
    hook = model.blocks[2][6].branch1x1.register_forward_hook(lambda m, i, o: spatial.setdefault("out", o))
    assert model.blocks[2][6] is not None and type(model.blocks[2][6]).__name__ == "FIDInceptionC"  # Mixed_6d
    side = 139
    x = hashed("input", 2 * side * side * 3, 0.0, 1.0).reshape(2, side, side, 3)
    with torch.no_grad():
        (pool,) = model(nhwc_to_nchw(x))
        pool = pool[:, :, 0, 0]
        logits = pool @ state["fc.weight"].T
    hook.remove()
    spatial7 = to_nhwc(spatial["out"][:, :7]).reshape(2, -1)

    write_safetensors(
        os.path.join(ROOT, "packages/data/src/fixtures/inception.safetensors"),
        {"pool": pool.numpy(), "spatial": spatial7, "logits": logits.numpy()},
        {
            "format": "tinyfusion/parity",
            "reference": "pytorch-fid src/pytorch_fid/inception.py InceptionV3(resize_input=False) on fid_inception_v3()",
            "side": str(side),
            "keys": [[k, list(v.shape)] for k, v in state.items()],
        },
    )


# ---------------------------------------------------------------- PyTorch files (torch.save)

def dit_state(prefix, depth=2, hidden=16, patch=2, channels=4, size=8, classes=10, learn_sigma=True, attention=None, mlp=None):
    """A tiny DiT's state_dict in DiT's key order (models.py), values hashed by `prefix`+key; `attention` (heads x head
    width) and `mlp` narrower than hidden and 4 x hidden make a width-pruned one (Diff-Pruning's shapes)."""
    out = channels * 2 if learn_sigma else channels
    attention = attention or hidden
    mlp = mlp or 4 * hidden
    shapes = [("pos_embed", (1, (size // patch) ** 2, hidden)), ("x_embedder.proj.weight", (hidden, channels, patch, patch)),
              ("x_embedder.proj.bias", (hidden,)), ("t_embedder.mlp.0.weight", (hidden, 256)), ("t_embedder.mlp.0.bias", (hidden,)),
              ("t_embedder.mlp.2.weight", (hidden, hidden)), ("t_embedder.mlp.2.bias", (hidden,)),
              ("y_embedder.embedding_table.weight", (classes + 1, hidden))]
    for i in range(depth):
        for name, o, n in [("attn.qkv", 3 * attention, hidden), ("attn.proj", hidden, attention), ("mlp.fc1", mlp, hidden),
                           ("mlp.fc2", hidden, mlp), ("adaLN_modulation.1", 6 * hidden, hidden)]:
            shapes += [(f"blocks.{i}.{name}.weight", (o, n)), (f"blocks.{i}.{name}.bias", (o,))]
    shapes += [("final_layer.linear.weight", (patch * patch * out, hidden)), ("final_layer.linear.bias", (patch * patch * out,)),
               ("final_layer.adaLN_modulation.1.weight", (2 * hidden, hidden)), ("final_layer.adaLN_modulation.1.bias", (2 * hidden,))]
    return collections.OrderedDict((k, hashed_tensor(prefix + k, s, -1.0, 1.0)) for k, s in shapes)


def torch_files():
    def save(name, obj, legacy=False, package="tensor"):
        path = os.path.join(ROOT, f"packages/{package}/src/fixtures/torch", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
        print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")

    # Every kind of value the reader meets: dtypes, views into a shared storage, nested containers.
    base = hashed_tensor("base", (2, 3), -1.0, 1.0)
    mixed = collections.OrderedDict([
        ("f32", base),
        ("transposed", base.t()),  # stride (1, 3): the same storage read column-first
        ("tail", base.view(-1)[2:5]),  # storage offset 2
        ("f16", hashed_tensor("f16", (4,), -2.0, 2.0).half()),
        ("bf16", hashed_tensor("bf16", (2, 2), -2.0, 2.0).bfloat16()),
        ("f64", torch.tensor([0.1, -2.5, 1e300], dtype=torch.float64)),
        ("i64", torch.tensor([3, -4, 5], dtype=torch.int64)),
        ("i64big", torch.tensor([2**40], dtype=torch.int64)),
        ("i32", torch.tensor([7, -8], dtype=torch.int32)),
        ("u8", torch.tensor([0, 255, 17], dtype=torch.uint8)),
        ("scalar", torch.tensor(1.5)),
        ("meta", {"step": 7, "lr": 1e-4, "name": "tiny", "flags": (True, None, False), "big": 2**40, "neg": -5,
                  "list": [1, 2.5, "x"], "args": argparse.Namespace(model="DiT-XL/2", epochs=3)}),
    ])
    save("mixed.pt", mixed)
    save("mixed-legacy.pt", mixed, legacy=True)

    # DiT's release (a bare state_dict) and a train.py checkpoint (model, ema, opt, args).
    save("dit-bare.pt", dit_state("bare/"), package="models")
    model, ema = dit_state("model/"), dit_state("ema/")
    params = [model["pos_embed"], model["x_embedder.proj.weight"]]
    opt = torch.optim.AdamW(params, lr=1e-4)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    # A width-pruned DiT's state_dict (Diff-Pruning keeps whole heads): 3 heads of width 8 in a 16-wide stream, MLP 40.
    save("dit-width.pt", dit_state("width/", attention=3 * 8, mlp=40), package="models")
    save("dit-train.pt", {"model": model, "ema": ema, "opt": opt.state_dict(), "args": argparse.Namespace(model="DiT-S/2"), "train_steps": 5},
         package="models")


# ---------------------------------------------------------------- npz (ADM batches)

def npz_files():
    folder = os.path.join(ROOT, "packages/data/src/fixtures/npz")
    os.makedirs(folder, exist_ok=True)

    def written(path):
        print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")

    # An ADM reference batch in miniature: arr_0 uint8 NHWC and float64 statistics, np.savez as ADM's.
    images = (np.arange(6 * 8 * 8 * 3) * 7 % 256).astype(np.uint8).reshape(6, 8, 8, 3)
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((40, 5))
    spatial = rng.standard_normal((40, 3))
    path = os.path.join(folder, "reference.npz")
    np.savez(path, arr_0=images, mu=feats.mean(0), sigma=np.cov(feats, rowvar=False), mu_s=spatial.mean(0),
             sigma_s=np.cov(spatial, rowvar=False))
    written(path)

    # Compressed entries and the dtypes and orders the reader must accept or refuse.
    path = os.path.join(folder, "mixed.npz")
    np.savez_compressed(path, f4=np.array([[1.5, -2.0, 3.25]], dtype="<f4"), i8=np.array([1, -2, 2**40], dtype="<i8"),
                        scalar=np.array(2.5), fortran=np.asfortranarray(np.arange(6, dtype="<f8").reshape(2, 3)),
                        big=np.array([1.0, 2.0], dtype=">f8"), text=np.array(["a", "b"]))
    written(path)

    # Format version 2.0 (a 4-byte header length).
    path = os.path.join(folder, "v2.npy")
    with open(path, "wb") as f:
        np.lib.format.write_array(f, np.arange(5, dtype="<i4"), version=(2, 0))
    written(path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--refs", required=True, help="folder of reference checkouts (see the docstring)")
    parser.add_argument("--only", choices=["sd-vae", "inception", "torch", "npz"])
    args = parser.parse_args()
    torch.manual_seed(0)
    steps = {"sd-vae": lambda: sd_vae(args.refs), "inception": lambda: inception(args.refs), "torch": torch_files, "npz": npz_files}
    for name, step in steps.items():
        if args.only in (None, name):
            step()
