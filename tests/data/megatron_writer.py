#!/usr/bin/env python3
"""Writes an indexed dataset the way Megatron-LM's IndexedDatasetBuilder and _IndexWriter do
(megatron/core/datasets/indexed_dataset.py), step for step, with struct in place of numpy
(numpy is not always installed; the bytes are the same: little-endian, C order). The C++ reader
is thus tested against bytes it did not produce. Also writes <prefix>.expected.json with the
documents (lists of sequences of token values) and the dtype code.

usage: megatron_writer.py <prefix> <dtype: uint8 int8 int16 int32 int64 float64 float32 uint16> <seed>
"""
import json
import random
import struct
import sys

# Megatron's DType enum codes, and the struct letter of each numpy dtype.
DTYPES = {"uint8": (1, "B"), "int8": (2, "b"), "int16": (3, "h"), "int32": (4, "i"),
          "int64": (5, "q"), "float64": (6, "d"), "float32": (7, "f"), "uint16": (8, "H")}
_INDEX_HEADER = b"MMIDIDX\x00\x00"


def write(prefix, dtype, documents):
    code, letter = DTYPES[dtype]
    itemsize = struct.calcsize("<" + letter)
    # IndexedDatasetBuilder.add_document: numpy.array(seq, dtype).tobytes(order="C") per sequence
    sequence_lengths, document_indices = [], [0]
    with open(prefix + ".bin", "wb") as data_file:
        for doc in documents:
            for seq in doc:
                data_file.write(struct.pack(f"<{len(seq)}{letter}", *seq))
                sequence_lengths.append(len(seq))
            document_indices.append(len(sequence_lengths))
    # _IndexWriter.__enter__ / write
    with open(prefix + ".idx", "wb") as idx:
        idx.write(_INDEX_HEADER)
        idx.write(struct.pack("<Q", 1))
        idx.write(struct.pack("<B", code))
        idx.write(struct.pack("<Q", len(sequence_lengths)))
        idx.write(struct.pack("<Q", len(document_indices)))
        idx.write(struct.pack(f"<{len(sequence_lengths)}i", *sequence_lengths))
        pointers, curr = [], 0
        for length in sequence_lengths:  # _IndexWriter._sequence_pointers
            pointers.append(curr)
            curr += length * itemsize
        idx.write(struct.pack(f"<{len(pointers)}q", *pointers))
        idx.write(struct.pack(f"<{len(document_indices)}q", *document_indices))


def main():
    if len(sys.argv) != 4 or sys.argv[2] not in DTYPES:
        sys.exit(__doc__)
    prefix, dtype, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(seed)
    low, high = (-100, 100) if dtype in ("int8", "int16", "int32", "int64", "float32", "float64") else (0, 250)
    if dtype in ("uint16", "int32", "int64", "int16"):
        high = 30000
    documents = []
    for d in range(rng.randint(5, 12)):
        # some documents hold several sequences (Megatron's --split-sentences); one is empty
        doc = [[rng.randint(low, high) for _ in range(rng.randint(1, 50))]
               for _ in range(rng.randint(1, 3))]
        if d == 2:
            doc.append([])
        documents.append(doc)
    if dtype.startswith("float"):
        documents = [[[float(x) for x in seq] for seq in doc] for doc in documents]
    write(prefix, dtype, documents)
    with open(prefix + ".expected.json", "w") as f:
        json.dump({"dtype_code": DTYPES[dtype][0], "documents": documents}, f)


if __name__ == "__main__":
    main()
