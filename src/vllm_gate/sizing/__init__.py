"""GPU sizing: whether a model, its context and its load fit a GPU type's KV cache, before anything is deployed."""
