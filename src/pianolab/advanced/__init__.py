"""Beyond single models: ensembles (more to come: meta-learning, domain adaptation)."""
