#!/usr/bin/env python3
"""Writes tests/data/lsun/: two tiny LSUN-style databases, as LSUN ships them (one LMDB per
category, keys -> encoded images), with python3-lmdb and PIL, so the apps test trains on them:
  bedroom_train_lmdb/          6 images, JPEG (quality 75, as LSUN) and one WebP
  church_outdoor_train_lmdb/   2 images
Image k of a database is a 40x30 gradient whose red level is 40 k.
Usage: /usr/bin/python3 tests/interop/make_lsun_fixtures.py tests/data
"""
import io
import os
import sys

import lmdb
from PIL import Image

out = os.path.join(sys.argv[1], "lsun")


def image(k, fmt):
    img = Image.new("RGB", (40, 30))
    img.putdata([(40 * k % 256, 6 * x, 8 * y) for y in range(30) for x in range(40)])
    b = io.BytesIO()
    img.save(b, fmt, quality=75)
    return b.getvalue()


for name, n in (("bedroom_train_lmdb", 6), ("church_outdoor_train_lmdb", 2)):
    path = os.path.join(out, name)
    os.makedirs(path, exist_ok=True)
    env = lmdb.open(path, map_size=1 << 20)
    with env.begin(write=True) as txn:
        for k in range(n):
            fmt = "WEBP" if (name.startswith("bedroom") and k == 5) else "JPEG"
            txn.put(("%040x" % (k * 7919)).encode(), image(k, fmt))
    env.close()
    os.remove(os.path.join(path, "lock.mdb"))  # not needed to read (gantry opens without locking)
print("wrote", out)
