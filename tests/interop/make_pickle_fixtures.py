#!/usr/bin/env python3
"""Writes the pickles that tests/test_pickle.cpp and tests/test_data_datasets.cpp read.

Written once and committed, so the reader is tested against Python's own output on machines
without numpy:
  tests/data/pickle/numpy_p{2,4,5}.pkl   numpy arrays and scalars pickled by Python 3 + numpy
                                          at protocols 2 (bytes as _codecs.encode), 4 and 5
                                          (_frombuffer over an in-band buffer)
  tests/data/cifar-10-batches-py/        a tiny CIFAR-10 "python version": 5 training batches
                                          and the test batch of 3 images each, plus
                                          batches.meta, laid out as torchvision downloads it
  tests/data/cifar-100-python/           a tiny CIFAR-100 python version: train (4 images),
                                          test (2) and meta
The CIFAR files were pickled by Python 2's cPickle (protocol 2), which this machine does not
have, so this script writes those opcodes itself, as cPickle does; every file is then loaded
back the way torchvision loads it (pickle.load(f, encoding="latin1")) and compared with the
arrays it was made from, so a file that Python reads differently fails here.
Every value is exact, so the C++ tests compute what to expect without Python.
Usage: /usr/bin/python3 tests/interop/make_pickle_fixtures.py tests/data
"""
import os
import pickle
import struct
import sys

import numpy as np

out = sys.argv[1]


# ---- numpy arrays pickled by Python 3 -------------------------------------------------------
def numpy_values():
    return {
        "u8": np.arange(6, dtype=np.uint8).reshape(2, 3),
        "f32": np.array([0.5, -1.25, 3.0], dtype="<f4"),
        "f64_big_endian": np.array([[1.5, -2.0], [0.25, 8.0]], dtype=">f8"),
        "i64_fortran": np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3) - 2),
        "i16": np.array([-300, 7], dtype=np.int16),
        "f16": np.array([0.5, -65504.0], dtype=np.float16),
        "bool": np.array([True, False, True]),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "scalar_f64": np.float64(0.25),
        "scalar_i64": np.int64(-7),
        "strings": np.array(["a", "bc"]),        # a dtype gantry does not read: opaque
        "objects": np.array([1, "x"], dtype=object),
        "records": np.zeros(2, dtype=[("a", "<i4"), ("b", "<f4")]),
        "plain": {"epoch": 3, "name": "x", "data": b"\x00\xff"},
        "names": ["n%d" % i for i in range(300)],  # memo keys past 255: LONG_BINPUT/LONG_BINGET
    }


os.makedirs(os.path.join(out, "pickle"), exist_ok=True)
for proto in (2, 4, 5):
    path = os.path.join(out, "pickle", "numpy_p%d.pkl" % proto)
    with open(path, "wb") as f:
        pickle.dump(numpy_values(), f, protocol=proto)
    back = pickle.load(open(path, "rb"))
    for k, v in numpy_values().items():
        if isinstance(v, np.ndarray) and v.dtype != object:
            assert back[k].dtype.kind == v.dtype.kind and np.array_equal(back[k], v), (path, k)


# ---- Python 2 cPickle, protocol 2, written opcode by opcode ---------------------------------
class Py2Pickler:
    """The opcodes cPickle.dump(obj, f, 2) writes for dicts, lists, ints, str and ndarrays."""

    def __init__(self):
        self.b = bytearray(b"\x80\x02")  # PROTO 2
        self.memo = 0

    def put(self):  # cPickle memoizes every container and global (BINPUT n)
        self.memo += 1
        self.b += b"q" + bytes([self.memo]) if self.memo < 256 else b"r" + struct.pack("<I", self.memo)

    def str_(self, s):  # a Python 2 str: bytes
        s = s.encode("latin1") if isinstance(s, str) else s
        self.b += (b"U" + bytes([len(s)])) if len(s) < 256 else (b"T" + struct.pack("<I", len(s)))
        self.b += s
        self.put()

    def int_(self, v):
        if 0 <= v < 256:
            self.b += b"K" + bytes([v])
        elif 0 <= v < 65536:
            self.b += b"M" + struct.pack("<H", v)
        else:
            self.b += b"J" + struct.pack("<i", v)

    def global_(self, module, name):
        self.b += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        self.put()

    def tuple_(self, items):
        if not items:
            self.b += b")"
            return
        if len(items) <= 3:
            for x in items:
                self.value(x)
            self.b += bytes([0x84 + len(items)])  # TUPLE1..3
        else:
            self.b += b"("
            for x in items:
                self.value(x)
            self.b += b"t"
        self.put()

    def dtype(self, dt):
        self.global_("numpy", "dtype")
        self.tuple_([dt.str[1:], 0, 1])
        self.b += b"R"
        self.put()
        self.b += b"("  # state: (3, byteorder, None, None, None, -1, -1, 0)
        self.int_(3)
        self.str_(dt.str[0])
        self.b += b"NNN"
        self.int_(-1)
        self.int_(-1)
        self.int_(0)
        self.b += b"tb"

    def ndarray(self, a):
        self.global_("numpy.core.multiarray", "_reconstruct")
        self.global_("numpy", "ndarray")
        self.b += b"K\x00\x85"  # (0,)
        self.str_("b")
        self.b += b"\x87R"  # TUPLE3, REDUCE
        self.put()
        self.b += b"("
        self.int_(1)
        self.tuple_(list(a.shape))
        self.dtype(a.dtype)
        self.b += b"\x89"  # NEWFALSE: C order
        self.str_(a.tobytes())
        self.b += b"tb"

    def value(self, v):
        if isinstance(v, np.ndarray):
            self.ndarray(v)
        elif isinstance(v, (bytes, str)):
            self.str_(v)
        elif isinstance(v, int):
            self.int_(v)
        elif isinstance(v, list):
            self.b += b"]"
            self.put()
            if v:
                self.b += b"("
                for x in v:
                    self.value(x)
                self.b += b"e"
        elif isinstance(v, dict):
            self.b += b"}"
            self.put()
            self.b += b"("
            for k, x in v.items():
                self.value(k)
                self.value(x)
            self.b += b"u"
        else:
            raise TypeError(type(v))

    def dump(self, obj, path):
        self.value(obj)
        self.b += b"."
        with open(path, "wb") as f:
            f.write(self.b)


def py2_dump(obj, path):
    Py2Pickler().dump(obj, path)
    back = pickle.load(open(path, "rb"), encoding="latin1")  # as torchvision reads them
    for k, v in obj.items():
        if isinstance(v, np.ndarray):
            assert back[k].dtype.kind == v.dtype.kind and np.array_equal(back[k], v), (path, k)
        else:
            assert back[k] == (v.decode("latin1") if isinstance(v, bytes) else v), (path, k)


def cifar_images(first, n):
    """Image i (counted over the whole set) has pixel p of plane c = (7 i + 3 c + p) % 256."""
    a = np.zeros((n, 3072), dtype=np.uint8)
    for i in range(n):
        for c in range(3):
            a[i, c * 1024:(c + 1) * 1024] = (7 * (first + i) + 3 * c + np.arange(1024)) % 256
    return a


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
d10 = os.path.join(out, "cifar-10-batches-py")
os.makedirs(d10, exist_ok=True)
n = 3
for b in range(6):  # 0-4: data_batch_1..5, 5: test_batch (images 15..17)
    name = "data_batch_%d" % (b + 1) if b < 5 else "test_batch"
    first = b * n
    py2_dump({
        "batch_label": "training batch %d of 5" % (b + 1) if b < 5 else "testing batch 1 of 1",
        "labels": [(first + i) % 10 for i in range(n)],
        "data": cifar_images(first, n),
        "filenames": ["img_%05d.png" % (first + i) for i in range(n)],
    }, os.path.join(d10, name))
py2_dump({"num_cases_per_batch": n, "label_names": CIFAR10_NAMES, "num_vis": 3072},
         os.path.join(d10, "batches.meta"))

# CIFAR-100: one "train" and one "test" file, fine and coarse labels; labels go up to 99.
d100 = os.path.join(out, "cifar-100-python")
os.makedirs(d100, exist_ok=True)
for name, first, count in (("train", 0, 4), ("test", 4, 2)):
    py2_dump({
        "filenames": ["img_%05d.png" % (first + i) for i in range(count)],
        "batch_label": name,
        "fine_labels": [(33 * (first + i)) % 100 for i in range(count)],
        "coarse_labels": [(first + i) % 20 for i in range(count)],
        "data": cifar_images(first, count),
    }, os.path.join(d100, name))
py2_dump({"fine_label_names": ["class_%02d" % k for k in range(100)],
          "coarse_label_names": ["super_%02d" % k for k in range(20)]}, os.path.join(d100, "meta"))
print("wrote", out)
