"""prepare_imagenet.py: short side and aspect ratio, resume after a kill, unreadable images named,
bad arguments refused. Generated ImageFolder trees of a few tiny images of several shapes."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comixup.prepare import imagenet as prepare_imagenet

SIZES = (24, 40)
# (width, height): landscape, portrait, square, one already smaller than both sizes, an odd ratio
SHAPES = [(64, 48), (30, 52), (45, 45), (16, 21), (77, 31)]


def _write_tree(src: Path) -> dict[str, tuple[int, int]]:
    """SRC/{train,val}/<class>/<file> with images of SHAPES in several formats and modes, plus one
    file that is not an image and one truncated JPEG. Returns the good images' sizes by path."""
    rng = np.random.default_rng(0)
    good = {}
    for split in ("train", "val"):
        for c, cls in enumerate(("n01", "n02")):
            folder = src / split / cls
            folder.mkdir(parents=True)
            for k, (w, h) in enumerate(SHAPES):
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                image = Image.fromarray(pixels)
                name = f"{cls}_{k}.JPEG"
                if k == 1:  # a grayscale PNG and a palette PNG: the outputs are RGB JPEGs all the same
                    image, name = image.convert("L" if c == 0 else "P"), f"{cls}_{k}.png"
                image.save(folder / name)
                good[f"{split}/{cls}/{name}"] = (w, h)
    (src / "train" / "n01" / "notes.txt").write_text("not an image, ignored as ImageFolder ignores it")
    (src / "train" / "n01" / "broken.JPEG").write_bytes(b"this is not a JPEG")
    whole = (src / "val" / "n02" / "n02_0.JPEG").read_bytes()
    (src / "val" / "n02" / "cut.JPEG").write_bytes(whole[: len(whole) // 3])
    return good


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "src"
    return src, tmp_path / "dst", _write_tree(src)


def _run(src: Path, dst: Path, workers: int = 2, *extra: str) -> int:
    argv = ["--src", str(src), "--dst", str(dst), "--sizes", *map(str, SIZES), "--workers", str(workers), *extra]
    return prepare_imagenet.main(argv)


def _outputs(dst: Path) -> dict[str, int]:
    """Every file under dst (hidden ones included) with its modification time in ns."""
    return {str(p.relative_to(dst)): p.stat().st_mtime_ns for p in sorted(dst.rglob("*")) if p.is_file()}


def test_short_side_aspect_and_unreadable_images_named(tree, capsys):
    src, dst, good = tree
    assert _run(src, dst) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("error: ") for line in err)
    named = sorted(line for line in err if "cannot read image" in line)
    assert len(named) == 2
    assert str(src / "train" / "n01" / "broken.JPEG") in named[0]
    assert str(src / "val" / "n02" / "cut.JPEG") in named[1]
    assert "2 images could not be read" in err[-1]
    expected = {f"{size}/{rel}" for size in SIZES for rel in good}
    assert set(_outputs(dst)) == expected  # no output for the bad files, no temporary files left
    for size in SIZES:
        for rel, (w, h) in good.items():
            with Image.open(dst / str(size) / rel) as out:
                assert out.format == "JPEG" and out.mode == "RGB"
                ow, oh = out.size
            ratio = min(w, h) / size  # the published sizing: each side truncated
            assert (ow, oh) == (int(w / ratio), int(h / ratio)), (rel, out.size)
            assert size - 1 <= min(ow, oh) <= size, (rel, out.size)  # smaller sources are enlarged as well
            assert (ow >= oh) == (w >= h)  # orientation kept


def test_one_worker_and_several_write_the_same_bytes(tree, tmp_path, capsys):
    src, dst, good = tree
    assert _run(src, dst, 1) == 1
    assert _run(src, tmp_path / "dst2", 2) == 1
    for rel in _outputs(dst):
        assert (dst / rel).read_bytes() == (tmp_path / "dst2" / rel).read_bytes(), rel


def test_resume_skips_finished_files_and_redoes_a_killed_write(tree, capsys):
    src, dst, good = tree
    _run(src, dst)
    first = _outputs(dst)
    # a run killed while writing one output leaves its temporary file and no output
    victim = dst / str(SIZES[1]) / "val" / "n01" / "n01_2.JPEG"
    victim.unlink()
    stale = prepare_imagenet.temp_path(victim)
    stale.write_bytes(b"\xff\xd8 half a JPEG")
    # an output cut short under its final name (a power loss before the data reached the disk)
    cut = dst / str(SIZES[0]) / "train" / "n02" / "n02_4.JPEG"
    whole = cut.read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])
    first[str(cut.relative_to(dst))] = cut.stat().st_mtime_ns
    capsys.readouterr()
    assert _run(src, dst) == 1  # the unreadable files are still reported
    out = capsys.readouterr().out
    assert f"2 images resized, {len(good) - 2} already done" in out
    second = _outputs(dst)
    assert set(second) == set(first)  # the temporary file is gone, the output is back
    changed = {rel for rel in first if second[rel] != first[rel]}
    assert changed == {str(victim.relative_to(dst)), str(cut.relative_to(dst))}
    with Image.open(victim) as redone:
        assert min(redone.size) == SIZES[1]
    assert cut.read_bytes() == whole


def test_a_new_size_is_added_to_a_finished_preparation(tree, capsys):
    src, dst, good = tree
    prepare_imagenet.main(["--src", str(src), "--dst", str(dst), "--sizes", "24", "--workers", "1"])
    first = _outputs(dst)
    _run(src, dst, 1)
    second = _outputs(dst)
    assert all(second[rel] == first[rel] for rel in first)
    assert len(second) == 2 * len(first)


@pytest.mark.parametrize("change, message", [
    (["--sizes", "0 160"], "--sizes must be positive"),
    (["--quality", "101"], "--quality must lie in 1..100"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--sizes", "big"], "invalid int value"),
    (["--src", "MISSING"], "missing: train, val"),
    (["--dst", "SRC/train/out"], "lies inside --src"),
])
def test_bad_arguments_one_error_line_exit_2(tree, capsys, change, message):
    src, dst, good = tree
    args = {"--src": str(src), "--dst": str(dst), "--sizes": ["24"]}
    for flag, value in zip(change[::2], change[1::2], strict=True):
        value = value.replace("SRC", str(src)).replace("MISSING", str(src / "nothing"))
        args[flag] = value.split() if flag == "--sizes" else value
    argv = [tok for flag, value in args.items() for tok in [flag, *([value] if isinstance(value, str) else value)]]
    with pytest.raises(SystemExit) as stop:
        prepare_imagenet.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not dst.exists()


def test_resized_shape_truncates_as_published():
    assert prepare_imagenet.resized_shape(500, 375, 160) == (213, 160)  # 213.33
    assert prepare_imagenet.resized_shape(375, 500, 352) == (352, 469)  # 469.33
    assert prepare_imagenet.resized_shape(333, 500, 160) == (160, 240)  # 240.24
    assert prepare_imagenet.resized_shape(500, 333, 160) == (240, 160)
    assert prepare_imagenet.resized_shape(100, 3, 352) == (11733, 352)
    assert prepare_imagenet.resized_shape(399, 300, 160) == (212, 160)  # 212.8: rounding would give 213
    # 100 / (100 / 352) is 351.99999999999994 in floating point: the short side comes out 351
    assert prepare_imagenet.resized_shape(100, 101, 352) == (351, 355)  # 355.52, rounded down
    assert prepare_imagenet.resized_shape(101, 100, 352) == (355, 351)


def _published_jpeg(source: Path, size: int, **save_options) -> bytes:
    """What the published resize step writes for ``source`` at ``size`` (PIL's default quality
    unless ``save_options`` says otherwise)."""
    import io

    with Image.open(source) as image:
        w, h = image.size
        ratio = min(h / size, w / size)
        resized = image.resize((int(w / ratio), int(h / ratio)), resample=Image.Resampling.BICUBIC)
    out = io.BytesIO()
    resized.convert("RGB").save(out, format="JPEG", **save_options)
    return out.getvalue()


def test_default_quality_is_the_published_one_and_quality_sets_it(tmp_path, capsys):
    src = tmp_path / "src"
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        (src / split / "n01").mkdir(parents=True)
    sources = {"train/n01/a.JPEG": (101, 100), "val/n01/b.JPEG": (90, 133)}
    for rel, (w, h) in sources.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(src / rel, quality=95)
    assert prepare_imagenet.main(["--src", str(src), "--dst", str(tmp_path / "d75"), "--sizes", "352", "64",
                                  "--workers", "1"]) == 0
    assert prepare_imagenet.main(["--src", str(src), "--dst", str(tmp_path / "d90"), "--sizes", "352",
                                  "--quality", "90", "--workers", "1"]) == 0
    for rel in sources:
        for size in (352, 64):
            assert (tmp_path / "d75" / str(size) / rel).read_bytes() == _published_jpeg(src / rel, size), rel
        written = (tmp_path / "d90" / "352" / rel).read_bytes()
        assert written == _published_jpeg(src / rel, 352, quality=90) != _published_jpeg(src / rel, 352)
    with Image.open(tmp_path / "d75" / "352" / "train/n01/a.JPEG") as out:
        assert out.size == (355, 351)


@pytest.mark.slow  # a child process
def test_a_run_killed_midway_leaves_no_broken_output_and_the_rerun_finishes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    src, dst = tmp_path / "src", tmp_path / "dst"
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        folder = src / split / "n01"
        folder.mkdir(parents=True)
        for k in range(300):
            Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(folder / f"{k}.JPEG")
    code = ("import sys, pathlib; from comixup.prepare import imagenet as p; "
            "p.prepare(p.Job(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), (24, 40), 90), 2, False)")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", code, str(src), str(dst)], cwd=root, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not any(dst.rglob("*.JPEG")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its workers, mid-write
    finally:
        proc.wait()
    written = [p for p in dst.rglob("*.JPEG")]
    assert 0 < len(written) < 1200
    for path in written:  # whatever was killed, every file under its final name is whole
        with Image.open(path) as image:
            image.load()
            assert min(image.size) in (24, 40)
    summary = prepare_imagenet.prepare(prepare_imagenet.Job(src, dst, (24, 40), 90), 2, progress=False)
    assert summary.done + summary.skipped == 600 and summary.done > 0 and not summary.unreadable
    finished = _outputs(dst)
    assert len(finished) == 1200 and not any(name.endswith(prepare_imagenet.TEMP_SUFFIX) for name in finished)
