"""One run: python train.py model=<m> task=<t> method=<x> rank=<r> lr=<lr> seed=<s> (see conf/train.yaml).

Composing the config (``--cfg job``, ``--help``) imports no torch: the training code is imported inside ``main``,
and the resolvers ``conf/`` uses are registered by Hydra's plugin scan (``hydra_plugins/loldu_resolvers.py``).
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    if cfg.get("plan"):  # plan=true: what the run would train, from the model on the meta device; no run
        from loldu.run.plan import plan

        plan(cfg)
        return None
    from loldu.run import train

    return train(cfg)


if __name__ == "__main__":
    main()
