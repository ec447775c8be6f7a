"""LoLDU and SVFit models train under FSDP (CPU, gloo, two processes) and their gathered state reloads.

FSDP1 (``torch.distributed.fsdp.FullyShardedDataParallel``) is what Lightning's
``FSDPStrategy`` wraps with; it refuses 0-dim parameters, which is why sigma
has shape (1,). ``use_orig_params=True`` because frozen and trained
parameters share a wrapped module.
"""

from __future__ import annotations

import os
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from loldu.methods import apply_method
from loldu.models.tiny import TinyMLP


def _spec(method: str) -> dict:
    return {"name": method, "r": 4, "target_modules": ["fc1", "fc2"], "head_modules": ["classifier"]}


def _worker(rank: int, world: int, port: int, method: str, result_file: str) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        adapted = apply_method(TinyMLP(), _spec(method))
        z_before = adapted.base_model.model.fc1.get_parameter(f"{method}_z.default").detach().clone()
        wrapped = FSDP(adapted, use_orig_params=True, device_id=torch.device("cpu"))
        optimizer = torch.optim.SGD([p for p in wrapped.parameters() if p.requires_grad], lr=0.5)
        x = torch.randn(6, 12, generator=torch.Generator().manual_seed(1 + rank))  # each rank its own batch
        wrapped(x).pow(2).mean().backward()
        optimizer.step()
        probe = torch.randn(5, 12, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            wrapped_out = wrapped(probe)
        outs = [torch.empty_like(wrapped_out) for _ in range(world)]
        dist.all_gather(outs, wrapped_out)
        state = get_model_state_dict(wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            torch.manual_seed(0)
            fresh = apply_method(TinyMLP(), _spec(method))
            fresh.load_state_dict(state)
            with torch.no_grad():
                fresh_out = fresh(probe)
            z_after = fresh.base_model.model.fc1.get_parameter(f"{method}_z.default").detach()
            torch.save({"outs": outs, "fresh": fresh_out, "z_before": z_before, "z_after": z_after}, result_file)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("method", ["loldu", "svfit"])
def test_fsdp_train_step_gather_and_reload(method, tmp_path):
    result_file = str(tmp_path / "result.pt")
    mp.spawn(_worker, args=(2, _free_port(), method, result_file), nprocs=2, join=True)
    result = torch.load(result_file)
    rank0, rank1 = result["outs"]
    torch.testing.assert_close(rank0, rank1)  # one model, sharded: both ranks compute the same thing
    assert not torch.allclose(result["z_after"], result["z_before"])  # the step trained z
    # The gathered state, loaded into a fresh unwrapped model, is the wrapped model.
    torch.testing.assert_close(result["fresh"], rank0, rtol=1e-5, atol=1e-6)
