import json

import numpy as np
import pytest

from pianolab.data.percepiano import DIMENSIONS, load_dataset, parse_stem
from pianolab.data.ratings import load_ratings, normalise_filename, split_half_reliability
from pianolab.errors import PianolabError


def test_counts_and_groups(dataset):
    assert len(dataset) == 1001
    assert len(set(dataset.column("group"))) == 83
    assert len(dataset.unlabelled_midi) == 10
    assert dataset.labels.shape == (1001, 19) == dataset.label_std.shape
    assert len(DIMENSIONS) == 19
    assert set(dataset.column("piece")) == {
        "Beethoven_WoO80", "Schubert_D935_no.3", "Schubert_D960_mv2", "Schubert_D960_mv3"}


def test_space_prefixed_midi_is_found(dataset):
    item = dataset.items[dataset.index["Schubert_D935_no.3_4bars_2_1"]]
    assert item.midi_path.name == " Schubert_D935_no.3_4bars_2_1.mid"
    assert item.midi_path.is_file()


def test_stem_fields_and_deadpan(dataset):
    item = dataset.items[dataset.index["Beethoven_WoO80_var15_8bars_Score2_10"]]
    assert item.deadpan and item.performer == "deadpan"
    assert item.group == "Beethoven_WoO80_var15_8bars_10"
    assert (item.composer, item.bars, item.section) == ("Beethoven", 8, "Beethoven_WoO80_var15")
    human = dataset.items[dataset.index["Schubert_D960_mv3_8bars_3_12"]]
    assert not human.deadpan and human.performer == "3" and human.piece == "Schubert_D960_mv3"
    # The 20th label entry is the performer index, kept as metadata, not as a label.
    raw = json.loads((dataset.root / "labels/label_2round_mean_reg_19_with0_rm_highstd0.json").read_text())
    assert human.performer_index == raw[human.stem][19]
    assert human.labels == tuple(raw[human.stem][:19])


def test_parse_stem_rejects_foreign_names():
    with pytest.raises(PianolabError, match="not a PercePiano name"):
        parse_stem("hello.mid")


def test_data_version_changes_with_labels(data_copy, dataset):
    v1 = load_dataset(data_copy).version
    assert v1 == dataset.version
    path = data_copy / "labels/label_2round_mean_reg_19_with0_rm_highstd0.json"
    d = json.loads(path.read_text())
    d[next(iter(d))][0] = 0.5
    path.write_text(json.dumps(d))
    assert load_dataset(data_copy).version != v1


def test_ratings_quirks(dataset):
    assert normalise_filename("Schubert_D935_no.3_4bars_score_33.wav") == "Schubert_D935_no.3_4bars_Score_33"
    assert normalise_filename(" X_8bars_score2_1.WAV") == "X_8bars_Score2_1"
    r = load_ratings(dataset.root)
    assert r.invalid_rows > 0  # the bundled CSV has rows with values above 7
    vals = r.table[[f"d{i}" for i in range(19)]].to_numpy()
    assert np.nanmin(vals) >= 1 and np.nanmax(vals) <= 7  # 0 became NaN, >7 rows dropped
    assert set(dataset.stems) <= set(r.table["stem"])


def test_reliability_matches_readme(dataset):
    rel = split_half_reliability(dataset, load_ratings(dataset.root), n_splits=10)
    assert 0.74 < rel.overall.mean() < 0.82  # README: about 0.78
    assert 0.40 < rel.one_vs_rest.mean() < 0.52  # README: about 0.46
    assert rel.within_group.mean() < rel.overall.mean()


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda root: (root / "labels/label_2round_mean_reg_19_with0_rm_highstd0.json").write_text("{oops"),
         "malformed label file"),
        (lambda root: (root / "labels/label_2round_mean_reg_19_with0_rm_highstd0.json").write_text("[1, 2]"),
         "malformed label file"),
        (lambda root: (root / "labels/label_2round_std_reg_19_with0_rm_highstd0.json").unlink(),
         "label file missing"),
    ],
)
def test_bad_label_files(data_copy, corrupt, message):
    corrupt(data_copy)
    with pytest.raises(PianolabError, match=message) as e:
        load_dataset(data_copy)
    assert "\n" not in str(e.value) and "labels/" in str(e.value)


def test_missing_data_folder(tmp_path):
    with pytest.raises(PianolabError, match="data folder not found"):
        load_dataset(tmp_path / "nowhere")


def test_label_without_midi_and_midi_without_label(data_copy):
    (data_copy / "midi" / "Schubert_D960_mv3_8bars_3_12.mid").unlink()
    ds = load_dataset(data_copy)
    assert len(ds) == 1000 and any("has no MIDI file" in w for w in ds.warnings)
    with pytest.raises(PianolabError, match="Schubert_D960_mv3_8bars_3_12.*has no MIDI file"):
        load_dataset(data_copy, strict=True)
    (data_copy / "midi" / "Extra_8bars_1_1.mid").write_bytes(b"")
    assert "Extra_8bars_1_1" in load_dataset(data_copy).unlabelled_midi


def test_label_out_of_range(data_copy):
    path = data_copy / "labels/label_2round_mean_reg_19_with0_rm_highstd0.json"
    d = json.loads(path.read_text())
    d[next(iter(d))][3] = 3.5
    path.write_text(json.dumps(d))
    with pytest.raises(PianolabError, match="outside 0..1"):
        load_dataset(data_copy)


def test_ratings_out_of_range_rows_are_counted(data_copy):
    path = data_copy / "labels/total_2rounds.csv"
    lines = path.read_text().splitlines()
    before = load_ratings(data_copy).invalid_rows
    cols = lines[1].split(",")
    cols[3] = "9.0"
    lines[1] = ",".join(cols)
    path.write_text("\n".join(lines) + "\n")
    assert load_ratings(data_copy).invalid_rows == before + 1
