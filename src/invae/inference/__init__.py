"""Inference: posterior families ``q_φ(z | x)``, the ELBO, the Λ-step strategies and the
averaging of their statistics, the training loop, checkpoints, reweighting, penalty selection
and the estimator :class:`VariationalEB`."""
