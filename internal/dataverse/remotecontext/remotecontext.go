// Package remotecontext turns what Dataverse sends about a change into an
// event.Event: the RemoteExecutionContext JSON a webhook step posts (Parse),
// the same JSON arriving through Dataverse's native Service Bus integration
// (ParseServiceBus), and the simple envelope custom plug-ins and Power
// Automate flows post (ParseCustom).
//
// Dataverse writes WCF-style JSON: dictionaries are [{"key":…,"value":…}]
// arrays, polymorphic values carry a "__type" tag, dates are "\/Date(ms)\/".
// A valid body of the usual shape is read straight off a flat index of the
// JSON (parseDirect, tape.go: one validating pass, ~30 allocations); anything
// else is decoded into a generic tree (fastDecode, falling back to
// encoding/json) and interpreted, which is also what names every field
// error. Either way escaping (`\/` or `/`) and field order never matter,
// unknown fields are ignored and every field is optional.
package remotecontext

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/msisync/msisync/internal/event"
)

// Webhook request headers Dataverse sets (use-webhooks.md).
const (
	HeaderOrganization  = "x-ms-dynamics-organization"
	HeaderEntityName    = "x-ms-dynamics-entity-name"
	HeaderRequestName   = "x-ms-dynamics-request-name"
	HeaderCorrelationID = "x-ms-correlation-request-id"
	HeaderRequestID     = "x-request-id"
	HeaderSizeExceeded  = "x-ms-dynamics-msg-size-exceeded"
)

// Application properties of Dataverse's native Service Bus messages.
const (
	ClaimsPrefix          = "http://schemas.microsoft.com/xrm/2011/Claims/"
	PropOrganization      = ClaimsPrefix + "Organization"
	PropUser              = ClaimsPrefix + "User"
	PropInitiatingUser    = ClaimsPrefix + "InitiatingUser"
	PropEntityLogicalName = ClaimsPrefix + "EntityLogicalName"
	PropRequestName       = ClaimsPrefix + "RequestName"
	PropMaxSizeExceeded   = "MessageMaxSizeExceeded"
	zeroGUID              = "00000000-0000-0000-0000-000000000000"
)

// Headers are the request headers a webhook delivery carries besides the body.
type Headers struct {
	Organization  string // x-ms-dynamics-organization (the environment's host name)
	EntityName    string // x-ms-dynamics-entity-name
	RequestName   string // x-ms-dynamics-request-name
	CorrelationID string // x-ms-correlation-request-id
	RequestID     string // x-request-id (older deliveries only)
	SizeExceeded  bool   // x-ms-dynamics-msg-size-exceeded present
}

// HeadersFrom reads the Dataverse headers of a webhook request.
func HeadersFrom(h http.Header) Headers {
	_, exceeded := h[http.CanonicalHeaderKey(HeaderSizeExceeded)]
	if exceeded {
		exceeded = !isFalse(h.Get(HeaderSizeExceeded))
	}
	return Headers{
		Organization:  strings.TrimSpace(h.Get(HeaderOrganization)),
		EntityName:    strings.TrimSpace(h.Get(HeaderEntityName)),
		RequestName:   strings.TrimSpace(h.Get(HeaderRequestName)),
		CorrelationID: strings.TrimSpace(h.Get(HeaderCorrelationID)),
		RequestID:     strings.TrimSpace(h.Get(HeaderRequestID)),
		SizeExceeded:  exceeded,
	}
}

// isFalse reports whether a flag value explicitly says "no"; the mere
// presence of the size header is what Dataverse documents.
func isFalse(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "false", "0", "no":
		return true
	}
	return false
}

// SyntaxError is returned for a body that is not well-formed JSON (HTTP 400).
// Well-formed bodies with missing or invalid fields get an *event.FieldError
// (HTTP 422) instead; tell them apart with errors.As.
type SyntaxError struct {
	Offset int64 // byte offset of the error, when known
	Err    error
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("malformed JSON at byte %d: %v", e.Offset, e.Err)
}

func (e *SyntaxError) Unwrap() error { return e.Err }

// decode parses body into a generic tree (numbers kept as json.Number so
// decimals and 64-bit values survive), rejecting trailing data.
func decode(body []byte) (any, error) {
	if v, ok := fastDecode(body); ok {
		return v, nil
	}
	// fastDecode declines repeated keys, among other things. encoding/json
	// would keep the last of them, so a second "MessageName":"Delete" would
	// turn an Update into a Delete: a repeated top-level key is refused.
	if key, ok := repeatedTopLevelKey(body); ok {
		return nil, &SyntaxError{Err: fmt.Errorf("the key %q appears more than once in the top-level object", key)}
	}
	v, err := decodeStd(body)
	if err != nil {
		return nil, err
	}
	return toObject(v), nil
}

// decodeStd is decode with encoding/json only: the reference fastDecode
// must agree with, and the path for everything fastDecode declines.
func decodeStd(body []byte) (any, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, &SyntaxError{Err: errors.New("empty body")}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, syntaxError(dec, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			err = errors.New("data after the top-level value")
		}
		return nil, syntaxError(dec, err)
	}
	return v, nil
}

func syntaxError(dec *json.Decoder, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &SyntaxError{Offset: se.Offset, Err: err}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return &SyntaxError{Offset: dec.InputOffset(), Err: errors.New("unexpected end of JSON input")}
	}
	return &SyntaxError{Offset: dec.InputOffset(), Err: err}
}

// fieldErrs collects field errors so a payload reports everything wrong with
// it at once.
type fieldErrs []error

func (fe *fieldErrs) add(field, format string, args ...any) {
	*fe = append(*fe, &event.FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
}

func (fe fieldErrs) err() error {
	switch len(fe) {
	case 0:
		return nil
	case 1:
		return fe[0]
	}
	return errors.Join(fe...)
}

// FieldErrors returns every *event.FieldError in err (which may join several).
func FieldErrors(err error) []*event.FieldError {
	var out []*event.FieldError
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if fe, ok := e.(*event.FieldError); ok {
			out = append(out, fe)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

// guid normalises an optional id field: "" when absent or null, an error
// when present but not a GUID.
func guid(v any, field string, errs *fieldErrs) string {
	switch s := v.(type) {
	case nil:
		return ""
	case string:
		if strings.TrimSpace(s) == "" {
			return ""
		}
		if !event.IsGUID(s) {
			errs.add(field, "%q is not a GUID", truncate(s))
			return ""
		}
		return event.NormalizeID(s)
	default:
		errs.add(field, "must be a GUID string, got %s", jsonKind(v))
		return ""
	}
}

// str returns a string field, or "" when absent, null or not a string.
func str(v any) string {
	s, _ := v.(string)
	return s
}

func integer(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		if i, err := n.Int64(); err == nil {
			return i, true
		}
	case string:
		if i, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64); err == nil {
			return i, true
		}
	}
	return 0, false
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any, jsonObject:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// truncate keeps error messages short when a payload carries huge values.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// repeatedTopLevelKey reports the first key that appears twice among the
// members of body's top-level object (false for anything else, including
// malformed JSON, which decodeStd reports).
func repeatedTopLevelKey(body []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", false
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", false
		}
		key, ok := t.(string)
		if !ok {
			return "", false
		}
		if seen[key] {
			return key, true
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return "", false
		}
	}
	return "", false
}
