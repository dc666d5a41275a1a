"""Inference: posterior families ``q_φ(z | x)``, the ELBO, the Λ-step strategies, the training
loop, checkpoints, reweighting, penalty selection and the estimator :class:`VariationalEB`."""
