import os
import signal
import subprocess
import sys
import textwrap

import pytest

from qnn.training import output_lock

from helpers import ROOT


def test_a_second_lock_on_a_busy_directory_names_the_holder(tmp_path):
    with output_lock.OutputLock(str(tmp_path)):
        with pytest.raises(output_lock.OutputBusy) as e:
            output_lock.OutputLock(str(tmp_path)).acquire()
    message = str(e.value)
    assert str(tmp_path) in message
    assert 'process {}'.format(os.getpid()) in message
    assert '\n' not in message


def test_released_lock_can_be_taken_again(tmp_path):
    lock = output_lock.OutputLock(str(tmp_path))
    lock.acquire()
    lock.release()
    with output_lock.OutputLock(str(tmp_path)):
        pass


def test_a_lock_of_a_killed_process_does_not_block(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, '-c', textwrap.dedent('''
            import sys, time
            from qnn.training import output_lock
            lock = output_lock.OutputLock(sys.argv[1])
            lock.acquire()
            print('HELD', flush=True)
            time.sleep(600)
            '''), str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, universal_newlines=True)
    try:
        assert holder.stdout.readline().strip() == 'HELD'
        with pytest.raises(output_lock.OutputBusy) as e:
            output_lock.OutputLock(str(tmp_path)).acquire()
        assert 'process {}'.format(holder.pid) in str(e.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    with output_lock.OutputLock(str(tmp_path)):
        pass
