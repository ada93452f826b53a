package marketo

import (
	"errors"
	"fmt"
	"strconv"
	"time"
	_ "time/tzdata" // the daily quota resets at midnight America/Chicago
)

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

// QuotaError says when calls may resume.
type QuotaError struct {
	Op      string
	ResetAt time.Time // next midnight America/Chicago
	Local   bool      // true: the client's own budget, not a 607 from Marketo
	// Purpose is set when the budget left for this purpose is spent while
	// others (sync writes last) may still call.
	Purpose Purpose
}

func (e *QuotaError) Error() string {
	src := "Marketo returned 607"
	if e.Local {
		src = "client DailyQuota budget used"
		if e.Purpose != "" {
			src = "client DailyQuota budget for " + string(e.Purpose) + " calls used"
		}
	}
	return fmt.Sprintf("marketo: %s: %v (%s); calls resume at %s", e.Op, ErrQuotaExhausted, src,
		e.ResetAt.Format(time.RFC3339))
}

func (e *QuotaError) Unwrap() error { return ErrQuotaExhausted }

// Class is ClassQuota.
func (e *QuotaError) Class() Class { return ClassQuota }

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

var chicago = func() *time.Location {
	loc, err := time.LoadLocation("America/Chicago")
	if err != nil {
		return time.FixedZone("CST", -6*3600)
	}
	return loc
}()

// NextQuotaReset returns the first midnight America/Chicago after t, when
// Marketo resets the daily quota.
func NextQuotaReset(t time.Time) time.Time {
	c := t.In(chicago)
	return time.Date(c.Year(), c.Month(), c.Day()+1, 0, 0, 0, 0, chicago)
}

// quotaDay names the Chicago day of t.
func quotaDay(t time.Time) string { return t.In(chicago).Format("2006-01-02") }
