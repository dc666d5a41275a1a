"""The exact references and baselines every estimate is measured against: exact posteriors
and evidence, EM, importance sampling and Monte Carlo EM, naive estimates, rank matching,
the complete-data floor, and Kalman EM for latent paths."""
