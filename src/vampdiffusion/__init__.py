"""VampDiffusion-V1: a from-scratch anime text-to-image latent diffusion model with dual MoE."""

__version__ = "0.1.0"
