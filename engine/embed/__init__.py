"""Embedding networks, triplet training and latent interventions (ALI, PALI, PLI)."""
