"""Latent paths: SDE priors over paths observed through noise, their posterior family, and the
exact and particle references."""
