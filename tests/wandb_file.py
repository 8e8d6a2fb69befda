"""Read a run's ``.wandb`` file (a leveldb-style log of wandb's protobuf records).

wandb >= 0.2x writes it from its Go core and ships no Python reader, so the tests read the
file themselves: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of records,
each with a 7-byte header (CRC32C, little-endian length, type: 1 full, 2 first, 3 middle,
4 last). Payloads are ``wandb_internal_pb2.Record`` messages.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7


def records(path: str | Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a .wandb file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - (pos % BLOCK)
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:
            pos += left  # zero-filled rest of a block
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def history(path: str | Path) -> list[dict]:
    """The logged history rows, values decoded from JSON."""
    rows = []
    for r in records(path):
        if r.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item})
    return rows


def config(path: str | Path) -> dict:
    """The run's config: the initial one in its run record, then any config updates."""
    out = {}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        updates = r.run.config.update if kind == "run" else r.config.update if kind == "config" else ()
        for item in updates:
            out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out


def run_info(path: str | Path) -> dict:
    """Id, group and job type of the run."""
    for r in records(path):
        if r.WhichOneof("record_type") == "run":
            return {"id": r.run.run_id, "group": r.run.run_group, "job_type": r.run.job_type, "project": r.run.project}
    return {}


def summary(path: str | Path) -> dict:
    out = {}
    for r in records(path):
        if r.WhichOneof("record_type") == "summary":
            for item in r.summary.update:
                out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out
