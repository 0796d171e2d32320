"""The layout docs/layout.md describes: what is at the root, which folder
of the package may import which, and no function too long to read."""
import ast
import collections
import glob
import os

import pytest

from helpers import ROOT

CORE = {'train_mnist', 'net', 'qst', 'function_quantized_linear',
        'link_quantized_linear', 'weight_clip'}
ENTRY_POINTS = {'train_mnist', 'export', 'inference'}
# test files that check what no single module does
TEST_FILES_OF_NO_MODULE = {
    'test_docs.py',  # the commands and links of the documentation
    'test_layout.py',  # this file
    'test_files_written_before_package.py',  # files of older versions
    'packed/test_conv_kernels_cuda.py',  # conv_kernels' CUDA source on g++
    'packed/test_c_targets.py',  # exported C on four targets
    'test_hostile_inputs.py',  # every command on hostile files and paths
    'test_bench_peers.py',  # the benchmarks' own peers (bench/peers/)
    'test_bench_roofline.py',  # bench/roofline.py's loops and ceilings
    'test_bench_c_inference.py',  # bench/c_inference.py on a trained network
}
# folders that import nothing of the project but the stack's compatibility
BOTTOM = {'qnn.utils', 'qnn.serializers'}


def module_name(path):
    name = os.path.relpath(path, ROOT)[:-len('.py')].replace(os.sep, '.')
    return name[:-len('.__init__')] if name.endswith('.__init__') else name


def project_modules():
    paths = glob.glob(os.path.join(ROOT, '*.py')) + glob.glob(
        os.path.join(ROOT, 'qnn', '**', '*.py'), recursive=True)
    return {module_name(path): path for path in paths}


MODULES = project_modules()


def _module_level(tree):
    """The nodes of ``tree`` outside function bodies: what runs when the
    module is imported."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                             ast.Lambda)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def imports(path, module_level=False):
    """The project modules that the file ``path`` imports (with
    ``module_level``, on import only: not those a function imports when
    called)."""
    found = set()
    tree = ast.parse(open(path).read())
    nodes = _module_level(tree) if module_level else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module + '.' + alias.name
                     if node.module + '.' + alias.name in MODULES
                     else node.module for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition('.')[0]
            if name:
                found.add(name)
    return found


def folder(module):
    """``qnn.training.extensions`` for its modules, ``qnn.packed`` for
    ``qnn.packed.format``; a root module is its own folder."""
    parts = module.split('.')
    if parts[0] != 'qnn' or len(parts) == 1:
        return module
    depth = 3 if parts[1:3] == ['training', 'extensions'] and \
        len(parts) > 3 else 2
    return '.'.join(parts[:depth])


def folder_graph():
    graph = collections.defaultdict(set)
    for module, path in MODULES.items():
        for target in imports(path):
            if folder(target) != folder(module):
                graph[folder(module)].add(folder(target))
    return graph


def test_the_root_holds_the_core_and_the_entry_points():
    root = {name for name in MODULES if '.' not in name and name != 'qnn'}
    assert root == CORE | ENTRY_POINTS


def test_the_package_imports_no_entry_point():
    for module, path in MODULES.items():
        if module.startswith('qnn'):
            assert not imports(path) & ENTRY_POINTS, module


def assert_no_cycle(graph):
    """Fails naming the first cycle of ``graph`` (node -> targets) found
    by a depth-first search."""
    state = {}

    def visit(node, trail):
        state[node] = 'open'
        for target in sorted(graph.get(node, ())):
            assert state.get(target) != 'open', ' -> '.join(
                trail + [node, target])
            if target not in state:
                visit(target, trail + [node])
        state[node] = 'done'
    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_no_cycle_between_folders():
    assert_no_cycle(folder_graph())


def test_no_import_cycle_between_modules():
    # module-level imports only: a module that imports another inside a
    # function does so after both have loaded; a package importing its own
    # module is no cycle
    assert_no_cycle({
        module: {target for target in imports(path, module_level=True)
                 if target != module and not target.startswith(module + '.')}
        for module, path in MODULES.items()})


def test_the_bottom_folders_import_only_the_compatibility():
    graph = folder_graph()
    for name in BOTTOM:
        assert graph.get(name, set()) <= {'qnn.backends'}, name
        for module, path in MODULES.items():
            if folder(module) == name:
                assert imports(path) <= {
                    'qnn', 'qnn.backends', 'qnn.backends.chainer_compat'} | {
                    m for m in MODULES if folder(m) == name}, module


@pytest.mark.parametrize('module', sorted(
    m for m in MODULES if m.startswith('qnn') and m != 'qnn.datasets'
    and MODULES[m].endswith('__init__.py')))
def test_package_inits_import_nothing(module):
    # so that qnn.utils.environment_check runs before NumPy loads
    assert imports(MODULES[module]) == set()
    tree = ast.parse(open(MODULES[module]).read())
    assert not [node for node in tree.body
                if isinstance(node, (ast.Import, ast.ImportFrom))]


def path_of_tests(module):
    """The test file of a module: ``tests/test_net.py`` for ``net``,
    ``tests/packed/test_format.py`` for ``qnn.packed.format``,
    ``tests/datasets/test_datasets.py`` for the package ``qnn.datasets``
    (the folders of ``tests/`` are those of ``qnn/``)."""
    parts = module.split('.')
    if parts[0] == 'qnn':
        parts = parts[1:]
    if MODULES[module].endswith('__init__.py'):
        parts = parts + parts[-1:]
    return os.path.join(ROOT, 'tests', *parts[:-1],
                        'test_{}.py'.format(parts[-1]))


@pytest.mark.parametrize('module', sorted(
    m for m in MODULES if m != 'qnn' and not (
        MODULES[m].endswith('__init__.py') and m != 'qnn.datasets')))
def test_every_module_has_its_test_file(module):
    assert os.path.isfile(path_of_tests(module)), os.path.relpath(
        path_of_tests(module), ROOT)


def test_no_test_file_without_its_module():
    # a test file named after a module tests that module: none is left
    # behind when a module moves
    expected = {path_of_tests(m) for m in MODULES if m != 'qnn'}
    for path in glob.glob(os.path.join(ROOT, 'tests', '**', 'test_*.py'),
                          recursive=True):
        name = os.path.relpath(path, os.path.join(ROOT, 'tests'))
        assert path in expected or name in TEST_FILES_OF_NO_MODULE, name


def test_no_function_over_60_lines():
    # the project's modules (tests and bench aside), docstrings included
    paths = list(MODULES.values())
    long = []
    for path in paths:
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append('{}: {} ({} lines)'.format(
                        os.path.relpath(path, ROOT), node.name, lines))
    assert not long
