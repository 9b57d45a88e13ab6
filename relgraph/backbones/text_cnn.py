"""A small text encoder trained from scratch: word embeddings and 1-d convolutions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from relgraph.backbones.base import Backbone
from relgraph.backbones.catalog import register_backbone

__all__ = ["TextCNN"]


@register_backbone("text_cnn")
class TextCNN(Backbone):
    """A sentence CNN in the manner of Kim (2014): embed the tokens, convolve, max-pool.

    Each kernel size ``k`` gives ``channels`` feature detectors over windows of ``k`` tokens
    (``k = 1`` is a bag of words); their maxima over the text's tokens (padding excluded) are
    concatenated; windows start on a token and may run into the padding (zero embeddings), so
    an embedding does not depend on how much padding follows. Token ``0`` is padding (its
    embedding stays zero), token ``1`` out of vocabulary, as the ``tokens`` encoder of
    :class:`~relgraph.data.text.TextDataset` writes them; ``vocab_size`` comes from the
    dataset (``preprocessing["vocab_size"]``).

    Args:
        vocab_size: number of token ids (vocabulary + 2).
        embed_dim: word embedding size. Default ``128``.
        channels: filters per kernel size. Default ``128``.
        kernel_sizes: window lengths. Default ``(1, 2, 3)``.
        dropout: dropout on the word embeddings in training. Default ``0.1``.

    Shapes:
        - :meth:`forward`: ``[m, L]`` long -> ``[m, channels * len(kernel_sizes)]``
        - :meth:`forward_map`: ``[m, L]`` -> ``[m, out_dim, 1, 1]``
    """

    def __init__(self, vocab_size: int, embed_dim: int = 128, channels: int = 128,
                 kernel_sizes: Sequence[int] = (1, 2, 3), dropout: float = 0.1) -> None:
        super().__init__()
        if vocab_size < 3:
            raise ValueError(f"vocab_size must be >= 3 (padding, unknown, a word), got "
                             f"{vocab_size}")
        self.vocab_size = int(vocab_size)
        self.embed = nn.Embedding(self.vocab_size, embed_dim, padding_idx=0)
        nn.init.normal_(self.embed.weight, std=embed_dim ** -0.5)
        with torch.no_grad():
            self.embed.weight[0].zero_()
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, channels, k) for k in self.kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = channels * len(self.kernel_sizes)
        self.out_channels = self.out_dim

    def forward_map(self, x: Tensor) -> Tensor:
        """Max-pooled n-gram features of token ids as a 1x1 map:
        ``[m, L] (long) -> [m, out_dim, 1, 1]``."""
        if x.dim() != 2 or x.dtype != torch.long:
            raise ValueError(f"expected token ids [m, L] (long), got {x.dtype} shape "
                             f"{tuple(x.shape)}")
        if x.numel() and int(x.max()) >= self.vocab_size:
            raise ValueError(f"token id {int(x.max())} >= vocab_size {self.vocab_size}: the "
                             "data's vocabulary is not the one this encoder was built for")
        valid = x != 0                                                     # [m, L]
        h = self.dropout(self.embed(x)).transpose(1, 2)                    # [m, e, L]
        pooled = []
        for k, conv in zip(self.kernel_sizes, self.convs, strict=True):
            # every window that starts on a token exists whatever the padding: pad k - 1
            z = F.relu(conv(F.pad(h, (0, k - 1))))                         # [m, c, L]
            pooled.append(z.masked_fill(~valid.unsqueeze(1), 0.0).amax(-1))
        return torch.cat(pooled, dim=1)[..., None, None]
