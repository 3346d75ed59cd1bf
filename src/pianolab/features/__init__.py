"""Feature store and feature kinds: spectrograms, classic audio features, symbolic MIDI features."""
