"""A preset on a model without spectrograms: its MIDI-level parts shape the training copies'
vectors (features.augment_factor > 1), so it is accepted there and refused where it does nothing."""

import numpy as np
import pytest
import torch

from pianolab.config import config_from_dict
from pianolab.train.run import Roles, load_items, make_cell
from pianolab.train.validate import no_effect

TREES = {"features": {"vector": ["symbolic"]}, "model": {"name": "extra_trees_small"}}
MLP = {"features": {"vector": ["symbolic"]}, "model": {"name": "symbolic_mlp"}}


def _cfg(base: dict, preset: str, factor: int):
    return config_from_dict({**base, "features": {"vector": ["symbolic"], "augment_factor": factor},
                             "augment": {"preset": preset}})


@pytest.mark.parametrize("base, preset, factor, refused", [
    (TREES, "light", 3, False), (MLP, "heavy", 2, False),  # MIDI-level parts on the copies
    (MLP, "spec_light", 1, False),  # its mixup acts on the MLP's vectors
    (TREES, "light", 1, True), (TREES, "spec_light", 1, True), (MLP, "light", 1, True)])
def test_preset_without_spectrogram_refused_only_where_it_does_nothing(base, preset, factor, refused):
    assert (no_effect(_cfg(base, preset, factor), "augment.preset") is not None) is refused


def test_preset_changes_the_trees_training_copies_never_the_test_items(dataset):
    device, idx = torch.device("cpu"), np.arange(9)
    roles = Roles(idx[:6], np.array([], dtype=int), idx[6:])
    cells = {}
    for preset in ("light", "heavy"):
        cfg = _cfg(TREES, preset, 3)
        loaded = load_items(cfg, dataset, idx, device)
        cells[preset] = cell = make_cell(cfg, loaded, roles, None, device)
        assert len(cell.part["train"].vector) == 18 and len(cell.targets["train"]) == 18
        raw_test = loaded.rows(roles.test).vector
        np.testing.assert_array_equal(cell.part["test"].vector, cell.norm["scaler"].transform(raw_test))
        scaled_train = cell.norm["scaler"].transform(loaded.rows(roles.train).vector)
        np.testing.assert_array_equal(cell.part["train"].vector[:6], scaled_train)  # the originals first
        assert not np.allclose(cell.part["train"].vector[6:12], scaled_train)  # then augmented copies
    light, heavy = (cells[p].norm["scaler"] for p in ("light", "heavy"))
    assert not np.allclose(light.mean, heavy.mean)  # the preset's ranges shape the copies
