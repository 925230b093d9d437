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

// An error the edge raises while a response is under way (a range outside
// a cached object, found as it is sent) still holds that response's headers
// when the JSON error page is sent: of those only Content-Range (416) stays.
var ERROR_ALLOWED = {
    "content-type": true,
    "content-length": true,
    "content-range": true
};

function keep(r, allowed) {
    var names = Object.keys(r.headersOut);
    for (var i = 0; i < names.length; i++) {
        if (!allowed[names[i].toLowerCase()]) {
            delete r.headersOut[names[i]];
        }
    }
}

function allow_listed(r) {
    keep(r, ALLOWED);
}

function error_page(r) {
    keep(r, ERROR_ALLOWED);
}

export default {allow_listed: allow_listed, error_page: error_page};
