#!/usr/bin/env python3
"""Writes the torch.save files that tests/test_torch_checkpoint.cpp reads (tests/data/torch_*).

They are written once with real PyTorch (Debian's python3-torch 1.13) and committed, so the
reader is tested against PyTorch's own output on machines without PyTorch. Every value is
exact (small integers, halves, quarters), so the C++ test can assert it without PyTorch.
Usage: /usr/bin/python3 tests/interop/make_torch_fixtures.py tests/data
"""
import collections
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_dcgan import dcgan32  # noqa: E402

out = sys.argv[1]

# A state_dict with PyTorch's names and dtypes (conv + batch norm, num_batches_tracked int64).
net = collections.OrderedDict([
    ("main.0.weight", torch.arange(18, dtype=torch.float32).reshape(2, 1, 3, 3) / 8),
    ("main.1.weight", torch.tensor([1.0, 0.5])),
    ("main.1.bias", torch.tensor([-0.25, 0.125])),
    ("main.1.running_mean", torch.tensor([0.5, -0.5])),
    ("main.1.running_var", torch.tensor([2.0, 4.0])),
    ("main.1.num_batches_tracked", torch.tensor(7)),
])
base = torch.arange(12, dtype=torch.float64).reshape(3, 4)
checkpoint = {
    "netG": net,
    "epoch": 5,
    "lr": 0.0002,
    "name": "dcgan",
    "flag": True,
    "none": None,
    "betas": (0.5, 0.999),
    "view": base.t()[1:],          # offset 1, strides (1, 4): a view, not a copy
    "row0": base[0],               # two views of one storage
    "row2": base[2],
    "param": nn.Parameter(torch.tensor([1.0, -1.0])),
    "bf16": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
    "f16": torch.tensor([0.5, 65504.0], dtype=torch.float16),
    "bool": torch.tensor([True, False, True]),
    "u8": torch.tensor([0, 7, 255], dtype=torch.uint8),
    "i8": torch.tensor([-128, 127], dtype=torch.int8),
    "i16": torch.tensor([-300], dtype=torch.int16),
    "i32": torch.tensor([-3, 4], dtype=torch.int32),
    "empty": torch.zeros(0, 3),
    "optG": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.full((2,), 0.25)}},
             "param_groups": [{"lr": 0.0002, "params": [0]}]},
}
torch.save(checkpoint, os.path.join(out, "torch_1_13_checkpoint.pth"))
# A training script's checkpoint often carries numpy scalars (a best score, a step count).
import numpy as np
torch.save({"netG": {"w": torch.tensor([1.0, 2.0])}, "best_kid": np.float64(0.03125),
            "step": np.int64(1200), "ok": np.bool_(True), "hist": np.arange(3, dtype=np.float32)},
           os.path.join(out, "torch_1_13_numpy_meta.pth"))
# A DCGAN training run as a PyTorch script saves it, after two steps of the example's loop, under
# names other than netG/netD (gantry finds the models by their shapes), and the step after it:
# fixed gradients for G's parameters and G's parameters after optimizerG.step() with them, so
# the C++ test checks that gantry's Adam continues exactly where PyTorch's stopped.
torch.manual_seed(7)
G, D = dcgan32(8, 4, 4, 1)
optG = torch.optim.Adam(G.parameters(), lr=0.0002, betas=(0.5, 0.999))
optD = torch.optim.Adam(D.parameters(), lr=0.0002, betas=(0.5, 0.999))
bce = nn.BCELoss()
for _ in range(2):
    real = torch.rand(4, 1, 32, 32) * 2 - 1
    z = torch.randn(4, 8, 1, 1)
    D.zero_grad()
    fake = G(z)
    errD = bce(D(real).view(-1), torch.ones(4)) + bce(D(fake.detach()).view(-1), torch.zeros(4))
    errD.backward()
    optD.step()
    G.zero_grad()
    bce(D(fake).view(-1), torch.ones(4)).backward()
    optG.step()
torch.save({"G": G.state_dict(), "D": D.state_dict(), "opt_gen": optG.state_dict(),
            "opt_disc": optD.state_dict(), "epoch": 1}, os.path.join(out, "torch_1_13_dcgan_training.pth"))
grads = collections.OrderedDict()
for name, p in G.named_parameters():
    p.grad = torch.randn_like(p) * 0.01
    grads[name] = p.grad.clone()
optG.step()
torch.save({"grad": grads, "after": collections.OrderedDict((n, p.detach().clone()) for n, p in G.named_parameters())},
           os.path.join(out, "torch_1_13_dcgan_next_step.pth"))

# What gantry cannot read, each for its own reason.
torch.save(nn.Sequential(nn.Conv2d(1, 1, 1)), os.path.join(out, "torch_1_13_whole_model.pth"))
torch.save(net, os.path.join(out, "torch_1_13_legacy.pth"), _use_new_zipfile_serialization=False)
print("wrote", out, torch.__version__)
