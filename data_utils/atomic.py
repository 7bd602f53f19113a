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
        warnings.warn(f"could not write the cache {path} ({error}); it will be rebuilt next time", stacklevel=2)


def cached_index(indexed_dataset, cache_dir, name, build):
    """Arrays `build()` returns (a dict), cached as `{cache_dir}/{data basename}_{name}.npz`.

    The cache is reused while it is newer than the data's .idx; cache_dir defaults to the data's folder.
    """
    cache_dir = cache_dir or os.path.dirname(os.path.abspath(indexed_dataset.prefix))
    path = os.path.join(cache_dir, f"{os.path.basename(indexed_dataset.prefix)}_{name}.npz")
    if os.path.isfile(path) and os.path.getmtime(path) >= os.path.getmtime(indexed_dataset.prefix + ".idx"):
        with np.load(path) as cached:
            return {key: cached[key] for key in cached.files}
    arrays = build()
    save_npz_atomically(path, **arrays)
    return arrays
