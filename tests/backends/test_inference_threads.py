"""The settings of a packed network's process
(qnn.backends.inference_threads)."""
import os


def test_inference_threads_set_defaults_and_keep_the_users(monkeypatch):
    from qnn.backends import inference_threads
    monkeypatch.delenv('OPENBLAS_THREAD_TIMEOUT', raising=False)
    monkeypatch.setenv('NUMBA_THREADING_LAYER', 'workqueue')
    inference_threads.configure()
    assert os.environ['OPENBLAS_THREAD_TIMEOUT'] == '4'
    assert os.environ['NUMBA_THREADING_LAYER'] == 'workqueue'
