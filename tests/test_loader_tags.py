"""Tag augmentations: shuffle after keep_tokens, per-tag dropout; [BOS] first, [EOS] last."""

import torch

from vampdiffusion.data.vocab import BOS, EOS, PAD
from vampdiffusion.latents.loader import drop_random_tags, shuffle_tags


def tag_rows(batch: int = 64, length: int = 24, n_tags: int = 20) -> torch.Tensor:
    """(batch, length): [BOS] 4..(4+n_tags-1) [EOS] [PAD]…"""
    row = [BOS] + list(range(4, 4 + n_tags)) + [EOS] + [PAD] * (length - n_tags - 2)
    return torch.tensor([row] * batch)


def test_shuffle_keeps_bos_kept_tokens_eos_and_padding_in_place():
    tags = tag_rows()
    out = shuffle_tags(tags, keep_tokens=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :3], tags[:, :3])       # [BOS] + 2 kept tags
    assert torch.equal(out[:, 21:], tags[:, 21:])     # [EOS] + padding
    assert torch.equal(out.sort(dim=1).values, tags.sort(dim=1).values)  # same multiset per row
    assert (out[:, 3:21] != tags[:, 3:21]).any(dim=1).float().mean() > 0.9  # almost every row reordered


def test_shuffle_respects_each_rows_own_length():
    tags = torch.tensor([[BOS, 4, 5, EOS, PAD, PAD], [BOS, 4, 5, 6, 7, EOS]])
    out = shuffle_tags(tags, keep_tokens=0, generator=torch.Generator().manual_seed(1))
    assert out[0, 3] == EOS and out[0, 4:].eq(PAD).all() and out[1, 5] == EOS
    assert sorted(out[1, 1:5].tolist()) == [4, 5, 6, 7]


def test_dropout_drops_the_requested_share_and_closes_the_gaps():
    tags = tag_rows()
    out = drop_random_tags(tags, p=0.5, keep_tokens=1, generator=torch.Generator().manual_seed(0))
    kept = [row[1:row.tolist().index(EOS)] for row in out]
    assert all(row[0].item() == 4 for row in kept)          # the kept token survives
    share = 1 - sum(len(r) - 1 for r in kept) / (64 * 19)  # of the 19 droppable tags
    assert abs(share - 0.5) < 0.05
    for row, k in zip(out, kept):
        assert row[0] == BOS and torch.equal(k, k.sort().values)  # order of the survivors unchanged
        assert row[len(k) + 2:].eq(PAD).all()                    # [EOS] right after them, then padding


def test_zero_dropout_is_the_identity():
    tags = tag_rows(4)
    assert torch.equal(drop_random_tags(tags, 0.0, 0, torch.Generator().manual_seed(0)), tags)
