"""The model folder :mod:`loldu.eval.lm` evaluates: a run's merged model or a Hugging Face folder, checked, loaded."""

from __future__ import annotations

from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def resolve_model_dir(run_dir: str | Path) -> Path:
    """The model folder to evaluate for ``run_dir``.

    A run folder (with ``config.yaml``) gives ``run_dir/merged``, which
    :func:`loldu.run.finished.ensure_merged` writes first if it is missing; any other
    folder is taken as a Hugging Face model folder.

    Raises:
        FileNotFoundError: ``run_dir`` does not exist, or is neither a run folder
            nor a model folder.
    """
    run_dir = Path(run_dir)
    if not is_run_folder(run_dir):
        return run_dir
    merged = run_dir / "merged"
    if (merged / "config.json").is_file():
        return merged
    from loldu.run.finished import ensure_merged

    return Path(ensure_merged(run_dir))


def is_run_folder(run_dir: Path) -> bool:
    """True for a run folder, False for a model folder; refuses anything else."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} does not exist (expected a run folder or a model folder)")
    if (run_dir / "config.yaml").is_file():
        return True
    if (run_dir / "config.json").is_file():
        return False
    raise FileNotFoundError(
        f"{run_dir} is neither a run folder (no config.yaml) nor a Hugging Face model folder (no config.json)"
    )


def check_model_dir(model_dir: str | Path) -> Path:
    """Refuse a folder lm-eval's ``hf`` model cannot load, before loading anything.

    Raises:
        FileNotFoundError: no ``config.json`` or no tokenizer files in ``model_dir``.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        hint = " (a diffusion run? its merged UNet is not a language model)" if (model_dir / "unet").is_dir() else ""
        raise FileNotFoundError(
            f"{model_dir} has no config.json{hint}: pass a merged model folder (e.g. RUN_DIR/merged, written by "
            "loldu.run.finished.ensure_merged) or, on the command line, the run folder itself (with config.yaml)"
        )
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{model_dir} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the tokenizer next to "
            "the model (tokenizer.save_pretrained(model_dir))"
        )
    return model_dir


def make_lm(model_dir: Path, batch_size, device: str, dtype: str):
    """lm-eval's ``hf`` model, built once and shared by all tasks (as ``simple_evaluate(model="hf")`` builds it)."""
    from lm_eval.api.registry import get_model

    return get_model("hf").create_from_arg_obj(
        {"pretrained": str(model_dir), "dtype": dtype},
        {"batch_size": batch_size, "device": device},
    )
