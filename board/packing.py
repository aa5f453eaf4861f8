"""Vectorised packing between numpy arrays and the accelerator's AXI-stream bytes (FINN's convention).

FINN's PYNQ driver packs each stream word as `finnpy_to_packed_bytearray(x, dt, reverse_inner=True,
reverse_endian=True)`: the word's element 0 sits in its least significant bits, the word is padded to whole bytes and
stored little-endian. These functions do the same with whole-array numpy bit operations (no per-element Python,
which cost LPYOLO's released notebook ~574 ms per frame), for any width of 1..8 bits, signed or unsigned.
"""

from __future__ import annotations

import numpy as np


def word_bytes(elems_per_word: int, bits: int) -> int:
    return (elems_per_word * bits + 7) // 8


def pack(values: np.ndarray, bits: int, elems_per_word: int) -> np.ndarray:
    """(..., N) integers -> (..., N/elems_per_word * word_bytes) uint8, FINN's stream layout."""
    values = np.asarray(values)
    if values.shape[-1] % elems_per_word:
        raise ValueError(f"innermost size {values.shape[-1]} is not a multiple of the stream fold {elems_per_word}")
    if bits == 8:  # one element per byte: the bytes are the values (two's complement for signed)
        return np.ascontiguousarray(values.astype(np.int16).astype(np.uint8))
    lead = values.shape[:-1]
    words = values.reshape(-1, elems_per_word).astype(np.int64) & ((1 << bits) - 1)
    # (words, elems, bits) little-endian bit matrix -> padded to whole bytes -> packbits, LSB first
    bitmat = ((words[:, :, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(len(words), -1)
    pad = word_bytes(elems_per_word, bits) * 8 - bitmat.shape[1]
    if pad:
        bitmat = np.concatenate([bitmat, np.zeros((len(words), pad), np.uint8)], axis=1)
    return np.packbits(bitmat, axis=1, bitorder="little").reshape(*lead, -1)


def unpack(data: np.ndarray, bits: int, elems_per_word: int, count: int, signed: bool) -> np.ndarray:
    """Inverse of `pack`: uint8 bytes -> (count,) int32 values, sign-extended when `signed`."""
    data = np.asarray(data, np.uint8).reshape(-1)
    if bits == 8:
        vals = data[:count].view(np.int8) if signed else data[:count]
        return vals.astype(np.int32)
    nbytes = word_bytes(elems_per_word, bits)
    bitmat = np.unpackbits(data.reshape(-1, nbytes), axis=1, bitorder="little")[:, : elems_per_word * bits]
    vals = bitmat.reshape(-1, elems_per_word, bits).astype(np.int32) @ (1 << np.arange(bits, dtype=np.int32))
    if signed:
        vals = np.where(vals >= 1 << (bits - 1), vals - (1 << bits), vals)
    return vals.reshape(-1)[:count].astype(np.int32)


def pack_naive(values, bits: int, elems_per_word: int) -> bytes:
    """Per-element reference (the slow way LPYOLO's notebook worked); used by tests and the benchmark."""
    flat = [int(v) for v in np.asarray(values).reshape(-1)]
    out = bytearray()
    nbytes = word_bytes(elems_per_word, bits)
    for w in range(0, len(flat), elems_per_word):
        word = 0
        for i, v in enumerate(flat[w : w + elems_per_word]):
            word |= (v & ((1 << bits) - 1)) << (i * bits)
        out += word.to_bytes(nbytes, "little")
    return bytes(out)


def unpack_naive(data: bytes, bits: int, elems_per_word: int, count: int, signed: bool) -> list[int]:
    nbytes = word_bytes(elems_per_word, bits)
    out = []
    for w in range(0, len(data), nbytes):
        word = int.from_bytes(data[w : w + nbytes], "little")
        for i in range(elems_per_word):
            v = (word >> (i * bits)) & ((1 << bits) - 1)
            out.append(v - (1 << bits) if signed and v >= 1 << (bits - 1) else v)
    return out[:count]
