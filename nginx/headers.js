// The response headers of storage a client may see (the edge adds its own
// with add_header, after this filter). Everything else storage sends is
// dropped: x-amz-*, x-minio-*, Seaweed-*, its caching and security headers,
// whatever a future version adds. Content-Disposition is set by the app's
// presigned URL for packages (response-content-disposition), never by a
// client.
//
// nginx runs this on every response of a location that serves storage's
// bytes, cache hits included (they replay the headers storage sent).
// Written for njs 0.7 (Debian 12) and later: no ES2015 loops.

var ALLOWED = {
    "content-type": true,
    "content-length": true,
    "content-range": true,
    "content-disposition": true,
    "etag": true,
    "last-modified": true,
    "accept-ranges": true
};

function allow_listed(r) {
    var names = Object.keys(r.headersOut);
    for (var i = 0; i < names.length; i++) {
        if (!ALLOWED[names[i].toLowerCase()]) {
            delete r.headersOut[names[i]];
        }
    }
}

export default {allow_listed};
