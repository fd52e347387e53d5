"""Framework adapters: each turns one framework's objects into trackables.

`trackpoint.adapters.torch`, `.jax` and `.keras` are imported lazily, the first time an
object of their framework is checkpointed (see `trackpoint.graph._trackable._ADAPTERS`);
`import trackpoint` imports no framework. They use only trackpoint's public API.
"""
