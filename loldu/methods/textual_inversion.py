"""Textual Inversion (Gal et al., 2022): a new word for a concept, learned as its own embedding vector(s).

The text encoder's tokenizer gets new tokens (the placeholder, e.g. ``sks``, and for ``num_vectors`` > 1 also
``sks_1`` ... ``sks_{n-1}``, diffusers' naming); their embedding rows start from the embedding of an initializer
word (the mean over its tokens when the tokenizer splits it) and are the only parameters that train. They are a
parameter of their own (:class:`PlaceholderEmbedding`), beside the frozen embedding matrix, so the existing rows,
the rest of the text encoder and the UNet stay bit-identical whatever the optimizer does (weight decay included).

The trained vectors are saved in the format diffusers' ``pipeline.load_textual_inversion`` reads
(:func:`save_learned_embeds`): a ``learned_embeds.safetensors`` holding one tensor, ``{placeholder: (n, dim)}``;
diffusers names rows 2..n ``<placeholder>_1`` ... and its pipelines expand the placeholder in a prompt to all of
them (:func:`expand_placeholder` does the same for training prompts).

Plain PyTorch; the diffusion task family (:mod:`loldu.tasks.diffusion`) installs the tokens before the method is
applied (:func:`add_placeholder_tokens`), and :data:`TRAINED` names the one parameter ``apply_method`` trains.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: The parameter that holds the new rows (the only one textual inversion trains).
TRAINED = "placeholder_vectors"
#: diffusers' file name for textual inversion embeddings (``TextualInversionLoaderMixin``).
LEARNED_EMBEDS = "learned_embeds.safetensors"


@dataclass
class TextualInversionOptions:
    """The options of ``method=textual_inversion`` (``method.options``); their defaults live here.

    Attributes:
        placeholder_token: The new word; the task's prompts must name the subject with it (the DreamBooth tasks'
            prompts say ``sks``). It must not be a token the tokenizer already has.
        initializer_token: The word whose embedding the new rows start from; None: the task's class word
            (``task.concept_class``).
        num_vectors: How many embedding vectors the placeholder stands for.
    """

    placeholder_token: str = "sks"
    initializer_token: str | None = None
    num_vectors: int = 1

    def __post_init__(self) -> None:
        token = self.placeholder_token
        if not isinstance(token, str) or not token.strip() or any(c.isspace() for c in token):
            raise ValueError(
                f"method.options.placeholder_token must be one word without spaces, e.g. sks or '<sks>' (got {token!r})"
            )
        init = self.initializer_token
        if init is not None and (not isinstance(init, str) or not init.strip()):
            raise ValueError(
                f"method.options.initializer_token must be a word, e.g. dog, or null for task.concept_class "
                f"(got {init!r})"
            )
        n = self.num_vectors
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"method.options.num_vectors must be an integer >= 1, e.g. 1 (got {n!r})")

    @property
    def tokens(self) -> list[str]:
        """The tokens added to the tokenizer, in row order: the placeholder, then ``<placeholder>_1`` ..."""
        return placeholder_tokens(self.placeholder_token, self.num_vectors)


def placeholder_tokens(placeholder: str, num_vectors: int) -> list[str]:
    """``[placeholder, placeholder_1, ..., placeholder_{n-1}]``: diffusers' names for a multi-vector embedding."""
    return [placeholder] + [f"{placeholder}_{i}" for i in range(1, int(num_vectors))]


def expand_placeholder(prompt: str, placeholder: str, num_vectors: int) -> str:
    """``prompt`` with the placeholder written out as all its tokens (``sks`` -> ``sks sks_1 sks_2``), as diffusers'
    pipelines rewrite prompts for a multi-vector embedding; unchanged for one vector."""
    if num_vectors <= 1:
        return prompt
    return prompt.replace(placeholder, " ".join(placeholder_tokens(placeholder, num_vectors)))


class PlaceholderEmbedding(nn.Module):
    """A token embedding whose rows for ids ``first_id ... first_id + n - 1`` come from a trained parameter.

    Args:
        base: The text encoder's token embedding (kept frozen and untouched).
        first_id: The id of the first new token (the new ids are consecutive).
        vectors: The new rows' initial values, shape (n, embedding dim); kept in float32 and cast to the base's
            dtype in the forward.
        tokens: The new tokens, in row order (the first is the placeholder).
    """

    def __init__(self, base: nn.Embedding, first_id: int, vectors: torch.Tensor, tokens: list[str]):
        super().__init__()
        if vectors.ndim != 2 or vectors.shape[1] != base.embedding_dim:
            raise ValueError(
                f"placeholder vectors must have shape (n, {base.embedding_dim}); got {tuple(vectors.shape)}"
            )
        if len(tokens) != vectors.shape[0]:
            raise ValueError(f"{len(tokens)} tokens for {vectors.shape[0]} placeholder vectors")
        self.base = base.requires_grad_(False)
        self.first_id = int(first_id)
        self.tokens = list(tokens)
        setattr(self, TRAINED, nn.Parameter(vectors.detach().to(torch.float32).clone()))

    @property
    def vectors(self) -> torch.Tensor:
        """The new rows (float32), the trained parameter."""
        return getattr(self, TRAINED)

    @property
    def placeholder(self) -> str:
        """The placeholder token (the first new token)."""
        return self.tokens[0]

    @property
    def embedding_dim(self) -> int:
        return self.base.embedding_dim

    @property
    def num_embeddings(self) -> int:
        """Rows addressable by id: the base's and the new ones."""
        return max(self.base.num_embeddings, self.first_id + len(self.tokens))

    @property
    def weight(self) -> torch.Tensor:
        """The whole matrix as the text encoder sees it (a new tensor; for reading, e.g. ``get_input_embeddings``)."""
        dtype = self.base.weight.dtype
        base = self.base.weight.detach()
        if self.first_id > base.shape[0]:  # ids between the base's rows and the new ones: zero rows
            gap = base.new_zeros(self.first_id - base.shape[0], base.shape[1])
            base = torch.cat([base, gap])
        new = self.vectors.detach().to(dtype)
        return torch.cat([base[: self.first_id], new, base[self.first_id + len(self.tokens) :]])

    def trained_rows(self) -> torch.Tensor:
        """The new rows in the dtype the text encoder uses them in (what it was trained with), detached, on CPU."""
        return self.vectors.detach().to(self.base.weight.dtype).cpu().contiguous()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        n = len(self.tokens)
        offset = input_ids - self.first_id
        new = (offset >= 0) & (offset < n)
        base_ids = input_ids.clamp(max=self.base.num_embeddings - 1)
        out = self.base(base_ids)
        rows = self.vectors.to(out.dtype)[offset.clamp(0, n - 1)]
        return torch.where(new.unsqueeze(-1), rows, out)

    def extra_repr(self) -> str:
        return f"tokens={self.tokens}, first_id={self.first_id}, dim={self.embedding_dim}"


def initializer_vector(tokenizer: Any, embedding: nn.Embedding, word: str) -> torch.Tensor:
    """The embedding of ``word``: its token's row, or the mean of its tokens' rows when the tokenizer splits it.

    Raises:
        ValueError: ``word`` gives no token.
    """
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"method.options.initializer_token={word!r} gives no token; pick a word, e.g. dog")
    with torch.no_grad():
        return embedding.weight[torch.tensor(ids, device=embedding.weight.device)].float().mean(0)


def add_placeholder_tokens(
    tokenizer: Any, text_encoder: nn.Module, options: TextualInversionOptions
) -> PlaceholderEmbedding:
    """Add the placeholder token(s) to ``tokenizer`` and put a :class:`PlaceholderEmbedding` (rows initialised from
    the initializer word) in ``text_encoder`` in place of its token embedding. Both are changed in place.

    Args:
        tokenizer: A transformers tokenizer.
        text_encoder: A transformers model with ``get_input_embeddings``/``set_input_embeddings`` (CLIP).
        options: The placeholder, the initializer word (must be set) and the number of vectors.

    Returns:
        The new embedding module.

    Raises:
        ValueError: A placeholder token the tokenizer already has, a text encoder that already has placeholder
            tokens, no initializer word, or new ids that are not consecutive.
    """
    if options.initializer_token is None:
        raise ValueError("textual inversion needs an initializer word (method.options.initializer_token)")
    base = text_encoder.get_input_embeddings()
    if isinstance(base, PlaceholderEmbedding):
        raise ValueError(f"the text encoder already has placeholder tokens {base.tokens}")
    vocab = tokenizer.get_vocab()
    taken = [t for t in options.tokens if t in vocab]
    if taken:
        raise ValueError(
            f"method.options.placeholder_token={options.placeholder_token!r}: {taken} already in the tokenizer's "
            "vocabulary, and textual inversion learns a new word: pick another one (e.g. '<sks>') and name the "
            "subject with it in task.data.instance_prompt and task.samples.prompts"
        )
    init = initializer_vector(tokenizer, base, options.initializer_token)
    first = len(tokenizer)
    added = tokenizer.add_tokens(options.tokens)
    ids = tokenizer.convert_tokens_to_ids(options.tokens)
    if added != len(options.tokens) or ids != list(range(first, first + len(options.tokens))):
        raise ValueError(f"the tokenizer gave the placeholder tokens {options.tokens} ids {ids}, not new ones")
    module = PlaceholderEmbedding(base, first, init.expand(options.num_vectors, -1), options.tokens)
    module.to(base.weight.device)
    text_encoder.set_input_embeddings(module)
    return module


def placeholder_embedding(model: nn.Module) -> PlaceholderEmbedding | None:
    """The :class:`PlaceholderEmbedding` inside ``model``, or None."""
    return next((m for m in model.modules() if isinstance(m, PlaceholderEmbedding)), None)


def learned_embeds(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{placeholder: (n, dim) tensor}``: the trained rows as diffusers' ``load_textual_inversion`` reads them.

    Raises:
        ValueError: ``model`` has no placeholder tokens.
    """
    module = placeholder_embedding(model)
    if module is None:
        raise ValueError(f"{type(model).__name__} has no placeholder tokens (textual inversion was not applied)")
    return {module.placeholder: module.trained_rows()}


def save_learned_embeds(model: nn.Module, folder: str | Path) -> Path:
    """Write ``folder/learned_embeds.safetensors`` (:func:`learned_embeds`), complete or not at all; it loads with
    ``StableDiffusionPipeline.load_textual_inversion(folder)``.

    Returns:
        The file's path.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LEARNED_EMBEDS
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    save_file(learned_embeds(model), str(tmp))
    os.replace(tmp, path)
    return path


def trains(name: str, spec: Any) -> bool:
    """Whether ``apply_method`` trains parameter ``name``: the placeholder rows only."""
    return name.rsplit(".", 1)[-1] == TRAINED


def check_model(model: nn.Module, spec: Any) -> None:
    """Refuse a model without placeholder tokens (the diffusion family adds them to the text encoder first).

    Raises:
        ValueError: naming what to run instead.
    """
    if placeholder_embedding(model) is None:
        raise ValueError(
            "textual_inversion trains the embedding rows of new tokens, which the diffusion task family adds to the "
            f"text encoder before training; {type(model).__name__} has none: use it with a diffusion model and task, "
            "e.g. model=tiny_sd task=dreambooth_animal method=textual_inversion"
        )
