"""The one writer of output artifacts: all of an artifact, or nothing of it."""

from __future__ import annotations

import os

import pytest

from components.common import artifact_output


def test_a_failed_block_removes_what_it_wrote_and_keeps_what_was_there(tmp_path):
    out = tmp_path / "artifact"
    out.mkdir()
    (out / "kept.json").write_text("{}")
    with pytest.raises(OSError, match="disk full"):
        with artifact_output.all_or_nothing(str(out)):
            (out / "Format-Serving").mkdir()
            (out / "Format-Serving" / "saved_model.pb").write_bytes(b"x")
            (out / "record.json").write_text("{}")
            raise OSError("disk full")
    assert os.listdir(out) == ["kept.json"]


def test_write_model_writes_the_layout_and_nothing_when_a_part_fails(
    tmp_path, tiny_model, monkeypatch
):
    from components.common import model_io

    good = str(tmp_path / "good")
    written = artifact_output.write_model(
        good, model=tiny_model, flatbuffer=b"tflite", json_files={"record.json": {"a": 1}}
    )
    assert written["serving_model_dir"] == model_io.serving_model_dir(good)
    assert open(written["tflite_path"], "rb").read() == b"tflite"
    assert sorted(os.listdir(good)) == ["Format-Serving", "Format-TFLite", "record.json"]

    def disk_full(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(model_io, "write_tflite", disk_full)
    bad = str(tmp_path / "bad")
    with pytest.raises(OSError, match="disk full"):
        artifact_output.write_model(
            bad, serving_source=written["serving_model_dir"], flatbuffer=b"tflite"
        )
    assert not os.path.exists(bad) or os.listdir(bad) == []


def test_empty_keeps_the_directory(tmp_path):
    out = tmp_path / "artifact"
    (out / "sub").mkdir(parents=True)
    (out / "file").write_text("x")
    artifact_output.empty(str(out))
    assert out.is_dir() and os.listdir(out) == []
    artifact_output.empty(str(tmp_path / "new"))
    assert (tmp_path / "new").is_dir()
