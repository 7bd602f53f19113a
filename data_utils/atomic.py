"""Cache files written whole or not at all, so concurrent ranks never read half of one."""

import os
import tempfile
import warnings

import numpy as np


def save_npz_atomically(path, **arrays):
    """np.savez under a temporary name in the same folder, then rename; warn (not fail) if the
    folder is read-only, since a cache can always be rebuilt."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, suffix=".npz", delete=False) as f:
            np.savez(f, **arrays)
        os.replace(f.name, path)
    except OSError as error:
        warnings.warn(f"could not write the cache {path} ({error}); it will be rebuilt next time")
