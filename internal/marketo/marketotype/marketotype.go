// Package marketotype holds the vocabulary of Marketo's Lead Database API
// that msisync speaks: the objects, records, per-record results and the
// one table of error classes. The REST client (internal/marketo), its
// simulator and the syncer all name these types from here, the way River's
// rivertype lets the queue and its drivers share a job row, so the syncer
// depends on Marketo's vocabulary and not on the HTTP client.
package marketotype

import (
	"errors"
	"fmt"
	"strconv"
)

// Object is a Lead Database object: its path segment under /rest/v1/.
type Object string

// The objects an MSI non-native sync writes.
const (
	SalesPersons  Object = "salespersons"
	Companies     Object = "companies"
	Leads         Object = "leads"
	Opportunities Object = "opportunities"
	Roles         Object = "opportunities/roles"
)

// Valid reports whether o is one of the objects msisync writes.
func (o Object) Valid() bool {
	switch o {
	case SalesPersons, Companies, Leads, Opportunities, Roles:
		return true
	}
	return false
}

// Record is one Marketo record as JSON fields. Numbers decoded from
// responses are json.Number; marketo.Int64 and marketo.String read them.
type Record = map[string]any

// Class says what a caller should do about a Marketo error code.
type Class int

const (
	// ClassNone: no error (a record that was created, updated or deleted).
	ClassNone Class = iota
	// ClassReauth: the token is invalid or expired (601, 602); the client
	// renews it and retries once by itself.
	ClassReauth
	// ClassThrottled: rate or concurrency limit (606, 615); wait and retry.
	ClassThrottled
	// ClassTransient: 502, 604, 608, 611, 614, 713, HTTP 5xx, network
	// errors and timeouts; retry with backoff.
	ClassTransient
	// ClassQuota: the daily quota is used up (607); stop calling until the
	// reset at midnight US Central and keep messages queued.
	ClassQuota
	// ClassConfig: the request or the instance is misconfigured (603, 605,
	// 609, 610, 612, 613, 616, 703, 1011, 1018, bad credentials); stop and
	// report, do not burn the queue.
	ClassConfig
	// ClassPermanent: this record or request cannot succeed as sent (1001,
	// 1003, 1004, 1005, 1006, 1007, 1017, 1021, 1036, 413, 414, …);
	// dead-letter it with the code and message.
	ClassPermanent
	// ClassDependency: a record it refers to is missing (718, 1013); sync
	// the dependency, then requeue. On delete, 1013 means already gone.
	ClassDependency
)

var classNames = [...]string{"none", "reauth", "throttled", "transient", "quota", "config", "permanent", "dependency"}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

// Retryable reports whether the same call may succeed if repeated later.
func (c Class) Retryable() bool {
	return c == ClassReauth || c == ClassThrottled || c == ClassTransient || c == ClassQuota
}

// codeClasses is the one table of Marketo codes (response-level, record
// level and HTTP statuses as decimal strings).
var codeClasses = map[string]Class{
	"601": ClassReauth, "602": ClassReauth,
	"606": ClassThrottled, "615": ClassThrottled,
	"502": ClassTransient, "500": ClassTransient, "503": ClassTransient, "504": ClassTransient,
	"604": ClassTransient, "608": ClassTransient, "611": ClassTransient, "713": ClassTransient,
	// 614 "Invalid Subscription … usually indicates temporary inaccessibility".
	"614": ClassTransient,
	"607": ClassQuota,
	"401": ClassConfig, "403": ClassConfig,
	"603": ClassConfig, "605": ClassConfig, "609": ClassConfig, "610": ClassConfig,
	"612": ClassConfig, "613": ClassConfig, "616": ClassConfig, "703": ClassConfig,
	"1011": ClassConfig, "1018": ClassConfig,
	"718": ClassDependency, "1013": ClassDependency,
	"413": ClassPermanent, "414": ClassPermanent,
}

// ClassOf classifies a Marketo error or reason code. Unknown codes are
// permanent: Marketo documents no other code as retryable.
func ClassOf(code string) Class {
	if c, ok := codeClasses[code]; ok {
		return c
	}
	if n, err := strconv.Atoi(code); err == nil && n >= 500 && n < 600 {
		return ClassTransient // any HTTP 5xx
	}
	return ClassPermanent
}

// Error is a failed Marketo call: a response-level error code, an HTTP
// status, or a network failure (Code empty, Err set).
type Error struct {
	Op         string // e.g. "sync companies"
	Code       string // Marketo code, or the HTTP status for HTTP-level errors
	Message    string
	HTTPStatus int
	Err        error // underlying network or decoding error, if any
}

func (e *Error) Error() string {
	switch {
	case e.Err != nil:
		return fmt.Sprintf("marketo: %s: %v", e.Op, e.Err)
	case e.Code != "" && e.Message != "":
		return fmt.Sprintf("marketo: %s: %s %s", e.Op, e.Code, e.Message)
	case e.HTTPStatus != 0:
		return fmt.Sprintf("marketo: %s: HTTP %d", e.Op, e.HTTPStatus)
	}
	return fmt.Sprintf("marketo: %s: code %s", e.Op, e.Code)
}

func (e *Error) Unwrap() error { return e.Err }

// Class classifies the error; network errors and timeouts are transient.
func (e *Error) Class() Class {
	if e.Code == "" {
		if e.Err != nil {
			return ClassTransient
		}
		return ClassPermanent
	}
	return ClassOf(e.Code)
}

// ErrQuotaExhausted is wrapped by every error returned while the daily
// quota is used up (Marketo's 607 or the client's own DailyQuota budget).
var ErrQuotaExhausted = errors.New("daily API quota exhausted")

// ClassOfError classifies any error a Client method returned.
func ClassOfError(err error) Class {
	if err == nil {
		return ClassNone
	}
	var classed interface{ Class() Class }
	if errors.As(err, &classed) {
		return classed.Class()
	}
	return ClassTransient // context and network failures
}

// Reason explains a skipped record.
type Reason struct {
	Code    string
	Message string
}

// Result is the outcome of one input record of Sync or Delete.
type Result struct {
	Seq         int    // index of the input record this result belongs to
	ID          int64  // Marketo id (sales persons, companies, leads); 0 if none
	MarketoGUID string // opportunities and roles
	Status      string // created, updated, deleted or skipped
	Reasons     []Reason
}

// Class classifies a skipped record by its first reason; ClassNone for a
// record that succeeded.
func (r Result) Class() Class {
	if r.Status != "skipped" {
		return ClassNone
	}
	if len(r.Reasons) == 0 {
		return ClassPermanent
	}
	return ClassOf(r.Reasons[0].Code)
}

// Err describes a skipped record as an error naming the code, or nil.
func (r Result) Err() error {
	if r.Status != "skipped" {
		return nil
	}
	if len(r.Reasons) == 0 {
		return errors.New("marketo: record skipped without a reason")
	}
	return fmt.Errorf("marketo: record skipped: %s %s", r.Reasons[0].Code, r.Reasons[0].Message)
}

// SyncRequest is the body of a Sync call. Action: createOnly, updateOnly,
// createOrUpdate (default) or, for leads, createDuplicate. DedupeBy
// (non-lead objects): dedupeFields (default) or idField. LookupField
// (leads): default email.
type SyncRequest struct {
	Action      string
	DedupeBy    string
	LookupField string
	Input       []Record
}

// Description is an object's schema as Describe reports it.
type Description struct {
	Name             string
	IDField          string
	DedupeFields     []string
	SearchableFields [][]string
	Fields           []FieldInfo
}

// FieldInfo describes one field.
type FieldInfo struct {
	Name        string `json:"name"`
	DisplayName string `json:"displayName"`
	DataType    string `json:"dataType"`
	Length      int    `json:"length"`
	Updateable  bool   `json:"updateable"`
}

// Field returns the named field.
func (d *Description) Field(name string) (FieldInfo, bool) {
	for _, f := range d.Fields {
		if f.Name == name {
			return f, true
		}
	}
	return FieldInfo{}, false
}

// Searchable reports whether name alone is a searchable key.
func (d *Description) Searchable(name string) bool {
	for _, s := range d.SearchableFields {
		if len(s) == 1 && s[0] == name {
			return true
		}
	}
	return false
}
