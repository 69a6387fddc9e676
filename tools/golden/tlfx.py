"""Reader/writer for ternlab's golden fixture files (.tlfx), shared by the tools/golden scripts.

Layout (little-endian): magic b"TLFX", version u32 (=1), count u32; then per entry:
name length u32, name (UTF-8), dtype u8 (0 f32, 1 i8, 2 i32, 3 utf-8 text), ndim u32, dims i64[ndim],
data (prod(dims) elements; for text, dims = [byte length]).
"""
import struct

import numpy as np

MAGIC = b"TLFX"
VERSION = 1
_CODES = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int32): 2}


def write(path, entries):
    """entries: dict name -> numpy array (f32/i8/i32) or str."""
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<II", VERSION, len(entries)))
        for name, value in entries.items():
            nb = name.encode()
            f.write(struct.pack("<I", len(nb)) + nb)
            if isinstance(value, str):
                data = value.encode()
                f.write(struct.pack("<BIq", 3, 1, len(data)) + data)
                continue
            arr = np.ascontiguousarray(value)
            code = _CODES[arr.dtype]
            f.write(struct.pack("<BI", code, arr.ndim))
            f.write(struct.pack("<%dq" % arr.ndim, *arr.shape))
            f.write(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
