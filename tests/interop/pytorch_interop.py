#!/usr/bin/env python3
"""Checkpoints move between gantry and PyTorch with no conversion, checked against real PyTorch.

Runs only where Debian's python3-torch is installed (scripts/install-deps.sh --optional); exits
77 (CTest: skipped) otherwise. Safetensors files are read and written here with struct + json
(the safetensors Python package is not packaged in Debian), PNGs decoded with zlib.

 1. gantry -> PyTorch: a dcgan_train checkpoint loads into the PyTorch DCGAN example's netG and
    netD with load_state_dict(strict=True) (same keys, shapes, dtypes), and netG.eval() on a
    latent batch gives the images dcgan_generate writes for the same latents (8-bit, +-1).
 2. PyTorch -> gantry: a PyTorch netG state_dict saved as safetensors generates, in
    dcgan_generate, the images PyTorch's netG.eval() generates.
 3. torch.save files, both ways: the PyTorch DCGAN example's netG_epoch_N.pth
    (torch.save(netG.state_dict())) and a training checkpoint {"netG": ..., "netD": ...,
    "epoch": N} (--key netG) generate PyTorch's images in dcgan_generate; gantry_convert turns
    gantry's checkpoint into .pth files that torch.load(weights_only=True) reads, strict, with
    PyTorch's dtypes, and whose generator gives gantry's images in PyTorch; dcgan_train
    --netG/--netD starts from the example's .pth files.
Usage: pytorch_interop.py BIN_DIR WORK_DIR
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

try:
    import numpy as np
    import torch
    import torch.nn as nn
except ImportError as e:
    print("SKIPPED: PyTorch is not installed (%s); scripts/install-deps.sh --optional installs it" % e)
    sys.exit(77)

BIN, WORK = sys.argv[1], sys.argv[2]
NZ, NGF, NDF, NC = 16, 8, 8, 1


# The PyTorch DCGAN example's models (github.com/pytorch/examples, dcgan/main.py), 64x64.
class NetG(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(NZ, NGF * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(NGF * 8), nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 8, NGF * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF * 4), nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 4, NGF * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF * 2), nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF), nn.ReLU(True),
            nn.ConvTranspose2d(NGF, NC, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, x):
        return self.main(x)


class NetD(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(NC, NDF, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 2, NDF * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 4, NDF * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, x):
        return self.main(x).view(-1, 1).squeeze(1)


DT = {"F32": (torch.float32, 4), "I64": (torch.int64, 8), "F64": (torch.float64, 8)}


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        dtype, _ = DT[e["dtype"]]
        b, end = e["data_offsets"]
        buf = bytearray(data[8 + n + b:8 + n + end])
        out[name] = torch.frombuffer(buf, dtype=dtype).reshape(e["shape"]).clone()
    return out


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        dt = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        blob = t.numpy().tobytes()
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_png(path):
    """8-bit gray or RGB, non-interlaced (what gantry writes)."""
    with open(path, "rb") as f:
        data = f.read()
    pos, idat, w = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", body[:10])
            ch = {0: 1, 2: 3}[color]
            assert depth == 8
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = w * ch
    img = np.zeros((h, stride), dtype=np.int32)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(h):
        ftype = raw[y * (stride + 1)]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, dtype=np.int32)
        for x in range(stride):
            a = cur[x - ch] if x >= ch else 0
            b = prev[x]
            c = prev[x - ch] if x >= ch else 0
            if ftype == 0: p = 0
            elif ftype == 1: p = a
            elif ftype == 2: p = b
            elif ftype == 3: p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + p) & 255
        img[y] = cur
        prev = cur
    return img.reshape(h, w, ch)


def to_uint8(x):
    # gantry's mapping: round((x + 1) / 2 * 255), clamped.
    return torch.clamp(torch.round((x + 1) / 2 * 255), 0, 255).to(torch.int32).numpy()


def compare(images, folder, what):
    worst = 0
    for i in range(images.shape[0]):
        png = read_png(os.path.join(folder, "%06d.png" % i))
        ref = to_uint8(images[i]).transpose(1, 2, 0)
        worst = max(worst, int(np.abs(png - ref).max()))
    print("%s: largest 8-bit difference %d" % (what, worst))
    if worst > 1:
        sys.exit("FAIL: %s: gantry's images differ from PyTorch's by %d levels" % (what, worst))


def run(*args):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("FAIL: %s exited %d:\n%s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
torch.manual_seed(0)
z = torch.randn(6, NZ, 1, 1)
save_safetensors(os.path.join(WORK, "z.safetensors"), {"z": z})

# 1. gantry -> PyTorch
run(os.path.join(BIN, "dcgan_train"), "--image-size", "64", "--nz", str(NZ), "--ngf", str(NGF), "--ndf", str(NDF),
    "--batch-size", "8", "--max-steps", "2", "--workers", "0", "--device", "cpu", "--out", os.path.join(WORK, "run"))
ck = os.path.join(WORK, "run", "checkpoints", open(os.path.join(WORK, "run", "checkpoints", "latest")).read().strip())
g_sd, d_sd = load_safetensors(os.path.join(ck, "generator.safetensors")), load_safetensors(os.path.join(ck, "discriminator.safetensors"))
netG, netD = NetG(), NetD()
assert list(g_sd) == list(netG.state_dict()), "generator keys or order differ:\n%s\n%s" % (list(g_sd), list(netG.state_dict()))
assert list(d_sd) == list(netD.state_dict()), "discriminator keys or order differ"
netG.load_state_dict(g_sd, strict=True)
netD.load_state_dict(d_sd, strict=True)
for sd, net in ((g_sd, netG), (d_sd, netD)):
    for k, v in net.state_dict().items():
        assert sd[k].dtype == v.dtype and sd[k].shape == v.shape, k
print("gantry checkpoint loads into PyTorch's netG/netD (strict): %d + %d tensors" % (len(g_sd), len(d_sd)))
assert int(g_sd["main.1.num_batches_tracked"]) > 0
netG.eval()
with torch.no_grad():
    ref = netG(z)
run(os.path.join(BIN, "dcgan_generate"), "--checkpoint", os.path.join(ck, "generator.safetensors"), "--latent",
    os.path.join(WORK, "z.safetensors"), "--out", os.path.join(WORK, "gantry_from_gantry"), "--device", "cpu")
compare(ref, os.path.join(WORK, "gantry_from_gantry"), "gantry-trained G, PyTorch vs gantry forward")

# 2. PyTorch -> gantry
torch.manual_seed(1)
netG2 = NetG()
for m in netG2.modules():  # the example's weights_init, then BN statistics that are not trivial
    if isinstance(m, nn.ConvTranspose2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.normal_(m.bias, 0.0, 0.1)
        m.running_mean.normal_(0, 0.1)
        m.running_var.uniform_(0.5, 1.5)
save_safetensors(os.path.join(WORK, "netG.safetensors"), netG2.state_dict())
netG2.eval()
with torch.no_grad():
    ref2 = netG2(z)
run(os.path.join(BIN, "dcgan_generate"), "--checkpoint", os.path.join(WORK, "netG.safetensors"), "--latent",
    os.path.join(WORK, "z.safetensors"), "--out", os.path.join(WORK, "gantry_from_pytorch"), "--device", "cpu")
compare(ref2, os.path.join(WORK, "gantry_from_pytorch"), "PyTorch G in gantry")

# 3. torch.save files, both ways (a build without libzip reads and writes safetensors only)
if os.environ.get("GANTRY_TORCH_FILES", "1") != "1":
    print("torch.save files: not checked, this gantry was built without libzip")
    print("PASS")
    sys.exit(0)
torch.save(netG2.state_dict(), os.path.join(WORK, "netG_epoch_24.pth"))
torch.save({"netG": netG2.state_dict(), "netD": NetD().state_dict(), "epoch": 24},
           os.path.join(WORK, "training.pth"))
torch.save({"z": z}, os.path.join(WORK, "z.pt"))
run(os.path.join(BIN, "dcgan_generate"), "--checkpoint", os.path.join(WORK, "netG_epoch_24.pth"), "--latent",
    os.path.join(WORK, "z.pt"), "--out", os.path.join(WORK, "gantry_from_pth"), "--device", "cpu")
compare(ref2, os.path.join(WORK, "gantry_from_pth"), "PyTorch G from torch.save in gantry")
# nn.DataParallel(netG).state_dict(): every name under "module."
torch.save({"module." + k: v for k, v in netG2.state_dict().items()}, os.path.join(WORK, "netG_dataparallel.pth"))
run(os.path.join(BIN, "dcgan_generate"), "--checkpoint", os.path.join(WORK, "netG_dataparallel.pth"), "--latent",
    os.path.join(WORK, "z.pt"), "--out", os.path.join(WORK, "gantry_from_dataparallel"), "--device", "cpu")
compare(ref2, os.path.join(WORK, "gantry_from_dataparallel"), "DataParallel netG (module.*) in gantry")
run(os.path.join(BIN, "dcgan_generate"), "--checkpoint", os.path.join(WORK, "training.pth"), "--key", "netG",
    "--latent", os.path.join(WORK, "z.pt"), "--out", os.path.join(WORK, "gantry_from_training_pth"), "--device", "cpu")
compare(ref2, os.path.join(WORK, "gantry_from_training_pth"), "netG of a torch training checkpoint in gantry")
for name, net in (("generator", NetG()), ("discriminator", NetD())):
    pth = os.path.join(WORK, name + ".pth")
    run(os.path.join(BIN, "gantry_convert"), os.path.join(ck, name + ".safetensors"), pth)
    kw = {"weights_only": True} if "weights_only" in torch.load.__code__.co_varnames else {}
    sd = torch.load(pth, **kw)
    assert list(sd) == list(net.state_dict()), "%s: keys or order differ" % name
    for k, v in net.state_dict().items():
        assert sd[k].dtype == v.dtype and sd[k].shape == v.shape, "%s: %s is %s %s" % (name, k, sd[k].dtype, sd[k].shape)
    net.load_state_dict(sd, strict=True)
    ref_sd = load_safetensors(os.path.join(ck, name + ".safetensors"))
    assert all(torch.equal(sd[k], ref_sd[k]) for k in sd), name + ": values differ from the safetensors file"
    if name == "generator":
        net.eval()
        with torch.no_grad():
            compare(net(z), os.path.join(WORK, "gantry_from_gantry"), "gantry G through .pth, in PyTorch")
# dcgan_train --netG/--netD with the PyTorch example's own checkpoint files
torch.save(NetD().state_dict(), os.path.join(WORK, "netD_epoch_24.pth"))
run(os.path.join(BIN, "dcgan_train"), "--image-size", "64", "--nz", str(NZ), "--ngf", str(NGF), "--ndf", str(NDF),
    "--batch-size", "8", "--max-steps", "1", "--workers", "0", "--device", "cpu",
    "--netG", os.path.join(WORK, "netG_epoch_24.pth"), "--netD", os.path.join(WORK, "netD_epoch_24.pth"),
    "--out", os.path.join(WORK, "run_from_pth"))

# 4. A whole training run, both ways, with the optimizer state.
# gantry -> PyTorch: gantry_convert RUN ck.pth loads into the example's netG/netD and two
# torch.optim.Adam (whose load_state_dict takes the file's lr and betas), every state tensor on
# the parameter of its shape with gantry's values and step count, and PyTorch trains on from it.
run(os.path.join(BIN, "gantry_convert"), os.path.join(WORK, "run"), os.path.join(WORK, "run.pth"))
# weights_only=True only from PyTorch 2.0: 1.13's restricted unpickler has no float opcode, so
# it cannot read any optimizer state_dict, its own included.
kw = {"weights_only": True} if int(torch.__version__.split(".")[0]) >= 2 else {}
tck = torch.load(os.path.join(WORK, "run.pth"), **kw)
assert list(tck)[:4] == ["netG", "netD", "optimizerG", "optimizerD"], list(tck)
assert tck["step"] == 2 and tck["epoch"] == 0
netG3, netD3 = NetG(), NetD()
netG3.load_state_dict(tck["netG"], strict=True)
netD3.load_state_dict(tck["netD"], strict=True)
optG = torch.optim.Adam(netG3.parameters(), lr=0.1, betas=(0.9, 0.9))
optD = torch.optim.Adam(netD3.parameters(), lr=0.1, betas=(0.9, 0.9))
optG.load_state_dict(tck["optimizerG"])
optD.load_state_dict(tck["optimizerD"])
for opt, net, name in ((optG, netG3, "optimizer_g"), (optD, netD3, "optimizer_d")):
    g = opt.param_groups[0]
    assert g["lr"] == 0.0002 and g["betas"] == (0.5, 0.999), g
    ref = load_safetensors(os.path.join(ck, name + ".safetensors"))
    for i, p in enumerate(net.parameters()):
        st = opt.state[p]
        assert float(st["step"]) == 2, (name, i, st["step"])
        for f in ("exp_avg", "exp_avg_sq"):
            assert st[f].shape == p.shape, "%s: state %d %s has shape %s, its parameter %s" % (name, i, f, st[f].shape, p.shape)
            assert torch.equal(st[f], ref["state.%d.%s" % (i, f)]), "%s: state %d %s differs from gantry's" % (name, i, f)
real = torch.rand(8, NC, 64, 64) * 2 - 1
before = [p.detach().clone() for p in netG3.parameters()]
netD3.zero_grad()
fake = netG3(torch.randn(8, NZ, 1, 1))
bce = nn.BCELoss()
(bce(netD3(real), torch.ones(8)) + bce(netD3(fake.detach()), torch.zeros(8))).backward()
optD.step()
netG3.zero_grad()
bce(netD3(fake), torch.ones(8)).backward()
optG.step()
assert all(float(optG.state[p]["step"]) == 3 for p in netG3.parameters())
assert any(not torch.equal(a, p) for a, p in zip(before, netG3.parameters()))
print("gantry run -> torch training checkpoint: netG/netD strict, both Adam states on their parameters, "
      "PyTorch continues (step 3)")
# PyTorch -> gantry: a PyTorch run saved under its own names continues in dcgan_train
# --start-from (architecture, lr and Adam state from the file; the step counts go on).
torch.save({"generator": netG3.state_dict(), "discriminator": netD3.state_dict(),
            "g_optimizer": optG.state_dict(), "d_optimizer": optD.state_dict(), "epoch": 0},
           os.path.join(WORK, "pytorch_run.pth"))
r = subprocess.run([os.path.join(BIN, "dcgan_train"), "--start-from", os.path.join(WORK, "pytorch_run.pth"),
                    "--batch-size", "8", "--max-steps", "1", "--workers", "0", "--device", "cpu",
                    "--out", os.path.join(WORK, "run_from_pytorch")], capture_output=True, text=True)
if r.returncode != 0:
    sys.exit("FAIL: dcgan_train --start-from: %s%s" % (r.stdout, r.stderr))
want = "generator 'generator', discriminator 'discriminator', Adam state 'g_optimizer' (step 3), Adam state 'd_optimizer' (step 3)"
assert want in r.stdout, r.stdout
ck2 = os.path.join(WORK, "run_from_pytorch", "checkpoints", open(os.path.join(WORK, "run_from_pytorch", "checkpoints", "latest")).read().strip())
st2 = load_safetensors(os.path.join(ck2, "optimizer_g.safetensors"))
assert int(st2["state.0.step"]) == 4, st2["state.0.step"]
print("PyTorch run -> dcgan_train --start-from: found by shape, Adam continues (step 4)")
# 5. Spectral norm and the hinge loss (SNGAN), both ways, in each of PyTorch's two forms:
# gantry's D with --spectral-norm (--spectral-norm-form parametrizations) loads strictly into the
# example's netD with torch.nn.utils.spectral_norm (torch.nn.utils.parametrizations.spectral_norm,
# PyTorch 2's) on every conv, with the same names in the same order, and its weight is then
# W / (u.(W v)) from the file's u, v (as gantry's in eval mode); PyTorch trains a hinge step on
# it and dcgan_train --start-from takes the spectral norm and its form from the file.
x = torch.rand(4, NC, 64, 64) * 2 - 1


def gantry_run_as_torch(name, *flags):
    """A 2-step dcgan_train run of the models above with `flags`, as gantry_convert's torch.save file."""
    run(os.path.join(BIN, "dcgan_train"), "--image-size", "64", "--nz", str(NZ), "--ngf", str(NGF), "--ndf", str(NDF),
        "--batch-size", "8", "--max-steps", "2", "--workers", "0", "--device", "cpu", *flags, "--out", os.path.join(WORK, name))
    run(os.path.join(BIN, "gantry_convert"), os.path.join(WORK, name), os.path.join(WORK, name + ".pth"))
    return torch.load(os.path.join(WORK, name + ".pth"))


def netD_replacing(kind, make, ck):
    """The example's netD with each `kind` layer m replaced by make(m), loaded strictly from ck["netD"]."""
    d = NetD()
    for i, m in enumerate(d.main):
        if isinstance(m, kind):
            d.main[i] = make(m)
    d.load_state_dict(ck["netD"], strict=True)
    assert list(ck["netD"].keys()) == list(d.state_dict().keys()), list(ck["netD"].keys())[:4]
    return d


def pytorch_d_step(ck, netD, d_loss):
    """One Adam step of netD (its state from ck) on PyTorch's d_loss(scores, fake), saved as a torch
    training checkpoint for dcgan_train --start-from; returns its path."""
    optD = torch.optim.Adam(netD.parameters(), lr=0.1)
    optD.load_state_dict(ck["optimizerD"])
    netD.train()
    netG = NetG()
    netG.load_state_dict(ck["netG"], strict=True)
    netD.zero_grad()
    d_loss(netD.main[:-1], netG(torch.randn(8, NZ, 1, 1)).detach()).backward()
    optD.step()
    path = os.path.join(WORK, "pytorch_step_%d.pth" % id(netD))
    torch.save({"netG": ck["netG"], "netD": netD.state_dict(), "optimizerG": ck["optimizerG"],
                "optimizerD": optD.state_dict()}, path)
    return path


def continue_in_gantry(path, what, start_line, *flags):
    r = subprocess.run([os.path.join(BIN, "dcgan_train"), "--start-from", path, *flags, "--batch-size", "8", "--max-steps",
                        "1", "--workers", "0", "--device", "cpu", "--out", path[:-4] + "_from_pytorch"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("FAIL: dcgan_train --start-from %s: %s%s" % (what, r.stdout, r.stderr))
    assert "Adam state 'optimizerD' (step 3)" in r.stdout and start_line in r.stdout, r.stdout


def spectral_norm_round_trip(form, wrap, w_key, u_key, v_key, start_line):
    ck = gantry_run_as_torch("run_sn_" + form, "--loss", "hinge", "--spectral-norm", "--spectral-norm-form", form)
    netD_sn = netD_replacing(nn.Conv2d, wrap, ck)
    netD_sn.eval()
    with torch.no_grad():
        netD_sn(x)  # the classic form's pre-forward hook sets .weight (in eval: from the stored u, v)
        w, u, v = ck["netD"][w_key], ck["netD"][u_key], ck["netD"][v_key]
        assert torch.allclose(netD_sn.main[0].weight, w / torch.dot(u, w.reshape(w.shape[0], -1) @ v), rtol=1e-6)
    hinge = lambda scores, fake: torch.relu(1 - scores(x).view(-1)).mean() + torch.relu(1 + scores(fake).view(-1)).mean()
    continue_in_gantry(pytorch_d_step(ck, netD_sn, hinge), "a %s spectral-norm run" % form, start_line, "--loss", "hinge")
    print("spectral norm, %s form: gantry's D loads into PyTorch's convs (strict, same names and order, same "
          "weight/sigma), PyTorch's hinge step continues in dcgan_train --start-from" % form)


spectral_norm_round_trip("classic", nn.utils.spectral_norm, "main.0.weight_orig", "main.0.weight_u", "main.0.weight_v",
                         "spectral norm in D,")
spectral_norm_round_trip("parametrizations", nn.utils.parametrizations.spectral_norm,
                         "main.0.parametrizations.weight.original", "main.0.parametrizations.weight.0._u",
                         "main.0.parametrizations.weight.0._v", "spectral norm in D (parametrizations)")


# gantry's D with --d-norm layer / instance (a WGAN-GP run) loads strictly into the example's netD
# with nn.GroupNorm(1, C) / nn.InstanceNorm2d(C, affine=True) in BatchNorm2d's places; PyTorch
# takes a WGAN-GP step on it (torch.autograd.grad through the norm) and dcgan_train --start-from
# --d-norm continues that.
def wgan_gp(scores, fake):
    e = torch.rand(8, 1, 1, 1)
    x_hat = (e * x.repeat(2, 1, 1, 1) + (1 - e) * fake).requires_grad_(True)
    g, = torch.autograd.grad(scores(x_hat).sum(), x_hat, create_graph=True)
    return scores(fake).mean() - scores(x).mean() + 10 * ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()


def d_norm_round_trip(norm, make):
    ck = gantry_run_as_torch("run_dnorm_" + norm, "--loss", "wgan", "--gp", "10", "--d-norm", norm)
    assert ck["d_norm"] == norm, ck.get("d_norm")  # gantry_convert records the norm
    netD_n = netD_replacing(nn.BatchNorm2d, lambda m: make(m.num_features), ck)
    path = pytorch_d_step(ck, netD_n, wgan_gp)
    # PyTorch's own file does not say which norm it has: --start-from asks for --d-norm.
    r = subprocess.run([os.path.join(BIN, "dcgan_train"), "--start-from", path, "--loss", "wgan", "--gp", "10",
                        "--max-steps", "1", "--device", "cpu", "--out", path + "_x"], capture_output=True, text=True)
    assert r.returncode != 0 and "say which with --d-norm instance or --d-norm layer" in r.stdout + r.stderr, r.stdout + r.stderr
    continue_in_gantry(path, "a --d-norm %s run" % norm, norm + " norm in D", "--loss", "wgan", "--gp", "10", "--d-norm", norm)
    print("--d-norm %s: gantry's D loads into PyTorch's with %s (strict, same names and order), PyTorch's "
          "WGAN-GP step continues in dcgan_train --start-from" % (norm, type(make(4)).__name__))


d_norm_round_trip("layer", lambda c: nn.GroupNorm(1, c))
d_norm_round_trip("instance", lambda c: nn.InstanceNorm2d(c, affine=True))
print("torch.save files: read (plain, --key netG, latents, dcgan_train --netG/--netD) and written "
      "(torch.load weights_only=True, strict)")
print("PASS")
