"""Read an offline W&B run (``wandb/offline-run-*/run-*.wandb``): its name, group, tags, config and summary.

wandb writes no config.yaml or wandb-summary.json offline; the run file is a record log (32 KiB blocks of
``crc32, length, kind`` headers after a 7-byte ``:W&B`` header) of ``wandb_internal_pb2.Record`` messages.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER = 32768, 7
FULL, LAST = 1, 4


def _records(path: Path):
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + HEADER])
        pending += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_offline_run(run_dir: Path, wait_s: float = 60) -> dict:
    """``{"name", "group", "tags", "config", "summary"}`` of the one offline W&B run below ``run_dir``.

    wandb's service process may still be writing the file when ``wandb.finish`` returns: wait (up to ``wait_s``)
    until the run's exit record is there.
    """
    (path,) = Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")
    deadline = time.monotonic() + wait_s
    while not any(r.WhichOneof("record_type") == "exit" for r in _records(path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    out = {"config": {}, "summary": {}}
    for record in _records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out.update(name=run.display_name, group=run.run_group, tags=list(run.tags))
            out["config"].update({item.key: json.loads(item.value_json) for item in run.config.update})
        elif kind == "config":
            out["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            for item in record.summary.update:
                key = item.key or "/".join(item.nested_key)
                out["summary"][key] = json.loads(item.value_json)
    return out
