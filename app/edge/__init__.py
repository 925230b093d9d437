"""Edge: nginx in front of the API, storage and the CDN.

Rendering and checking nginx's configuration, signed download links, the
edge's access log (traffic and cache results) and CDN purges. It imports only
`app.platform` and `mosis_format`.
"""
