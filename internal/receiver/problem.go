package receiver

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Problem is an RFC 9457 problem details object.
type Problem struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail,omitempty"`
	Errors []FieldIssue `json:"errors,omitempty"`
}

// FieldIssue names one field (of the body, a header or a parameter) at fault.
type FieldIssue struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// ProblemTypePrefix starts every problem type URI; the slugs are listed in
// api/openapi.yaml.
const ProblemTypePrefix = "urn:msisync:problem:"

// Problem slugs.
const (
	probMalformed        = "malformed-json"
	probInvalid          = "invalid-event"
	probUnauthorized     = "unauthorized"
	probForbiddenOrg     = "organization-not-allowed"
	probMethod           = "method-not-allowed"
	probNotFound         = "not-found"
	probTooLarge         = "body-too-large"
	probMediaType        = "unsupported-media-type"
	probQueueUnavailable = "queue-unavailable"
	probNotReady         = "not-ready"
	probBadRequest       = "bad-request"
	probInternal         = "internal"
)

// retryAfterSeconds is what we tell Dataverse (and others) to wait after a
// 503; Dataverse re-sends once on 502/503/504 whatever the header says.
const retryAfterSeconds = 5

func writeProblem(w http.ResponseWriter, status int, slug, title, detail string, issues ...FieldIssue) {
	p := Problem{Type: ProblemTypePrefix + slug, Title: title, Status: status, Detail: detail, Errors: issues}
	b, err := json.Marshal(p)
	if err != nil { // cannot happen with these field types
		http.Error(w, title, status)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	if status == http.StatusServiceUnavailable {
		h.Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// Header values shared by every response (the server only reads them).
var (
	hdrJSON    = []string{"application/json"}
	hdrNoStore = []string{"no-store"}
)

// writeQueued writes Accepted{Status: "queued", ID: id, Reduced: reduced}
// as writeJSON would, without reflection: it is the answer to nearly every
// webhook. Ids are hex digests; any other id goes through writeJSON.
func writeQueued(w http.ResponseWriter, id string, reduced bool) {
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_') {
			writeJSON(w, http.StatusAccepted, Accepted{Status: "queued", ID: id, Reduced: reduced})
			return
		}
	}
	var buf [128]byte
	b := append(buf[:0], `{"status":"queued"`...)
	if id != "" {
		b = append(append(append(b, `,"id":"`...), id...), '"')
	}
	if reduced {
		b = append(b, `,"reduced":true`...)
	}
	b = append(b, '}')
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	h["Cache-Control"] = hdrNoStore
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, probInternal, "Internal error", "could not encode the response")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
