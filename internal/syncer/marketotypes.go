package syncer

// Temporary mirror of internal/marketo's types until that package lands;
// these become aliases of the marketo types.

import (
	"errors"
	"fmt"
)

type (
	Object string
	Record = map[string]any
	Class  int
)

type Reason struct{ Code, Message string }

type Result struct {
	Seq         int
	ID          int64
	MarketoGUID string
	Status      string
	Reasons     []Reason
}

type SyncRequest struct {
	Action, DedupeBy, LookupField string
	Input                         []Record
}

const (
	SalesPersons  Object = "salespersons"
	Companies     Object = "companies"
	Leads         Object = "leads"
	Opportunities Object = "opportunities"
	Roles         Object = "roles"
)

const (
	ClassPermanent Class = iota
	ClassReauth
	ClassThrottled
	ClassTransient
	ClassQuota
	ClassConfig
	ClassDependency
)

var ErrQuotaExhausted = errors.New("marketo: daily quota exhausted")

type MarketoError struct {
	Op, Code, Message string
	HTTPStatus        int
}

func (e *MarketoError) Error() string {
	return fmt.Sprintf("marketo: %s: %s %s", e.Op, e.Code, e.Message)
}
func (e *MarketoError) Class() Class { return ClassOf(e.Code) }

func ClassOf(code string) Class {
	switch code {
	case "601", "602":
		return ClassReauth
	case "606", "615":
		return ClassThrottled
	case "502", "604", "608", "611", "713", "614":
		return ClassTransient
	case "607":
		return ClassQuota
	case "603", "1011", "1018":
		return ClassConfig
	case "718", "1013":
		return ClassDependency
	}
	return ClassPermanent
}
