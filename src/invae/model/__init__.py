"""The model: priors ``g(z; θ)`` with unknown parameters, forward operators ``G`` and the
known likelihoods ``p(x | z)`` built from them."""
