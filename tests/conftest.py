import os

import pytest

from tests.support import solver_warmup

# the controller's handle on the background compile of the solvers (tests/support/solver_warmup.py)
_WARMUP = pytest.StashKey["solver_warmup.Warmup | None"]()


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: one per core, so one torch thread each
        import torch

        torch.set_num_threads(1)
        if config.workerinput.get("solver_warmup_lock"):
            solver_warmup.wait_before_compiling(config.workerinput["solver_warmup_lock"])
    elif getattr(config.option, "dist", "no") != "no":  # the controller of pytest-xdist workers
        config.stash[_WARMUP] = solver_warmup.start()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """pytest-xdist, for each worker it starts: where the warm-up's lock is."""
    warmup = node.config.stash.get(_WARMUP, None)
    if warmup is not None:
        node.workerinput["solver_warmup_lock"] = str(warmup.lock_path)


def pytest_terminal_summary(terminalreporter, config):
    warmup = config.stash.get(_WARMUP, None)
    failure = warmup.failure() if warmup is not None else None
    if failure:  # the tests compiled for themselves: say why it was slow
        terminalreporter.write_line(failure)


def pytest_unconfigure(config):
    warmup = config.stash.get(_WARMUP, None)
    if warmup is not None:
        warmup.stop()


@pytest.fixture
def one_thread():
    """Tiny models run faster on one intra-op thread, and are then immune to a busy second core."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cifar_no_md5(monkeypatch):
    """Accept CIFAR files that tests wrote themselves: torchvision checks the official md5 sums."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


@pytest.fixture
def cifar10_dir(tmp_path, cifar_no_md5):
    """A tiny CIFAR-10 in the official pickle format (see tests/support/runs.py for the sizes)."""
    from comixup.data.synthetic import write_cifar

    from tests.support.runs import TEST_PER_CLASS, TRAIN_PER_CLASS

    return write_cifar(tmp_path / "data", "cifar10", train_per_class=TRAIN_PER_CLASS, test_per_class=TEST_PER_CLASS)


@pytest.fixture(scope="session")
def published_run(tmp_path_factory):
    """A CIFAR-10 with 400 test images, and a trained model saved as the published main.py did:
    (data folder, checkpoint, the model in eval mode). Shared by the calibration and robustness tests."""
    from tests.support.evaluation import make_published_run

    return make_published_run(tmp_path_factory.mktemp("published"))
