"""Test set-up: 8 fake CPU devices (set before jax is imported) and shared fixtures."""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA cache for the session, shared by the CLI subprocesses the tests start.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="ltjax-test-xla-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
# Prepared (array_record) dataset copies go to a session folder, never to ~/tensorflow_datasets.
if "TFDS_DATA_DIR" not in os.environ or not os.environ.get("LTJAX_TESTS_KEEP_TFDS_DIR"):
    import tempfile

    os.environ["TFDS_DATA_DIR"] = tempfile.mkdtemp(prefix="ltjax-test-tfds-")

import json  # noqa: E402
import pathlib  # noqa: E402

import pytest  # noqa: E402

DATA = pathlib.Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def voc_lt_meta():
    return json.loads((DATA / "voc_lt_meta.json").read_text())


@pytest.fixture(scope="session")
def coco_lt_meta():
    return json.loads((DATA / "coco_lt_meta.json").read_text())


@pytest.fixture(scope="session")
def voc_lt_labels():
    import numpy as np

    lines = [line.split() for line in (DATA / "voc_lt_train.txt").read_text().splitlines() if line.strip()]
    labels = np.zeros((len(lines), 20), np.float32)
    for i, parts in enumerate(lines):
        labels[i, [int(c) for c in parts[1:]]] = 1
    return labels
