"""Short names of models and tasks, the method groups the rank checks know, and the choices of the running job.

Torch-free.
"""

from __future__ import annotations

# Short names of the paper's models and tasks: conf/<group>/<short>.yaml includes the long one, and
# ${canonical:...} maps a choice to its long name so that conf/model_task/<model>_<task>.yaml is found for both.
ALIASES = {
    "vit": "vit_base",
    "roberta": "roberta_base",
    "llama2": "llama2_7b",
    "sd": "sd15",
    "fgvc": "fgvc_aircraft",
}
# A model to suggest for each task family when a model of another family was picked.
EXAMPLE_MODEL = {"text": "minilm", "image": "tiny_vit", "causal_lm": "smollm2", "diffusion": "tiny_sd"}
# Methods whose rank is bounded by min(out, in) of the target layers.
RANKED_METHODS = ("loldu", "svfit", "lora", "pissa", "melora", "dora", "tinylora")
# Methods whose rank counts trained coefficients of fixed out x in matrices (VeRA's shared random rank-one
# products, FourierFT's spectral entries): more than out * in of a layer cannot be independent (full_rank^2 for
# square targets); VeRA's paper uses ranks above min(out, in), e.g. 1024 on RoBERTa-base.
SPANNING_METHODS = ("vera", "fourierft")


def canonical(name: str) -> str:
    """The long name of a model or task choice (``vit`` -> ``vit_base``); other names unchanged."""
    return ALIASES.get(name, name)


def unescape(value: str) -> str:
    """A swept value as written (the sweeper's strings escape interpolations: ``$\\{x\\}``)."""
    return value.replace("$\\{", "${").replace("\\}", "}")


def choice(group: str) -> str:
    """The long name of the option picked for ``group`` (``model``, ``task``, ``method``...) in the running Hydra job.

    Raises:
        RuntimeError: outside a Hydra job, naming how to get one.
        KeyError: ``group`` is not a config group of the job.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        raise RuntimeError(
            f"choice({group!r}) reads the config-group choices of the running Hydra job, and there is none: call it "
            "under @hydra.main (train.py), or compose with compose(..., return_hydra_config=True) and "
            "HydraConfig.instance().set_config(cfg) first"
        )
    choices = HydraConfig.get().runtime.choices
    if group not in choices:
        raise KeyError(f"choice({group!r}): the job has no config group {group!r} (it has {', '.join(choices)})")
    return canonical(choices[group])
