"""How the explorers' binary data travels to the front end: arrays as zlib-compressed little-endian bytes, and a
packet with its bytes as base64 where it must be text (a notebook's saved widget state, a standalone page).
Shared by the explorers (:mod:`crossvit.widgets.base`) and the standalone pages (:mod:`crossvit.widgets.html`)."""

from __future__ import annotations

import base64
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def encode_array(array: np.ndarray | torch.Tensor, dtype: str) -> dict[str, Any]:
    """An array as the front end reads it: ``{"dtype", "shape", "zlib": True, "data": bytes}``, C order, the bytes
    zlib-compressed (little-endian, as every machine here)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    return {"dtype": dtype, "shape": list(array.shape), "zlib": True, "data": zlib.compress(array.tobytes(), 6)}


def decode_array(spec: Mapping[str, Any]) -> np.ndarray:
    """The inverse of :func:`encode_array` (also for a base64 string in ``data``, as a standalone page holds it)."""
    data = spec["data"]
    raw = base64.b64decode(data) if isinstance(data, str) else bytes(data)
    if spec.get("zlib"):
        raw = zlib.decompress(raw)
    return np.frombuffer(raw, dtype=np.dtype(spec["dtype"]).newbyteorder("<")).reshape(spec["shape"])


def packet_bytes(packet: object) -> int:
    """Bytes of binary data in a packet (nested dicts and lists), before base64."""
    if isinstance(packet, (bytes, bytearray, memoryview)):
        return len(packet)
    if isinstance(packet, Mapping):
        return sum(packet_bytes(v) for v in packet.values())
    if isinstance(packet, (list, tuple)):
        return sum(packet_bytes(v) for v in packet)
    return 0


def to_base64(packet: object) -> object:
    """A packet with every bytes value as a base64 string (what a notebook's saved widget state and a standalone
    page hold); the front end reads both forms."""
    if isinstance(packet, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(packet)).decode("ascii")
    if isinstance(packet, Mapping):
        return {k: to_base64(v) for k, v in packet.items()}
    if isinstance(packet, (list, tuple)):
        return [to_base64(v) for v in packet]
    return packet
