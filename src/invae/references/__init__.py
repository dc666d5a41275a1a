"""The exact references and baselines every estimate is measured against: exact posteriors
and evidence, EM, importance sampling and Monte Carlo EM, naive estimates, rank matching and
the complete-data floor."""
