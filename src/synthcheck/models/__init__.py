"""Layer 2, models: the networks (`registry`), model directories on disk (`checkpoint`) and the models shipped in
the package (`bundled`). Imports only `data`."""
