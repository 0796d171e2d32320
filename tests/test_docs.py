"""The commands and files that README.md and docs/ name still exist."""
import glob
import importlib
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


def heading_anchors(path):
    """GitHub's anchors of a Markdown file's headings: lower case, spaces
    to hyphens, punctuation dropped, -1, -2 after a repeated one."""
    anchors, seen, fenced = set(), {}, False
    for line in read(path).split('\n'):
        if line.startswith('```'):
            fenced = not fenced
        match = None if fenced else re.match(r'#{1,6} (.*)', line)
        if match:
            slug = re.sub(r'[^\w\- ]', '', match.group(1).lower())
            slug = slug.replace(' ', '-')
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else '{}-{}'.format(slug, count))
    return anchors


ANCHORS = [(os.path.relpath(path, ROOT), link, anchor) for path in DOCS
           for link, anchor in re.findall(
               r'\]\(([^)#:]*?\.md)?#([^)]+)\)', read(path))]


def test_the_docs_link_to_sections():
    # guards the pattern above
    assert any(link for _, link, _ in ANCHORS)
    assert any(not link for _, link, _ in ANCHORS)


@pytest.mark.parametrize('source,link,anchor', ANCHORS)
def test_linked_section_exists(source, link, anchor):
    target = os.path.normpath(os.path.join(
        ROOT, os.path.dirname(source), link or os.path.basename(source)))
    assert anchor in heading_anchors(target), '{} links to {}#{}'.format(
        source, link or '', anchor)


# what the docs of today name; history.md keeps the names of its dates
CURRENT_DOCS = [path for path in DOCS
                if os.path.basename(path) != 'history.md']


def named_today(pattern):
    found = set()
    for path in CURRENT_DOCS:
        found.update(re.findall(pattern, read(path), re.M))
    return sorted(found)


# `qnn/packed/format.py`, `tests/packed/test_format.py::test_name`
REPOSITORY_PATHS = named_today(
    r'`((?:qnn|tests|bench|docs|data|\.ci)/[\w./-]*\w)(?:::\w+)?`')
# `qnn.packed.format.read_packed`, `qst.Quantization`, `net.BinaryConvNet`
PYTHON_NAMES = named_today(
    r'`((?:qnn|qst|net|weight_clip|function_quantized_linear'
    r'|link_quantized_linear|export|inference)(?:\.[A-Za-z_]\w*)+)`')
PYTHON_NAMES = [name for name in PYTHON_NAMES
                if name.rsplit('.', 1)[1] not in ('py', 'pth', 'json')]


def test_the_docs_name_paths_and_python_names():
    # guards the patterns above
    assert 'tests/test_docs.py' in REPOSITORY_PATHS
    assert 'qst.Quantization' in PYTHON_NAMES


@pytest.mark.parametrize('path', REPOSITORY_PATHS)
def test_named_path_exists(path):
    assert os.path.exists(os.path.join(ROOT, path)), path


@pytest.mark.parametrize('name', PYTHON_NAMES)
def test_named_python_name_exists(name):
    parts = name.split('.')
    for split in range(len(parts), 0, -1):
        try:
            found = importlib.import_module('.'.join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            assert hasattr(found, attribute), name
            found = getattr(found, attribute)
        return
    raise AssertionError('{} does not import'.format(name))
