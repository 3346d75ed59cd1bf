"""MIDI -> audio: registered renderers and MIDI-level augmentation."""

from pianolab.render.augment import AugmentParams, augment_midi, augmented_bytes, draw_params
from pianolab.render.renderers import RENDERERS, make_renderer

__all__ = ["RENDERERS", "AugmentParams", "augment_midi", "augmented_bytes", "draw_params", "make_renderer"]
