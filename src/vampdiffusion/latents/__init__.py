"""Latents: the frozen VAE, aspect buckets, shard files, the model's latent space, encoding, the training loader."""
