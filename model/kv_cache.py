"""Keys and values of the positions a model has already seen, so that generating a token runs only
that token through the model."""


class KVCache:
    """Per layer, keys and values [batch, heads of this rank, positions, head dim] in buffers of
    max_length positions, allocated on first use. `length` counts the positions stored."""

    def __init__(self, max_length):
        self.max_length = max_length
        self.length = 0
        self._keys, self._values = {}, {}

    def for_layer(self, layer):
        return _LayerCache(self, layer)

    def extend(self, layer, keys, values):
        """Store keys and values of new positions (after self.length) for one layer; returns all of
        that layer's keys and values so far."""
        end = self.length + keys.size(2)
        if end > self.max_length:
            raise ValueError(f"the key-value cache holds {self.max_length} positions; {end} were asked for")
        if layer not in self._keys:
            shape = (*keys.shape[:2], self.max_length, keys.size(3))
            self._keys[layer], self._values[layer] = keys.new_empty(shape), values.new_empty(shape)
        self._keys[layer][:, :, self.length:end] = keys
        self._values[layer][:, :, self.length:end] = values
        return self._keys[layer][:, :, :end], self._values[layer][:, :, :end]

    def advance(self, positions):
        """Called by the model once every layer has stored the new positions."""
        self.length += positions


class _LayerCache:
    def __init__(self, cache, layer):
        self.cache, self.layer = cache, layer

    @property
    def past(self):
        return self.cache.length

    def extend(self, keys, values):
        return self.cache.extend(self.layer, keys, values)
