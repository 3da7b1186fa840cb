"""Shared fixtures. Airflow's environment is set before anything can import Airflow: a temporary
AIRFLOW_HOME (Airflow would otherwise create ~/airflow and put its folders on sys.path), no
example DAGs, and this repo's dags/ folder."""

import os
import tempfile

os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="synth-airflow-home-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
# DP mechanisms draw their noise from OS entropy; tests pin it (synth_pipeline.dp.mechanism_entropy)
os.environ.setdefault("SYNTH_PIPELINE_DP_TEST_SEED", "20261206")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dags")

import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

TESTS = Path(__file__).resolve().parent
TEST_DATA = TESTS / "data"
# The full nasdaq100 panel ships inside the package (synth_pipeline/data/); tests read that copy.
NASDAQ_CSV = TESTS.parent / "synth_pipeline" / "data" / "nasdaq100_2019.csv"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Slices of the shared sample data committed under tests/data (same file names and CSV format
    as ../shared/data; how each was cut is in tests/data/README.md). The tests never read
    ../shared: a fresh clone runs every test."""
    return TEST_DATA


@pytest.fixture(scope="session")
def nasdaq_csv() -> Path:
    """The whole nasdaq100 panel, as packaged (identical to ../shared/data/nasdaq100_2019.csv)."""
    return NASDAQ_CSV


def pick_free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for "server unreachable" tests)."""
    return pick_free_port()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on 127.0.0.1 (SQLite backend, artifacts proxied), health-checked."""
    d = tmp_path_factory.mktemp("mlflow_server")
    port = pick_free_port()
    exe = Path(sys.executable).parent / "mlflow"
    cmd = [str(exe) if exe.exists() else "mlflow", "server",
           "--backend-store-uri", f"sqlite:///{d}/db.sqlite", "--artifacts-destination", str(d / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(d / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited ({proc.returncode}): {(d / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after 180s: {(d / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass
        log.close()


@pytest.fixture(scope="session")
def one_thread():
    """The CI machine is shared: one torch thread avoids oversubscription stalls (x30 slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
