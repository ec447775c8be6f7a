"""One run: python train.py model=<m> task=<t> method=<x> rank=<r> lr=<lr> seed=<s> (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig

import loldu.config  # noqa: F401  (registers the ${pick:...} resolver)
from loldu.pipeline import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
