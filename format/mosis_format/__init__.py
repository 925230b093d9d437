"""The Mosis package formats, shared by the store and its tools.

Pure code: no network, no database, no object storage; the only I/O is on
the paths and file objects handed to it. `mosis_format.delta` is the delta
patch format (docs/deltas.md).
"""
