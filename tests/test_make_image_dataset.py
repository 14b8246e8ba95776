"""benchmarks/make_image_dataset.py: layout, determinism, split hygiene, Parquet, CLI errors (no Ray)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "make_image_dataset.py"
PER_CLASS, SIZE = 12, 16
# 12 x (0.7, 0.15, 0.15) by largest remainder: 8, 2, 2.
EXPECTED = {"train": 8, "val": 2, "test": 2}
CLASSES = [str(c) for c in range(10)]


@pytest.fixture(scope="module")
def mid():
    spec = importlib.util.spec_from_file_location("make_image_dataset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small(mid, tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "png"
    return out, mid.make_dataset(out, PER_CLASS, size=SIZE, seed=0, verbose=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_folder_layout_counts_and_dataset_json(small):
    out, result = small
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "test", "train", "val"]
    for split, n in EXPECTED.items():
        assert sorted(p.name for p in (out / split).iterdir()) == CLASSES
        for cls in CLASSES:
            files = sorted((out / split / cls).iterdir())
            assert [p.name for p in files] == [f"{i:05d}.png" for i in range(n)]
    info = json.loads((out / "dataset.json").read_text())
    assert info["classes"] == CLASSES and info["size"] == SIZE and info["seed"] == 0
    assert info["source"] == "sklearn digits"
    assert info["counts"] == {s: {c: n for c in CLASSES} for s, n in EXPECTED.items()}
    assert result["counts"] == info["counts"] and result["files"] == 10 * PER_CLASS and result["bytes"] > 0


def test_images_are_rgb_of_the_requested_size(small):
    from PIL import Image

    out, _ = small
    paths = sorted(out.rglob("*.png"))
    assert len(paths) == 10 * PER_CLASS
    for path in paths:
        with Image.open(path) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (SIZE, SIZE)
            pixels = np.asarray(im)
        assert pixels.std() > 10  # a digit on a background, not a flat image


def test_same_seed_is_byte_identical_and_another_seed_differs(mid, small, tmp_path):
    out, _ = small
    again = mid.make_dataset(tmp_path / "again", PER_CLASS, size=SIZE, seed=0, verbose=False)
    assert _files(tmp_path / "again") == _files(out)
    assert again["source_indices"] == small[1]["source_indices"]
    mid.make_dataset(tmp_path / "other", PER_CLASS, size=SIZE, seed=1, verbose=False)
    first, other = _files(out), _files(tmp_path / "other")
    assert first.keys() == other.keys()
    images = [k for k in first if k.endswith(".png")]
    assert sum(first[k] != other[k] for k in images) == len(images)


def test_worker_processes_do_not_change_the_files(mid, small, tmp_path):
    out, _ = small
    mid.make_dataset(tmp_path / "forked", PER_CLASS, size=SIZE, seed=0, workers=2, verbose=False)
    assert _files(tmp_path / "forked") == _files(out)


def test_source_pools_are_disjoint_and_stratified(mid, small):
    _, result = small
    _, labels = mid.load_source()
    pools = {s: set(result["source_indices"][s]) for s in ("train", "val", "test")}
    assert not pools["train"] & pools["val"] and not pools["train"] & pools["test"]
    assert not pools["val"] & pools["test"]
    assert set().union(*pools.values()) == set(range(len(labels)))
    for split, pool in pools.items():
        per_class = np.bincount(labels[sorted(pool)], minlength=10)
        share = {"train": 0.7, "val": 0.15, "test": 0.15}[split]
        assert np.all(np.abs(per_class / np.bincount(labels) - share) < 0.02)


def test_each_split_renders_only_its_own_source_digits(mid, tmp_path, monkeypatch):
    images, labels = mid.load_source()
    calls = []
    render = mid.render

    def recording_render(sources, size, rng):
        calls.append(sources.copy())
        return render(sources, size, rng)

    monkeypatch.setattr(mid, "render", recording_render)
    result = mid.make_dataset(tmp_path / "out", PER_CLASS, size=SIZE, seed=3, workers=1, verbose=False)
    # One batch per (split, class) chunk at this size, in split then class order.
    assert len(calls) == 30
    as_bytes = {s: {images[i].tobytes(): labels[i] for i in idx} for s, idx in result["source_indices"].items()}
    only_train = as_bytes["train"].keys() - as_bytes["val"].keys() - as_bytes["test"].keys()
    for k, sources in enumerate(calls):
        split, cls = ("train", "val", "test")[k // 10], k % 10
        assert len(sources) == EXPECTED[split]
        for digit in sources:
            assert as_bytes[split].get(digit.tobytes()) == cls
            if split != "train":
                assert digit.tobytes() not in only_train


def test_parquet_shards(mid, small, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    out = tmp_path / "pq"
    result = mid.make_dataset(out, PER_CLASS, size=SIZE, seed=0, parquet=True, rows_per_shard=7, verbose=False)
    length = SIZE * SIZE * 3
    for split, n in EXPECTED.items():
        rows = 10 * n
        shards = sorted((out / split).iterdir())
        assert [p.name for p in shards] == [f"part-{i:05d}.parquet" for i in range(-(-rows // 7))]
        tables = [pq.read_table(p) for p in shards]
        assert [t.num_rows for t in tables] == [min(7, rows - 7 * i) for i in range(len(tables))]
        for table in tables:
            assert table.column_names == ["image", "label"]
            assert table.schema.field("image").type == pa.list_(pa.uint8(), length)
            assert table.schema.field("label").type == pa.int64()
            assert json.loads(table.schema.metadata[b"raysweep.image_shape"]) == [SIZE, SIZE, 3]
        table = pa.concat_tables(tables)
        labels = table.column("label").to_numpy()
        assert np.bincount(labels, minlength=10).tolist() == [n] * 10
        pixels = np.asarray(table.column("image").combine_chunks().values).reshape(-1, SIZE, SIZE, 3)
        # The same pixels as the PNG layout's, for the same arguments (rows shuffled).
        png_out, _ = small
        for cls in range(10):
            from_png = sorted(np.asarray(Image.open(p)).tobytes() for p in (png_out / split / str(cls)).iterdir())
            assert sorted(p.tobytes() for p in pixels[labels == cls]) == from_png
    assert result["counts"] == small[1]["counts"] and result["format"] == "parquet"
    assert json.loads((out / "dataset.json").read_text())["counts"] == result["counts"]


def test_jpeg_format(mid, tmp_path):
    from PIL import Image

    mid.make_dataset(tmp_path / "jpg", 3, size=8, fmt="jpeg", splits=(0.4, 0.3, 0.3), verbose=False)
    paths = sorted((tmp_path / "jpg").rglob("*.jpg"))
    assert len(paths) == 30
    with Image.open(paths[0]) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (8, 8)


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60)


def test_non_empty_out_dir_needs_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "train" / "0").mkdir(parents=True)
    (out / "train" / "0" / "99999.png").write_bytes(b"stale")
    proc = _run(out, "--per-class", 3, "--size", 8)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and "OUT_DIR" in proc.stderr and "--force" in proc.stderr
    assert "Traceback" not in proc.stderr and not (out / "dataset.json").exists()

    proc = _run(out, "--per-class", 3, "--size", 8, "--force")
    assert proc.returncode == 0, proc.stderr
    assert "done: 30 images" in proc.stdout.splitlines()[-1]
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in (out / "train" / "0").iterdir()) == ["00000.png"]  # the stale file is gone


@pytest.mark.parametrize("args, named", [
    (["--per-class", "2"], "--per-class"),
    (["--per-class", "x"], "--per-class"),
    ([], "--per-class"),
    (["--per-class", "5", "--size", "4"], "--size"),
    (["--per-class", "5", "--splits", "0.5,0.5"], "--splits"),
    (["--per-class", "5", "--splits", "0.7,0.2,0.2"], "--splits"),
    (["--per-class", "5", "--splits", "a,b,c"], "--splits"),
    (["--per-class", "5", "--format", "gif"], "--format"),
    (["--per-class", "5", "--seed", "-1"], "--seed"),
    (["--per-class", "5", "--parquet", "--rows-per-shard", "0"], "--rows-per-shard"),
])
def test_bad_arguments_exit_2_with_one_line(mid, tmp_path, capsys, args, named):
    with pytest.raises(SystemExit) as exit_:
        mid.main([str(tmp_path / "out"), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and named in err
    assert not (tmp_path / "out").exists()


def test_bad_argument_from_the_command_line_has_no_traceback(tmp_path):
    proc = _run(tmp_path / "out", "--per-class", 5, "--splits", "0.9,0.9,0.9")
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "--splits" in proc.stderr and "Traceback" not in proc.stderr
