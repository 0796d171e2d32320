"""The commands and files that README.md and docs/ name still exist."""
import glob
import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT

DOCS = [os.path.join(ROOT, 'README.md')] + sorted(
    glob.glob(os.path.join(ROOT, 'docs', '*.md')))


def read(path):
    with open(path) as f:
        return f.read()


def named(pattern):
    found = set()
    for path in DOCS:
        found.update(re.findall(pattern, read(path), re.M))
    return sorted(found)


def makefile_targets():
    return set(re.findall(r'^([A-Za-z][\w-]*):', read(
        os.path.join(ROOT, 'Makefile')), re.M))


# `make train`, `make gpu-check WHEELS=...`: the word after make, in code
# (backticks or an indented block), not in prose
MAKE_TARGETS = named(r'(?:`|^    (?:.*; )?)make ([a-z][\w-]*)')
# `.venv/bin/python bench/speed.py`, `./train_mnist.py`, `python export.py`,
# `.venv-peer/bin/python bench/peers/torch_mlp.py`
SCRIPTS = named(r'(?:\.venv/bin/python |\./|python )'
                r'((?:bench/(?:peers/)?)?[a-z_]+\.py)')
LINKS = [(os.path.relpath(path, ROOT), link) for path in DOCS
         for link in re.findall(r'\]\(([^)#:]+\.md)(?:#[^)]*)?\)',
                                read(path))]


def test_the_docs_name_commands():
    # guards the patterns above: an empty list would test nothing
    assert 'train' in MAKE_TARGETS and 'test' in MAKE_TARGETS
    assert 'train_mnist.py' in SCRIPTS


@pytest.mark.parametrize('target', MAKE_TARGETS)
def test_make_target_exists(target):
    assert target in makefile_targets()


@pytest.mark.parametrize('script', SCRIPTS)
def test_script_answers_help(script):
    path = os.path.join(ROOT, script)
    assert os.path.isfile(path), script
    result = subprocess.run([sys.executable, path, '--help'], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert 'usage:' in result.stdout


@pytest.mark.parametrize('source,link', LINKS)
def test_linked_document_exists(source, link):
    target = os.path.normpath(os.path.join(
        ROOT, os.path.dirname(source), link))
    assert os.path.isfile(target), '{} links to {}'.format(source, link)
