"""The C text of the generated models (qnn.packed.c_templates): only
stdint.h, no allocation or I/O, every placeholder one the generator
fills."""
import re
import string

from qnn.packed import c_templates

TEXTS = {name: value for name, value in vars(c_templates).items()
         if name.isupper() and isinstance(value, str)}


def test_no_library_beyond_stdint():
    for name, text in TEXTS.items():
        assert set(re.findall(r'#include\s*<([^>]+)>', text)) <= {
            'stdint.h'}, name
        for word in ('malloc', 'free(', 'printf', 'FILE'):
            assert word not in text, (name, word)
        # no variable outside a function that a call could write: every
        # static one is const (static functions are fine)
        code = re.sub(r'/\*.*?\*/|//[^\n]*', '', text, flags=re.S)
        assert not re.search(r'static\s+(?!const\b)[\w\s*]+?\w+\s*(\[|=|;)',
                             code), name


def test_placeholders_are_names():
    for name, text in TEXTS.items():
        template = string.Template(text)
        assert template.is_valid(), name
        for placeholder in template.get_identifiers():
            assert re.fullmatch(r'[A-Z][A-Z0-9_]*', placeholder), (
                name, placeholder)
