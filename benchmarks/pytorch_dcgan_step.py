#!/usr/bin/env python3
"""The DCGAN training step of the PyTorch example (github.com/pytorch/examples, dcgan/main.py),
timed like gantry's benchmarks/dcgan_step: synthetic data, median ms/step after warm-up,
images/s, peak memory. Prints one JSON object per line with --json (the fields of dcgan_step).

Two step variants, both reported by compare_pytorch.sh:
  example  the example's exact step: the G update's backward also computes D's weight
           gradients (which the next netD.zero_grad() throws away);
  freeze   gantry's step: D's parameters have requires_grad off during the G update, so that
           backward skips them. The results (losses, updated weights) are identical.

--r1 G / --gp L add dcgan_train's gradient penalties to D's loss, written as PyTorch scripts
write them (torch.autograd.grad(..., create_graph=True)): R1 on the real batch's scores, and
with --gp the WGAN-GP penalty at real/fake interpolates with the wgan loss (as dcgan_step
--loss wgan --gp L). tests/interop/make_gan_loss_fixtures.py checks the same formulas against
gantry's step. --d-norm instance|layer|none puts nn.InstanceNorm2d(C, affine=True),
nn.GroupNorm(1, C) or nn.Identity() in place of D's BatchNorm2d (dcgan_train's --d-norm);
--r1-every K makes R1 lazy (on every K-th D update, weighted K; the mean over whole cycles).

CPU: run with Debian's python3-torch at /usr/bin/python3 and OpenBLAS' OpenMP build:
  LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp /usr/bin/python3 \
      benchmarks/pytorch_dcgan_step.py --config 64rgb_b128 --threads 2
"""
import argparse
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn

CONFIGS = {  # name: (image_size, nc, batch), as dcgan_step's
    "32gray_b128": (32, 1, 128),
    "64rgb_b64": (64, 3, 64),
    "64rgb_b128": (64, 3, 128),
}


def num_convs(image_size):
    return {32: 4, 64: 5, 128: 6}[image_size]


class Generator(nn.Module):
    """netG of the example (64x64: ConvT(nz,8g,4,1,0)-BN-ReLU, ConvT(8g,4g)...ConvT(g,nc)-Tanh);
    other sizes add or drop a stage, as gantry's models/dcgan.cpp."""

    def __init__(self, nz, ngf, nc, image_size):
        super().__init__()
        L = num_convs(image_size)
        mult = 1 << (L - 2)
        layers = [nn.ConvTranspose2d(nz, ngf * mult, 4, 1, 0, bias=False),
                  nn.BatchNorm2d(ngf * mult), nn.ReLU(True)]
        while mult > 1:
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(ngf * mult // 2), nn.ReLU(True)]
            mult //= 2
        layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x)


class Discriminator(nn.Module):
    """netD of the example (Conv(nc,d,4,2,1)-LReLU, Conv(d,2d)-BN-LReLU, ..., Conv(8d,1,4,1,0)-Sigmoid)."""

    def __init__(self, nc, ndf, image_size, norm="batch"):
        super().__init__()
        make_norm = {"batch": nn.BatchNorm2d, "instance": lambda c: nn.InstanceNorm2d(c, affine=True),
                     "layer": lambda c: nn.GroupNorm(1, c), "none": lambda c: nn.Identity()}[norm]
        L = num_convs(image_size)
        layers = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        mult = 1
        for _ in range(L - 2):
            layers += [nn.Conv2d(ndf * mult, ndf * mult * 2, 4, 2, 1, bias=False),
                       make_norm(ndf * mult * 2), nn.LeakyReLU(0.2, inplace=True)]
            mult *= 2
        layers += [nn.Conv2d(ndf * mult, 1, 4, 1, 0, bias=False), nn.Sigmoid()]
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x)


def weights_init(m):  # the example's
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


def run(config, mode, args, device):
    image_size, nc, batch = CONFIGS[config]
    if args.batch:
        batch = args.batch
    torch.manual_seed(args.seed)
    nz = 100
    netG = Generator(nz, 64, nc, image_size).to(device)
    netG.apply(weights_init)
    netD = Discriminator(nc, 64, image_size, args.d_norm).to(device)
    netD.apply(weights_init)
    criterion = nn.BCELoss()
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    Gf, Df = netG, netD
    if args.compile:
        if not hasattr(torch, "compile"):
            raise SystemExit("pytorch_dcgan_step: --compile needs PyTorch >= 2.0 (this is %s)" % torch.__version__)
        # Dynamo caches per code object, so the previous config's G/D would make this one's
        # shapes dynamic (less specialised graphs): start afresh, with static shapes.
        torch._dynamo.reset()
        Gf, Df = torch.compile(netG, dynamic=False), torch.compile(netD, dynamic=False)
    real = torch.rand(batch, nc, image_size, image_size, device=device) * 2 - 1
    real_label, fake_label = 1.0, 0.0
    freeze = mode == "freeze"

    wgan = args.gp > 0
    scores = netD.main[:-1]  # D without its Sigmoid: the raw scores the penalties differentiate

    def input_grad_sq_norms(s, x):
        g, = torch.autograd.grad(s.sum(), x, create_graph=True)
        return g.pow(2).sum([1, 2, 3])

    def d_loss(x, label, is_real):
        if wgan:
            s = scores(x).view(-1)
            return -s.mean() if is_real else s.mean()
        return criterion(Df(x).view(-1), label)

    updates = [0]  # D updates so far: lazy R1 (--r1-every) on every k-th, weighted k

    def step():
        # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
        netD.zero_grad()
        label = torch.full((batch,), real_label, dtype=torch.float, device=device)
        r1_now = args.r1 > 0 and updates[0] % args.r1_every == 0
        updates[0] += 1
        if r1_now:
            x = real.detach().requires_grad_(True)
            s = scores(x).view(-1)
            errD_real = (-s.mean() if wgan else criterion(torch.sigmoid(s), label))
            (errD_real + args.r1 * args.r1_every / 2 * input_grad_sq_norms(s, x).mean()).backward()
        else:
            errD_real = d_loss(real, label, True)
            errD_real.backward()
        noise = torch.randn(batch, nz, 1, 1, device=device)
        fake = Gf(noise)
        label.fill_(fake_label)
        errD_fake = d_loss(fake.detach(), label, False)
        errD_fake.backward()
        if wgan:
            e = torch.rand(batch, 1, 1, 1, device=device)
            x_hat = (e * real + (1 - e) * fake.detach()).requires_grad_(True)
            norms = (input_grad_sq_norms(scores(x_hat).view(-1), x_hat) + 1e-12).sqrt()
            (args.gp * ((norms - 1) ** 2).mean()).backward()
        optD.step()
        # (2) Update G: maximize log(D(G(z)))
        netG.zero_grad()
        label.fill_(real_label)
        if freeze:
            for p in netD.parameters():
                p.requires_grad_(False)
        errG = -scores(fake).view(-1).mean() if wgan else criterion(Df(fake).view(-1), label)
        errG.backward()
        if freeze:
            for p in netD.parameters():
                p.requires_grad_(True)
        optG.step()
        return (errD_real + errD_fake).item(), errG.item()

    times, cpu_times = [], []
    losses = (0.0, 0.0)
    # Lazy R1 makes the cost periodic: time whole cycles, report their mean (as dcgan_step).
    cycle = args.r1_every if args.r1 > 0 else 1
    timed = -(-args.steps // cycle) * cycle
    for i in range(args.warmup + timed):
        if device.type == "cuda":
            torch.cuda.synchronize()
            if i == args.warmup:  # the timed steps' peak, as gantry's (not the warm-up's searches)
                torch.cuda.reset_peak_memory_stats()
        t0, c0 = time.perf_counter(), time.process_time()
        losses = step()  # .item() synchronizes
        dt = (time.perf_counter() - t0) * 1e3
        if i >= args.warmup:
            times.append(dt)
            cpu_times.append((time.process_time() - c0) * 1e3)
    center = statistics.mean if cycle > 1 else statistics.median
    med = center(times)
    if device.type == "cuda":
        peak, peak_kind = torch.cuda.max_memory_allocated() / 2**20, "torch_cuda_max_allocated"
        machine = torch.cuda.get_device_name(0)
    else:
        peak, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "max_rss"
        machine = "%d torch threads" % torch.get_num_threads()
    return {
        "config": config, "device": device.type, "machine": machine, "batch": batch,
        "threads": torch.get_num_threads(), "steps": len(times), "warmup": args.warmup,
        "ms_per_step": med, "ms_min": min(times), "ms_max": max(times),
        "images_per_s": batch / (med * 1e-3), "cpu_ms_per_step": center(cpu_times), "peak_mib": peak, "peak_kind": peak_kind,
        "loss_d": losses[0], "loss_g": losses[1], "mode": mode, "r1": args.r1, "r1_every": args.r1_every, "gp": args.gp, "d_norm": args.d_norm,
        "torch": torch.__version__, "compiled": bool(args.compile),
        "cudnn_benchmark": bool(args.cudnn_benchmark) and device.type == "cuda",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--config", default="64rgb_b128",
                    help="all or a comma list of " + ", ".join(CONFIGS))
    ap.add_argument("--mode", default="example", choices=["example", "freeze", "both"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave)")
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="torch.compile G and D (PyTorch >= 2)")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="torch.backends.cudnn.benchmark = True: cuDNN's algorithms timed once per "
                         "shape, as gantry's cuDNN paths always do (PyTorch's default is off)")
    ap.add_argument("--r1", type=float, default=0.0, help="R1 penalty weight gamma (0: off)")
    ap.add_argument("--gp", type=float, default=0.0, help="WGAN-GP penalty weight lambda, with the wgan loss (0: off)")
    ap.add_argument("--r1-every", type=int, default=1, help="lazy R1: the penalty on every k-th D update, weighted k")
    ap.add_argument("--d-norm", default="batch", choices=["batch", "instance", "layer", "none"],
                    help="D's norm layers (dcgan_train's --d-norm)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("pytorch_dcgan_step: --device cuda, but torch sees no GPU: skipped", file=sys.stderr)
            sys.exit(77)
        # fp32 like gantry's defaults: TF32 in cuDNN convolutions, not in matmuls. PyTorch 2.9
        # replaced the allow_tf32 flags with fp32_precision (mixing the two can raise in
        # Inductor): the new API where it exists.
        if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
            torch.backends.cuda.matmul.fp32_precision = "ieee"
            torch.backends.cudnn.conv.fp32_precision = "tf32"
        else:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
    names = list(CONFIGS) if args.config == "all" else args.config.split(",")
    for n in names:
        if n not in CONFIGS:
            ap.error("unknown --config %r (known: all, %s)" % (n, ", ".join(CONFIGS)))
    modes = ["example", "freeze"] if args.mode == "both" else [args.mode]
    if not args.json:
        print("PyTorch %s DCGAN step on %s, %d threads" % (torch.__version__, args.device, torch.get_num_threads()))
        print("%-12s %-8s %6s %10s %10s %10s" % ("config", "mode", "batch", "ms/step", "images/s", "peak MiB"))
    for n in names:
        for m in modes:
            r = run(n, m, args, device)
            if args.json:
                print(json.dumps(r), flush=True)
            else:
                print("%-12s %-8s %6d %10.1f %10.2f %10.1f" % (n, m, r["batch"], r["ms_per_step"],
                                                              r["images_per_s"], r["peak_mib"]), flush=True)


if __name__ == "__main__":
    main()
