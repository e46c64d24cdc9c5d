"""Reading an offline run's ``run-<id>.wandb`` file back: the records W&B would upload on ``wandb sync``.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic ``0xBEE1``, version 0), then
32 KiB blocks of chunks, each with a 7-byte header (CRC-32C, little-endian length, type: full,
first, middle, last); a block's tail shorter than a chunk header is zero padding. Each whole
record is a ``wandb_internal_pb2.Record`` protobuf.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> Iterator[bytes]:
    if data[:4] != b":W&B" or struct.unpack("<HB", data[4:7]) != (0xBEE1, 0):
        raise ValueError("not a W&B run log (bad file header)")
    position, pending = HEADER, b""
    while position + HEADER <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < HEADER:
            position += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        chunk = data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""
        elif kind == 0 and length == 0:
            break  # zero padding after the last record
        else:
            raise ValueError(f"bad chunk type {kind} at byte {position}")


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """Every record of ``path`` in order."""
    records = []
    for payload in _payloads(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def by_type(records: list[wandb_internal_pb2.Record]) -> dict[str, list[Any]]:
    """Records grouped by the kind they carry (``run``, ``config``, ``history``, ``summary``, ``metric``, ...)."""
    grouped: dict[str, list[Any]] = {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind:
            grouped.setdefault(kind, []).append(getattr(record, kind))
    return grouped


def items(message: Any) -> dict[str, Any]:
    """``config``/``summary``/``history`` items as ``{key: value}`` (nested keys joined with ``/``)."""
    out = {}
    for item in list(getattr(message, "update", [])) + list(getattr(message, "item", [])):
        key = item.key or "/".join(item.nested_key)
        out[key] = json.loads(item.value_json) if item.value_json else None
    return out


def run_log(run_dir: Path) -> dict[str, list[Any]]:
    """The records of the one offline W&B run in ``run_dir`` (the one ``run.json`` names), grouped by kind."""
    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    record = json.loads((run_dir / "run.json").read_text())
    assert path.name == f"run-{record['wandb_id']}.wandb"
    return by_type(read_records(path))


def merged(messages: list[Any]) -> dict[str, Any]:
    """The items of several config or summary records, later ones winning."""
    out: dict[str, Any] = {}
    for message in messages:
        out.update(items(message))
    return out
