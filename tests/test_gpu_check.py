"""bench/gpu_check.py runs end to end on the CPU (--quick), so the GPU check cannot rot."""
import json

import pytest

from bench import gpu_check
from comixup.data.synthetic import write_image_folder
from comixup.mixing import comix_solver  # noqa: E402

PHASES = ["clean pass", "saliency pooling", "copy to host", "solve", "copy to device", "mixing", "mixed pass",
          "optimiser"]


@pytest.fixture
def dev_images(tmp_path):
    """CIFAR-format class folders: 3 classes, 30 train and 6 test images each."""
    write_image_folder(tmp_path / "dev", num_classes=3, per_class=30, splits=("train",))
    write_image_folder(tmp_path / "dev", num_classes=3, per_class=6, seed=1, splits=("test",))
    return tmp_path / "dev"


@pytest.mark.slow  # a benchmark's whole run, bf16 included
def test_quick_run_on_cpu_writes_every_figure(dev_images, tmp_path, capsys, one_thread):
    out = tmp_path / "results" / "check.json"
    assert gpu_check.main(["--device", "cpu", "--quick", "--data_dir", str(dev_images), "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    printed = capsys.readouterr().out
    breakdown = results["breakdown_ms"]
    assert list(breakdown) == PHASES + ["total"]
    assert all(ms >= 0 for ms in breakdown.values()) and breakdown["clean pass"] > 0 and breakdown["solve"] > 0
    assert breakdown["total"] == pytest.approx(sum(breakdown[p] for p in PHASES))
    rows = results["throughput"]
    methods = ["vanilla", "comix (fast)"] + (["comix (bkgco)"] if comix_solver.solver_available("bkgco") else [])
    assert [row["method"] for row in rows] == methods * 2
    assert {row["precision"] for row in rows} == {"float32", "bf16 autocast, channels_last"}
    for row in rows:
        assert row["images_per_s"] == pytest.approx(results["batch"] / (row["step_ms"] / 1e3))
    assert [row["vs_vanilla"] for row in rows if row["method"] == "vanilla"] == [1.0, 1.0]
    accuracy = results["accuracy"]
    assert accuracy["epochs"] == 1 and accuracy["test_images"] == 18
    assert set(accuracy["test_accuracy"]) == {"vanilla", "mixup", "comix"}
    assert all(0 <= a <= 100 for a in accuracy["test_accuracy"].values())
    assert "(a) Co-Mixup step" in printed and "(c) 1 epochs each" in printed
    if not comix_solver.solver_available("bkgco"):
        assert "bkgco is not importable here" in printed


@pytest.mark.parametrize("problem,message", [
    ("missing", "has no class folders"),
    ("few", "the check needs at least 40"),
    ("device", "--device must be"),
])
def test_bad_input_is_one_error_line_and_no_file(problem, message, tmp_path, capsys):
    data = tmp_path / "dev"
    if problem == "few":
        write_image_folder(data, num_classes=2, per_class=5, splits=("train", "test"))
    out = tmp_path / "check.json"
    argv = ["--device", "tpu" if problem == "device" else "cpu", "--quick", "--data_dir", str(data), "--out", str(out)]
    assert gpu_check.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))
