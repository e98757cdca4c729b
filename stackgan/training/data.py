"""Training batches: (image, caption) pairs grouped by caption, drawn deterministically per step.

A batch is `batch_size / group_size` groups. Each group picks a caption; the fake side
draws `group_size` noise vectors for it and the real side `group_size` images that match
it (for `shapes`: images whose attributes agree with every attribute the caption names;
otherwise: the images whose captions lie nearest in embedding space). Minibatch features
computed within a group can then see per-caption collapse.

Batch k of stage s is a pure function of (seed, stage, step, rank), so a resumed run
draws exactly the batches the interrupted one would have.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset


@dataclass
class CaptionTable:
    """Unique captions of a data set and, per image, the ids of its captions."""

    texts: list[str]
    per_image: list[list[int]]

    @classmethod
    def build(cls, dataset) -> "CaptionTable":
        ids: dict[str, int] = {}
        per_image = []
        for i in range(len(dataset)):
            row = []
            for c in dataset.captions(i):
                row.append(ids.setdefault(c, len(ids)))
            per_image.append(row)
        return cls(list(ids), per_image)

    def named_attributes(self, dataset) -> list[dict[str, str]]:
        """Per caption id, the attributes it names (data sets with `caption_attributes`, e.g. `shapes`)."""
        named: list[dict[str, str] | None] = [None] * len(self.texts)
        for i, ids in enumerate(self.per_image):
            for c, a in zip(ids, dataset.caption_attributes(i)):
                if named[c] is None:
                    named[c] = a
        return named


class GroupSampler:
    """Deterministic grouped batches of (image index, caption id) keys."""

    def __init__(self, dataset, table: CaptionTable, embeddings: torch.Tensor, batch_size: int, group_size: int,
                 seed: int, neighbours: int = 16):
        self.dataset, self.table = dataset, table
        self.batch_size, self.group_size, self.seed = batch_size, group_size, seed
        self.exact = hasattr(dataset, "caption_attributes") and hasattr(dataset, "matching")
        if not self.exact and group_size > 1:
            # Mean caption embedding per image, for nearest-neighbour groups of real images.
            self.image_emb = torch.nn.functional.normalize(
                torch.stack([embeddings[ids].mean(0) for ids in table.per_image]), dim=1
            )
        self.neighbours = neighbours
        self.embeddings = embeddings
        self._match_cache: dict[tuple[int, int], np.ndarray] = {}

    def _matches(self, i: int, k: int) -> np.ndarray:
        key = (i, k)
        if key not in self._match_cache:
            if self.exact:
                m = self.dataset.matching(self.dataset.caption_attributes(i)[k])
            else:
                sims = self.image_emb @ torch.nn.functional.normalize(self.image_emb[i], dim=0)
                m = sims.topk(min(self.neighbours, len(sims))).indices.numpy()
            if len(self._match_cache) > 200_000:
                self._match_cache.clear()
            self._match_cache[key] = m
        return self._match_cache[key]

    def batch(self, stage: int, step: int, rank: int = 0) -> list[tuple[int, int]]:
        rng = random.Random(f"{self.seed}-{stage}-{step}-{rank}")
        n = len(self.dataset)
        keys = []
        for _ in range(self.batch_size // self.group_size):
            i = rng.randrange(n)
            k = rng.randrange(len(self.table.per_image[i]))
            cap = self.table.per_image[i][k]
            if self.group_size == 1:
                keys.append((i, cap))
                continue
            m = self._matches(i, k)
            others = [int(m[rng.randrange(len(m))]) for _ in range(self.group_size - 1)]
            keys.extend((j, cap) for j in [i, *others])
        return keys

    def mismatched(self, captions: list[int], stage: int, step: int, rank: int, share: float,
                   pool: int = 1024, pick: int = 8) -> list[int]:
        """One mismatched caption id per group (`captions`: the groups' caption ids), -1 meaning
        "the next group's caption". Deterministic in (seed, stage, step, rank), like `batch`.

        A share `share` of the groups get a hard negative instead: one of the `pick` captions
        nearest to theirs (cosine of the text embeddings, searched among the `pool` nearest) that
        contradicts it. On data sets with attributes (`shapes`) that is a caption naming one of
        the same attributes with another value, so it describes none of the group's images; on
        others, a caption of another image (which may still fit, the usual risk of mismatched
        pairs, made likelier by nearness). Random mismatches differ from the real caption in
        whatever is easiest to see (colour, background); these differ in what the text embedding
        separates least, which is what the discriminator must then learn to check.
        """
        rng = random.Random(f"{self.seed}-{stage}-{step}-{rank}-mismatch")
        chosen = [g for g in range(len(captions)) if rng.random() < share]
        out = [-1] * len(captions)
        if not chosen:
            return out
        self._index_captions()
        query = self.caption_emb[[captions[g] for g in chosen]]
        near = (query @ self.caption_emb.t()).topk(min(pool, len(self.caption_emb)), dim=1).indices.tolist()
        for g, cands in zip(chosen, near):
            own = captions[g]
            valid = [c for c in cands if self._contradicts(own, c)][:pick]
            if valid:
                out[g] = valid[rng.randrange(len(valid))]
        return out

    def _index_captions(self) -> None:
        if hasattr(self, "caption_emb"):
            return
        self.caption_emb = torch.nn.functional.normalize(self.embeddings.float(), dim=1)
        if self.exact:
            self.caption_named = self.table.named_attributes(self.dataset)
        else:
            self.caption_owner = [0] * len(self.table.texts)
            for i, ids in reversed(list(enumerate(self.table.per_image))):  # the first image naming it wins
                for c in ids:
                    self.caption_owner[c] = i

    def _contradicts(self, own: int, other: int) -> bool:
        if self.exact:
            a, b = self.caption_named[own], self.caption_named[other]
            return any(k in b and b[k] != v for k, v in a.items())
        return self.caption_owner[own] != self.caption_owner[other]


class PairDataset(Dataset):
    """Map-style view for a DataLoader: key (image index, caption id) -> (uint8 image, caption id, image index)."""

    def __init__(self, dataset, resolution: int):
        self.dataset, self.resolution = dataset, resolution
        self.images = dataset.images(resolution) if hasattr(dataset, "images") else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        i, cap = key
        img = self.images[i] if self.images is not None else self.dataset.image(i, self.resolution)
        return img, cap, i


class StepBatches(torch.utils.data.Sampler):
    """Batch sampler yielding the keys of steps [start, stop) of one stage."""

    def __init__(self, sampler: GroupSampler, stage: int, start: int, stop: int, rank: int):
        self.sampler, self.stage, self.start, self.stop, self.rank = sampler, stage, start, stop, rank

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.sampler.batch(self.stage, step, self.rank)


def collate(items):
    images = torch.stack([it[0] for it in items])
    caps = torch.tensor([it[1] for it in items], dtype=torch.long)
    index = torch.tensor([it[2] for it in items], dtype=torch.long)
    return images, caps, index
