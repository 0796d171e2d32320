"""One-line errors, files written atomically, the interpreter check."""
