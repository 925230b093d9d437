"""The Mosis package formats, shared by the store and its tools.

Pure code: no network, no database, no object storage; the only I/O is on
the paths and file objects handed to it. `mosis_format.delta` is the delta
patch format (docs/deltas.md); `mosis_format.keyring` (the signing keyring
and its chain of versions), `mosis_format.index` (the signed catalog index),
`mosis_format.signing` (keys, signatures, reason codes) and
`mosis_format.canonical` (the bytes signed) are the trust formats
(docs/signing.md).
"""
