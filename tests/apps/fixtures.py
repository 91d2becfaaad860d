#!/usr/bin/env python3
"""Test fixtures for the app tests, written with the standard library only (an independent
writer: nothing here shares code with gantry).

  fixtures.py folder DIR N        N small PNG images (two classes) plus one corrupt .png
  fixtures.py pytorch-generator FILE NZ NGF NC
        a DCGAN generator state dict for 32x32 images, laid out exactly as PyTorch's
        `netG.state_dict()` of the DCGAN example and saved the way `safetensors.torch.save_file`
        does (F32 tensors, num_batches_tracked as I64), with deterministic pseudo-random weights
  fixtures.py latent FILE N NZ    a safetensors file with one tensor z [N, NZ]
  fixtures.py poison FILE         overwrite every F32 value of a safetensors file with NaN
"""
import json
import math
import os
import random
import struct
import sys
import zlib


def png(path, w, h, pixel):
    raw = b"".join(b"\x00" + bytes(c for x in range(w) for c in pixel(x, y)) for y in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def folder(d, n):
    for cls in ("circles", "squares"):
        os.makedirs(os.path.join(d, cls), exist_ok=True)
    rng = random.Random(0)
    for i in range(n):
        cls = "circles" if i % 2 == 0 else "squares"
        cx, cy, r = rng.randint(10, 30), rng.randint(10, 30), rng.randint(5, 10)
        col = (rng.randint(50, 255), rng.randint(50, 255), rng.randint(50, 255))
        if cls == "circles":
            pix = lambda x, y: col if (x - cx) ** 2 + (y - cy) ** 2 < r * r else (0, 0, 0)
        else:
            pix = lambda x, y: col if abs(x - cx) < r and abs(y - cy) < r else (0, 0, 0)
        png(os.path.join(d, cls, "img_%03d.png" % i), 40, 40, pix)
    with open(os.path.join(d, "squares", "broken.png"), "wb") as f:
        f.write(b"this is not a png at all")


def save_safetensors(path, tensors):
    """tensors: list of (name, dtype, shape, flat values)."""
    header, blobs, offset = {}, [], 0
    for name, dtype, shape, values in tensors:
        fmt = {"F32": "<%df", "I64": "<%dq"}[dtype] % len(values)
        blob = struct.pack(fmt, *values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def pytorch_generator(path, nz, ngf, nc):
    # netG for 32x32: ConvT(nz,4g,4,1,0) BN ReLU ConvT(4g,2g,4,2,1) BN ReLU ConvT(2g,g,4,2,1) BN ReLU ConvT(g,nc,4,2,1) Tanh
    rng = random.Random(1)
    chans = [nz, 4 * ngf, 2 * ngf, ngf, nc]
    tensors, idx = [], 0
    for i in range(4):
        cin, cout = chans[i], chans[i + 1]
        n = cin * cout * 16
        tensors.append(("main.%d.weight" % idx, "F32", [cin, cout, 4, 4], [rng.gauss(0, 0.02) for _ in range(n)]))
        if i < 3:
            b = idx + 1
            tensors.append(("main.%d.weight" % b, "F32", [cout], [rng.gauss(1, 0.02) for _ in range(cout)]))
            tensors.append(("main.%d.bias" % b, "F32", [cout], [0.0] * cout))
            tensors.append(("main.%d.running_mean" % b, "F32", [cout], [0.0] * cout))
            tensors.append(("main.%d.running_var" % b, "F32", [cout], [1.0] * cout))
            tensors.append(("main.%d.num_batches_tracked" % b, "I64", [], [0]))
        idx += 3
    save_safetensors(path, tensors)


def latent(path, n, nz):
    rng = random.Random(2)
    save_safetensors(path, [("z", "F32", [n, nz], [rng.gauss(0, 1) for _ in range(n * nz)])])


def read_f32(path, name):
    """A F32 tensor of a safetensors file: (shape, flat values)."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    e = json.loads(data[8:8 + n])[name]
    b, end = e["data_offsets"]
    return e["shape"], struct.unpack("<%df" % ((end - b) // 4), data[8 + n + b:8 + n + end])


def poison(path):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    for name, e in header.items():
        if name != "__metadata__" and e["dtype"] == "F32":
            b, end = e["data_offsets"]
            count = (end - b) // 4
            data[8 + n + b:8 + n + end] = struct.pack("<%df" % count, *([math.nan] * count))
    with open(path, "wb") as f:
        f.write(data)


def describe(path, name):
    """Prints a F32 tensor's shape and its largest |value| (for checks of written files)."""
    shape, values = read_f32(path, name)
    print("shape %s max_abs %.6f" % ("x".join(map(str, shape)), max(abs(v) for v in values)))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "folder":
        folder(sys.argv[2], int(sys.argv[3]))
    elif cmd == "pytorch-generator":
        pytorch_generator(sys.argv[2], *map(int, sys.argv[3:6]))
    elif cmd == "latent":
        latent(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "poison":
        poison(sys.argv[2])
    elif cmd == "describe":
        describe(sys.argv[2], sys.argv[3])
    else:
        sys.exit("unknown fixture " + cmd)
