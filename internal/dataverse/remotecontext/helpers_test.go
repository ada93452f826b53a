package remotecontext

import "net/http"

func canonical(k string) string { return http.CanonicalHeaderKey(k) }
