"""A small variational autoencoder: the generator that generative replay samples past inputs from.

Fully connected encoder and decoder (ReLU hidden layers), a diagonal Gaussian posterior and a
standard normal prior; the decoder ends in a sigmoid, so samples lie in [0, 1] like the flat
image inputs of ``engram.data.streams``. ``loss`` is the negative ELBO per item: binary
cross-entropy of the reconstruction summed over inputs plus the KL divergence to the prior
(Kingma & Welling 2014), the generator of deep generative replay (Shin et al. 2017; van de Ven
et al. 2020, 2022).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn


def _stack(sizes: list[int]) -> nn.Sequential:
    """Linear layers of ``sizes``, a ReLU after each."""
    layers: list[nn.Module] = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Encoder ``n_in → hidden × layers → (μ, log σ²)`` of ``z_dim``, decoder back to ``n_in``.

    Args:
        n_in: size of a flat input (items in [0, 1]).
        hidden: units per hidden layer.
        z_dim: size of the latent code.
        layers: hidden layers in the encoder and in the decoder (≥ 1).
    """

    def __init__(self, n_in: int, hidden: int = 400, z_dim: int = 100, layers: int = 2):
        super().__init__()
        for name, value in (("n_in", n_in), ("hidden", hidden), ("z_dim", z_dim),
                            ("layers", layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        self.n_in, self.z_dim = n_in, z_dim
        self.encoder = _stack([n_in] + [hidden] * layers)
        self.to_mu = nn.Linear(hidden, z_dim)
        self.to_logvar = nn.Linear(hidden, z_dim)
        self.decoder = nn.Sequential(_stack([z_dim] + [hidden] * layers), nn.Linear(hidden, n_in))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance of ``x[B, n_in]``."""
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"x: expected shape [B, {self.n_in}], got {tuple(x.shape)}")
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder pre-activations (the sigmoid of these is the reconstruction)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x`` through one reparameterised draw of its code."""
        return torch.sigmoid(self.decode_logits(self._draw(*self.encode(x))))

    @staticmethod
    def _draw(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Negative ELBO of each item of ``x`` (reconstruction BCE + KL), shape [B]."""
        mu, logvar = self.encode(x)
        logits = self.decode_logits(self._draw(mu, logvar))
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
        return recon + kl

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` inputs decoded from codes drawn from the prior, in [0, 1] (global torch RNG)."""
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"n: expected a positive integer, got {n!r}")
        device = self.to_mu.weight.device
        return torch.sigmoid(self.decode_logits(torch.randn(n, self.z_dim, device=device)))
