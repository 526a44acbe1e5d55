"""MemoryGraph: episodes linked by similarity and by time; dreams are walks that recombine them.

Hippocampal replay during sleep is not a faithful rerun: it stitches fragments of different
episodes together. Here a dream is a short random walk over a graph whose edges join each
episode to its k nearest neighbours (cosine similarity of a chosen feature: the input or a
hidden layer) and to the episode stored just before and after it; the walk's episodes are then
blended with Dirichlet(1) weights into one new example with a soft target, or cut into patches
(each patch from a different episode, target weighted by patch area).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

RECOMBINATIONS = ("blend", "patch")


@dataclass(frozen=True)
class Dream:
    """Recombined examples: inputs (or hidden states), soft targets, and the walks behind them."""

    x: torch.Tensor
    target: torch.Tensor
    walks: torch.Tensor


@dataclass(frozen=True)
class Walks:
    """Random walks: the nodes visited [n, length] and the link taken at each step [n, length − 1]
    (a column of the node's links; −1 where an isolated node stayed put)."""

    nodes: torch.Tensor
    links: torch.Tensor


# The links of each node in a batch: neighbours [n, K] and which of them are live [n, K].
LinksOf = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def random_walks(
    start: torch.Tensor, length: int, links_of: LinksOf, generator: torch.Generator | None = None
) -> Walks:
    """Walks of ``length`` nodes from each ``start``, each step uniform over the node's live links.

    ``links_of(nodes)`` gives each node's links padded to one width, so a graph can keep them
    as a table (``MemoryGraph``) or build the rows on demand (the engine's link graph).
    """
    if length < 1:
        raise ValueError(f"length: expected ≥ 1, got {length}")
    node = start
    nodes, links = [node], []
    for _ in range(length - 1):
        neighbours, mask = links_of(node)
        live = mask.float()
        # An isolated node (no live link) stays put.
        live[live.sum(1) == 0, 0] = 1.0
        choice = torch.multinomial(live, 1, generator=generator)[:, 0]
        rows = torch.arange(node.shape[0])
        taken = mask[rows, choice]
        node = torch.where(taken, neighbours[rows, choice], node)
        nodes.append(node)
        links.append(torch.where(taken, choice, torch.full_like(choice, -1)))
    empty = torch.zeros((start.shape[0], 0), dtype=torch.long)
    return Walks(torch.stack(nodes, dim=1), torch.stack(links, dim=1) if links else empty)


class MemoryGraph:
    """Similarity (k nearest neighbours) and time (insertion order) links between episodes.

    Args:
        k: neighbours linked by similarity per episode.
        time_links: whether to also link each episode to its predecessor and successor in time.
        same_class: restrict similarity links to episodes of the same label, so blends stay on
            one class's manifold; links across classes come only through time.
    """

    def __init__(self, k: int = 5, time_links: bool = True, same_class: bool = True):
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ValueError(f"k: expected a positive integer, got {k!r}")
        self.k = k
        self.time_links = bool(time_links)
        self.same_class = bool(same_class)
        self.neighbours: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None

    def build(
        self,
        features: torch.Tensor,
        labels: torch.Tensor | None = None,
        order: torch.Tensor | None = None,
    ) -> MemoryGraph:
        """Link ``features[N, D]``; ``order[N]`` (e.g. storage step) defines the time links."""
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(f"features: expected [N ≥ 2, D], got {tuple(features.shape)}")
        n = features.shape[0]
        if labels is not None and labels.shape != (n,):
            raise ValueError(f"labels: expected shape ({n},), got {tuple(labels.shape)}")
        z = F.normalize(features.float(), dim=1)
        sim = z @ z.T
        sim.fill_diagonal_(-float("inf"))
        if self.same_class and labels is not None:
            sim = sim.masked_fill(labels[:, None] != labels[None, :], -float("inf"))
        k = min(self.k, n - 1)
        top = sim.topk(k, dim=1)
        neighbours = [top.indices]
        mask = [torch.isfinite(top.values)]
        if self.time_links:
            rank = torch.argsort(order if order is not None else torch.arange(n))
            position = torch.empty(n, dtype=torch.long)
            position[rank] = torch.arange(n)
            before = rank[(position - 1).clamp_min(0)]
            after = rank[(position + 1).clamp_max(n - 1)]
            neighbours += [before[:, None], after[:, None]]
            mask += [(position > 0)[:, None], (position < n - 1)[:, None]]
        self.neighbours = torch.cat(neighbours, dim=1)
        self.mask = torch.cat(mask, dim=1)
        return self

    def walk(self, n: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` random walks of ``length`` nodes, uniform over each node's live links."""
        if self.neighbours is None or self.mask is None:
            raise ValueError("graph: call build() before walking it")
        if length < 1:
            raise ValueError(f"length: expected ≥ 1, got {length}")
        neighbours, mask = self.neighbours, self.mask
        start = torch.randint(neighbours.shape[0], (n,), generator=generator)
        return random_walks(start, length, lambda node: (neighbours[node], mask[node]),
                            generator).nodes

    def dream(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        n_classes: int,
        n: int,
        length: int = 3,
        mode: str = "blend",
        generator: torch.Generator | None = None,
    ) -> Dream:
        """Recombine the episodes ``x`` (rows aligned with the built graph) along random walks.

        ``blend`` mixes the walk's episodes with Dirichlet(1) weights (uniform on the simplex,
        drawn as normalised exponentials so the ``generator`` seeds them); ``patch``
        (for image inputs [N, H, W] or flattened squares) takes each of a 2×2 grid of patches
        from a walk episode. Targets are the matching mixtures of one-hot labels.
        """
        if mode not in RECOMBINATIONS:
            raise ValueError(f"mode: expected one of {list(RECOMBINATIONS)}, got {mode!r}")
        walks = self.walk(n, length, generator)
        onehot = F.one_hot(y, n_classes).float()
        if mode == "blend":
            e = -torch.log(torch.rand(n, length, generator=generator).clamp_min(1e-12))
            w = e / e.sum(1, keepdim=True)
            xs = x[walks].float()
            shape = (n, length) + (1,) * (xs.ndim - 2)
            mixed = (w.view(shape) * xs).sum(1)
            target = (w[:, :, None] * onehot[walks]).sum(1)
            return Dream(mixed, target, walks)
        side = round(x[0].numel() ** 0.5)
        if side * side != x[0].numel():
            raise ValueError(f"x: patch recombination needs square images, got {tuple(x.shape)}")
        images = x.float().reshape(-1, side, side)
        grid = torch.randint(length, (n, 2, 2), generator=generator)
        half = side // 2
        rows = torch.arange(side) >= half
        which = grid[:, rows.long()][:, :, rows.long()]  # [n, side, side] walk position per pixel
        source = torch.gather(walks, 1, which.reshape(n, -1)).reshape(n, side, side)
        pixels = images[source, torch.arange(side)[None, :, None], torch.arange(side)[None, None]]
        area = F.one_hot(which.reshape(n, -1), length).float().mean(1)
        target = (area[:, :, None] * onehot[walks]).sum(1)
        return Dream(pixels.reshape(n, *x.shape[1:]), target, walks)
