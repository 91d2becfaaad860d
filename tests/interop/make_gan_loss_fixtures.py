#!/usr/bin/env python3
"""Writes tests/data/torch_1_13_gan_losses.pth, which tests/test_training.cpp reads.

One training step of the DCGAN (32x32 gray, nz 8, ngf = ndf = 4, batch 4) from the same
weights, real batch and latent batch, done by real PyTorch (Debian's python3-torch 1.13) with
each loss dcgan_train offers, written as a PyTorch script would write them:

  bce_smooth_ttur  nn.BCELoss on D's probabilities, real label 0.9 (one-sided smoothing),
                   Adam lr 1e-4 for G and 4e-4 for D (TTUR)
  hinge            D: relu(1 - s_real).mean() + relu(1 + s_fake).mean(), G: -s_fake.mean(),
                   on D's scores without its Sigmoid, lr 1e-4 / 4e-4
  lsgan            D: 0.5 (s_real - 0.9)^2 + 0.5 s_fake^2, G: 0.5 (s_fake - 1)^2 (means),
                   one lr 2e-4
  hinge_sn         hinge, lr 2e-4, with every conv of D wrapped in
                   torch.nn.utils.spectral_norm (its start: netD_sn, the same weights as
                   weight_orig and PyTorch's random u, v)
  bce_dsteps3      bce, lr 2e-4, three D updates per G update (n_critic 3) on the real
                   batches real, real2, real3 and latent batches z, z2, z3; G's update goes
                   through the last D update's fake batch, as the one-update step does
  hinge_sn_dsteps2 hinge_sn's start and loss, two D updates (real, real2; z, z2)
  hinge_psn        hinge, lr 2e-4, D's convs wrapped in torch.nn.utils.parametrizations.
                   spectral_norm instead (PyTorch 2's; its start: netD_psn, D0's weights as
                   parametrizations.weight.original, u and v 15 power iterations in)
  bce_r1           bce, lr 2e-4, with the R1 penalty (gamma 1): (gamma/2) times the batch mean
                   of |d s(x) / dx|^2 on the real batch, s = D's scores, through
                   torch.autograd.grad(..., create_graph=True)
  wgan_gp          D: s_fake.mean() - s_real.mean() + 10 (|d s(x^) / dx^| - 1)^2 (mean) at
                   x^ = e real + (1 - e) fake, e = mix (per image); G: -s_fake.mean(); lr 1e-4
  wgan_gp_ln       wgan_gp with the paper's critic: D's BatchNorm2d layers replaced by
                   nn.GroupNorm(1, C) (layer norm with a per-channel affine; start netD_ln:
                   D0's convs, the BN weights as GN's, a random GN bias)
  bce_r1_in        bce_r1 with nn.InstanceNorm2d(C, affine=True) in place of BN (netD_in)
  wgan_gp_none     wgan_gp with nn.Identity() in place of BN (netD_none: D0's convs)

For each: the losses, mean sigmoid(s) on real / fake before and after D's step, D's gradients
after its step, G's gradients, and both models' state after the step. The C++ test runs
DCGANTrainer::step(real, z) from the same start and compares.
Usage: /usr/bin/python3 tests/interop/make_gan_loss_fixtures.py tests/data
"""
import collections
import copy
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_dcgan import dcgan32, weights_init  # noqa: E402

out = sys.argv[1]
NZ, NGF, NDF, NC, N = 8, 4, 4, 1, 4


torch.manual_seed(11)
G0, D0 = dcgan32(NZ, NGF, NDF, NC)
G0.apply(weights_init)
D0.apply(weights_init)
real = torch.rand(N, NC, 32, 32) * 2 - 1
z = torch.randn(N, NZ, 1, 1)


def input_grad_sq_norms(s, x):
    g, = torch.autograd.grad(s.sum(), x, create_graph=True)
    return g.pow(2).sum([1, 2, 3])


def step(loss, lr_g, lr_d, real_label, D_start=None, batches=None, r1=0.0, gp=0.0, mix=None):
    batches = batches or [(real, z)]
    G, D = copy.deepcopy(G0), copy.deepcopy(D0 if D_start is None else D_start)
    optG = torch.optim.Adam(G.parameters(), lr=lr_g, betas=(0.5, 0.999))
    optD = torch.optim.Adam(D.parameters(), lr=lr_d, betas=(0.5, 0.999))
    scores = D.main[:-1]  # D without its Sigmoid

    def d_out(x):
        return (D(x) if loss == "bce" else scores(x)).view(-1)

    def prob(o):
        return o if loss == "bce" else torch.sigmoid(o)

    def d_loss(o, is_real):
        target = torch.full((N,), real_label if is_real else 0.0)
        if loss == "bce":
            return nn.BCELoss()(o, target)
        if loss == "hinge":
            return torch.relu(1 - o).mean() if is_real else torch.relu(1 + o).mean()
        if loss == "wgan":
            return -o.mean() if is_real else o.mean()
        return 0.5 * ((o - target) ** 2).mean()

    def g_loss(o):
        if loss == "bce":
            return nn.BCELoss()(o, torch.ones(N))
        if loss in ("hinge", "wgan"):
            return -o.mean()
        return 0.5 * ((o - 1) ** 2).mean()

    for x, zk in batches:  # D's updates; the stats below are the last one's
        D.zero_grad()
        if r1:
            x = x.detach().requires_grad_(True)
            s_real = scores(x).view(-1)
            out_real = torch.sigmoid(s_real) if loss == "bce" else s_real
            penalty = r1 / 2 * input_grad_sq_norms(s_real, x).mean()
        else:
            out_real = d_out(x)
        err_real = d_loss(out_real, True)
        (err_real + penalty if r1 else err_real).backward()
        fake = G(zk)
        out_fake = d_out(fake.detach())
        err_fake = d_loss(out_fake, False)
        err_fake.backward()
        if gp:
            e = mix.view(-1, 1, 1, 1)
            x_hat = (e * x.detach() + (1 - e) * fake.detach()).requires_grad_(True)
            norms = (input_grad_sq_norms(scores(x_hat).view(-1), x_hat) + 1e-12).sqrt()
            penalty = gp * ((norms - 1) ** 2).mean()
            penalty.backward()
        optD.step()
    d_grad = collections.OrderedDict((n, p.grad.clone()) for n, p in D.named_parameters())
    G.zero_grad()
    out_g = d_out(fake)
    err_g = g_loss(out_g)
    err_g.backward()
    optG.step()
    scalar = lambda v: v.detach().clone().reshape(())
    penalties = {"penalty": scalar(penalty)} if r1 or gp else {}
    return {
        **penalties,
        "loss_d": scalar(err_real + err_fake), "loss_g": scalar(err_g),
        "d_x": scalar(prob(out_real).mean()), "d_g_z1": scalar(prob(out_fake).mean()),
        "d_g_z2": scalar(prob(out_g).mean()),
        "d_grad": d_grad,
        "g_grad": collections.OrderedDict((n, p.grad.clone()) for n, p in G.named_parameters()),
        "netG": G.state_dict(), "netD": D.state_dict(),
    }


results = {
    "bce_smooth_ttur": step("bce", 1e-4, 4e-4, 0.9),
    "hinge": step("hinge", 1e-4, 4e-4, 1.0),
    "lsgan": step("lsgan", 2e-4, 2e-4, 0.9),
}
D0_sn = copy.deepcopy(D0)
for i, m in enumerate(D0_sn.main):
    if isinstance(m, nn.Conv2d):
        D0_sn.main[i] = nn.utils.spectral_norm(m)
results["hinge_sn"] = step("hinge", 2e-4, 2e-4, 1.0, D0_sn)
# Drawn after everything above, so the cases above see the same numbers as before these existed.
real2, real3 = torch.rand(N, NC, 32, 32) * 2 - 1, torch.rand(N, NC, 32, 32) * 2 - 1
z2, z3 = torch.randn(N, NZ, 1, 1), torch.randn(N, NZ, 1, 1)
results["bce_dsteps3"] = step("bce", 2e-4, 2e-4, 1.0, batches=[(real, z), (real2, z2), (real3, z3)])
results["hinge_sn_dsteps2"] = step("hinge", 2e-4, 2e-4, 1.0, D0_sn, batches=[(real, z), (real2, z2)])
D0_psn = copy.deepcopy(D0)
for i, m in enumerate(D0_psn.main):
    if isinstance(m, nn.Conv2d):
        D0_psn.main[i] = nn.utils.parametrizations.spectral_norm(m)
results["hinge_psn"] = step("hinge", 2e-4, 2e-4, 1.0, D0_psn)
mix = torch.rand(N)
results["bce_r1"] = step("bce", 2e-4, 2e-4, 1.0, r1=1.0)
results["wgan_gp"] = step("wgan", 1e-4, 1e-4, 1.0, gp=10.0, mix=mix)
# Drawn after everything above (the cases above see the same numbers as before these existed).
def replace_norms(make):
    d = copy.deepcopy(D0)
    for i, m in enumerate(d.main):
        if isinstance(m, nn.BatchNorm2d):
            n = make(m.num_features)
            if hasattr(n, "weight") and n.weight is not None:
                with torch.no_grad():
                    n.weight.copy_(m.weight)
                    n.bias.copy_(0.1 * torch.randn(m.num_features))
            d.main[i] = n
    return d


D0_ln = replace_norms(lambda c: nn.GroupNorm(1, c))
D0_in = replace_norms(lambda c: nn.InstanceNorm2d(c, affine=True))
D0_none = replace_norms(lambda c: nn.Identity())
results["wgan_gp_ln"] = step("wgan", 1e-4, 1e-4, 1.0, D0_ln, gp=10.0, mix=mix)
results["bce_r1_in"] = step("bce", 2e-4, 2e-4, 1.0, D0_in, r1=1.0)
results["wgan_gp_none"] = step("wgan", 1e-4, 1e-4, 1.0, D0_none, gp=10.0, mix=mix)
torch.save({
    "netG": G0.state_dict(), "netD": D0.state_dict(),
    "netD_ln": D0_ln.state_dict(), "netD_in": D0_in.state_dict(), "netD_none": D0_none.state_dict(), "netD_sn": D0_sn.state_dict(), "netD_psn": D0_psn.state_dict(), "real": real, "z": z,
    "real2": real2, "real3": real3, "z2": z2, "z3": z3, "mix": mix,
    **results,
}, os.path.join(out, "torch_1_13_gan_losses.pth"))
print("wrote", out, torch.__version__)
