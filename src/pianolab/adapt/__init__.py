"""Adapting a trained perception model (plan E2): few-shot to a new piece or performer, domain
adaptation, continual learning of new dimensions, self-supervised pretraining."""
