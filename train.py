"""One run: python train.py model=<m> task=<t> method=<x> rank=<r> lr=<lr> seed=<s> (see conf/train.yaml).

Composing the config (``--cfg job``, ``--help``) and checking it import no torch: a mistake in the settings is
refused in about the time of ``--cfg job``, with one line naming the setting and the fix. The training code is
imported after the checks, and the resolvers ``conf/`` uses are registered by Hydra's plugin scan
(``hydra_plugins/loldu_resolvers.py``). ``resume=<run dir>`` alone continues a run with its own settings.
"""

import sys

import hydra
from omegaconf import DictConfig

from loldu.config import check_config, refuse
from loldu.config.checks import check_local_paths, unknown_keys
from loldu.config.run_dir import run_arguments


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with refuse():  # a user mistake: one line and exit status 2 (in a sweep, the job fails and the sweep goes on)
        check_config(cfg)
        check_local_paths(cfg)  # a missing data file, one file as two splits (the data module reads them later)
    if cfg.get("plan"):  # plan=true: what the run would train, from the model on the meta device; no run
        from loldu.run.plan import plan

        plan(cfg)
        return None
    from loldu.run import train

    with refuse(marked_only=True):  # the run's own checks (data, method options, resume, its folder)
        return train(cfg)


if __name__ == "__main__":
    with refuse():
        sys.argv = run_arguments(sys.argv)
    try:
        main()
    except SystemExit as failed:
        if failed.code == 1 and (typos := unknown_keys(sys.argv)):  # Hydra's "not in struct": name the key meant
            sys.stderr.write("".join(f"error: {line}\n" for line in typos))
            raise SystemExit(2) from None
        raise
