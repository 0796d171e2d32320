"""Packed layers against Chainer's float layers; kernels; the file format;
inference.py's errors."""
import os
import re

import pytest

import inference
from qnn.packed import format as packed_format
from helpers import run_main



def run_inference(capsys, *argv):
    return run_main(capsys, inference.main, *argv)


def damage(data, how):
    data = bytearray(data)
    if how == 'flipped byte':
        data[len(data) // 2] ^= 0x10
    elif how == 'truncated':
        data = data[:len(data) - 100]
    elif how == 'empty':
        data = b''
    elif how == 'foreign':
        data = b'\x89PNG\r\n\x1a\n' + bytes(data[8:])
    elif how == 'version':
        data[8] = packed_format.VERSION + 1
    elif how == 'extra bytes':
        data += b'\0'
    elif how == 'header':
        data[20] ^= 0x01
    return bytes(data)


@pytest.mark.parametrize('how,message', [
    ('flipped byte', 'checksum'), ('truncated', 'truncated'),
    ('empty', 'not a packed network'), ('foreign', 'not a packed network'),
    ('version', 'version {}'.format(packed_format.VERSION + 1)),
    ('extra bytes', 'after its end'),
    ('header', '(damaged|checksum)')])
def test_damaged_file_one_line_exit_1(packed_file, tmp_path, capsys, how,
                                      message):
    path = str(tmp_path / 'bad.bnn')
    with open(packed_file, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(damage(data, how))
    code, out, err = run_inference(capsys, path, '--test-subset', '5')
    assert code == 1 and out == ''
    assert err.count('\n') == 1 and path in err
    assert re.search(message, err), err


def test_missing_file_and_bad_arguments(tmp_path, capsys):
    path = str(tmp_path / 'none.bnn')
    code, out, err = run_inference(capsys, path)
    assert code == 1 and err.count('\n') == 1 and path in err
    code, out, err = run_inference(capsys, path, '--test-subset', '0')
    assert code == 2 and 'Traceback' not in err
    code, out, err = run_inference(capsys, path, '--device', 'gpu')
    assert code == 2


def test_summary_option(packed_file, capsys):
    assert inference.main([packed_file, '--summary']) == 0
    out = capsys.readouterr()[0]
    assert 'file size: {} bytes'.format(os.path.getsize(packed_file)) in out
    assert re.search(r'^l1 +bit-plane dense, sign +784x33 ', out, re.M)


def test_inference_line(packed_file, capsys):
    assert inference.main([packed_file, '--test-subset', '30']) == 0
    out = capsys.readouterr()[0]
    assert re.fullmatch(r'accuracy: \d\.\d{4} \(30 images, \d+\.\d{3} s, '
                        r'\d+ images/s\)\n', out), out
